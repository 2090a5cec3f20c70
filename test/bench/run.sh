#!/usr/bin/env bash
# Runs the benchmarks (test/bench/bench.py) in a throw-away cluster that
# preloads tiktok_capi.  Usage: run.sh [--tiny]
set -u
cd "$(dirname "$0")"
PGVER=$(pg_config --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
exec pg_virtualenv -t -v "$PGVER" -o shared_preload_libraries=tiktok_capi \
	python3 bench.py "$@" 2>&1 | grep -v -e '^Creating new PostgreSQL cluster' -e '^Dropping cluster'
