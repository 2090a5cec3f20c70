#!/usr/bin/env bash
# Runs the benchmarks (test/bench/bench.py) in a throw-away cluster that
# preloads tiktok_capi.  Usage: run.sh [--tiny]
set -u
cd "$(dirname "$0")"
PGVER=$(pg_config --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
# never TikTok: until a part points api_url at its mock, the discard port
exec pg_virtualenv -t -v "$PGVER" -o shared_preload_libraries=tiktok_capi \
	-o "tiktok_capi.api_url=http://127.0.0.1:9/open_api/v1.3/event/track/" \
	python3 bench.py "$@" 2>&1 | grep -v -e '^Creating new PostgreSQL cluster' -e '^Dropping cluster'
