#!/usr/bin/env bash
# Runs every test suite of tiktok_capi and ends with one line:
# "N passed, N failed".  Expects the extension built and installed (make
# test does both).
#  - test/suites.sh: unit, pg_regress, pgTAP and the mock's own checks, in
#    one throw-away cluster that preloads the extension;
#  - test/integration: each test (every *.py there but harness.py; the
#    modules the tests import live in subfolders) in a fresh cluster of
#    its own, against the mock Events API;
#  - test/chaos, the reliability scorecard, short (make chaos: full size);
#  - test/fuzz for a few seconds per harness (make fuzz runs them longer);
#  - test/bench at toy sizes (make bench runs it at full size);
#  - test/package, last: the Debian package built, installed with apt, used
#    in a cluster of its own and purged; it installs the tree's build again.
set -u
cd "$(dirname "$0")/.."

PGVER=$(pg_config --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
export PGVER
log=$(mktemp -d)
export TT_TOTALS=$log/totals

# Test clusters never point at TikTok: until a test sets api_url to its mock,
# the worker would post to the discard port of 127.0.0.1.
pg_virtualenv -t -v "$PGVER" -o shared_preload_libraries=tiktok_capi \
	-o "tiktok_capi.api_url=http://127.0.0.1:9/open_api/v1.3/event/track/" bash test/suites.sh
read -r passed failed < "$TT_TOTALS" || { passed=0; failed=1; }

. test/tap.sh
for t in test/integration/*.py; do
	name=$(basename "$t" .py)
	[ "$name" = harness ] && continue
	bash test/integration/run.sh "$name" > "$log/$name.tap" 2>&1
	grep '^# ' "$log/$name.tap" | grep -v '^# integration' | sed "s/^/  /"
	count_tap "integration $name" "$log/$name.tap"
done

# The reliability scorecard, short: faults, kill -9, an immediate shutdown
# and a held snapshot under load (make chaos: the full size)
bash test/chaos/run.sh --short > "$log/chaos.tap" 2>&1
grep '^# ' "$log/chaos.tap" | sed "s/^/  /"
count_tap "chaos (short)" "$log/chaos.tap"

# The fuzz harnesses of the pure-C parts, a few seconds each (make fuzz: longer)
bash test/fuzz/run.sh 5 > "$log/fuzz.tap" 2>&1
count_tap "fuzz (5 s each)" "$log/fuzz.tap"
grep '^# ' "$log/fuzz.tap" | sed "s/^/  /"

# The benchmarks at toy sizes: they keep working; no timing is asserted
bash test/bench/run.sh --tiny > "$log/bench.tap" 2>&1
count_tap "bench (tiny)" "$log/bench.tap"

# The Debian package, last: it replaces the installed extension with the
# package's until it purges it, then runs make install again (about 30 s)
bash test/package/run.sh > "$log/package.tap" 2>&1
grep '^# ' "$log/package.tap" | sed "s/^/  /"
count_tap "debian package" "$log/package.tap"

rm -rf "$log"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
