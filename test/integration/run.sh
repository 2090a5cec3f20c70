#!/usr/bin/env bash
# Runs each integration test (test/integration/<name>.py, named by what it
# proves) in its own throw-away cluster with tiktok_capi preloaded, and
# prints its TAP.  Usage: run.sh [name...]  (default: all)
# Only *.py here are tests, harness.py aside: modules the tests import live
# in subfolders (corpora/).
set -u
cd "$(dirname "$0")"
PGVER=${PGVER:-15}
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=($(ls *.py | grep -v '^harness' | sed 's/\.py$//'))
status=0
for t in "${tests[@]}"; do
	echo "# integration: $t"
	# never TikTok: until the test points api_url at its mock, the discard port
	pg_virtualenv -t -v "$PGVER" -o shared_preload_libraries=tiktok_capi \
		-o "tiktok_capi.api_url=http://127.0.0.1:9/open_api/v1.3/event/track/" \
		python3 "$t.py" 2>&1 | grep -v -e '^Creating new PostgreSQL cluster' -e '^Dropping cluster'
	[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
exit $status
