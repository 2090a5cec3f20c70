#!/usr/bin/env bash
# Runs every test suite of tiktok_capi against a throw-away cluster that
# preloads the extension, and ends with one line: "N passed, N failed".
# Expects the extension built and installed (make test does both).
set -u
cd "$(dirname "$0")/.."

PGVER=$(pg_config --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
exec pg_virtualenv -t -v "$PGVER" \
	-o shared_preload_libraries=tiktok_capi \
	bash test/suites.sh
