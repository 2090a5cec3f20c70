#!/usr/bin/env bash
# The reliability scorecard (make chaos): runs test/chaos/chaos.py in a
# throw-away cluster that preloads tiktok_capi, and prints its TAP, its
# scorecard and the wall time.  Usage: run.sh [--short] [--seed=N]
set -u
cd "$(dirname "$0")"
PGVER=${PGVER:-$(pg_config --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')}
start=$SECONDS
# never TikTok: until chaos.py points api_url at its mock, the discard port
pg_virtualenv -t -v "$PGVER" -o shared_preload_libraries=tiktok_capi \
	-o "tiktok_capi.api_url=http://127.0.0.1:9/open_api/v1.3/event/track/" \
	python3 chaos.py "$@" 2>&1 | grep -v -e '^Creating new PostgreSQL cluster' -e '^Dropping cluster'
status=${PIPESTATUS[0]}
echo "# chaos: wall time $((SECONDS - start)) s, cluster creation and removal included"
exit "$status"
