#!/usr/bin/env bash
# The suites that share one cluster, run inside pg_virtualenv (PGHOST,
# PGPORT, PGUSER set).  Each suite adds its passed and failed checks to the
# totals; a suite that cannot run at all counts as one failure.
set -u
cd "$(dirname "$0")/.."

passed=0
failed=0
log=$(mktemp -d)
. test/tap.sh

# Unit tests of the pure-C parts (normalization, answer policy): no server
./test/unit/normalize_test > "$log/unit.tap" 2>&1
count_tap "unit normalize" "$log/unit.tap"
./test/unit/policy_test > "$log/policy.tap" 2>&1
count_tap "unit policy" "$log/policy.tap"

# The same unit tests under valgrind: no invalid access, no leak
{
	echo "1..2"
	n=0
	for t in normalize policy; do
		n=$((n + 1))
		if valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
			./test/unit/${t}_test > /dev/null 2> "$log/valgrind-$t.txt"; then
			echo "ok $n - $t unit test is clean under valgrind"
		else
			echo "not ok $n - $t unit test under valgrind"
			head -20 "$log/valgrind-$t.txt" | sed 's/^/# /'
		fi
	done
} > "$log/valgrind.tap"
count_tap "unit under valgrind" "$log/valgrind.tap"

# pg_regress: function outputs, including error messages
make -s installcheck > "$log/regress.out" 2>&1
ok=$(grep -cE '\.\.\. ok' "$log/regress.out")
notok=$(grep -cE '\.\.\. FAILED|\.\.\. failed' "$log/regress.out")
[ $((ok + notok)) -gt 0 ] || notok=1
echo "== regress: $ok passed, $notok failed"
passed=$((passed + ok))
failed=$((failed + notok))
if [ "$notok" -ne 0 ]; then
	cat "$log/regress.out"
	[ -f regression.diffs ] && head -200 regression.diffs
fi

# pgTAP: the schema's objects and privileges
createdb tap_tests
psql -X -q -d tap_tests -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION tiktok_capi'
pg_prove -v -d tap_tests test/pgtap/*.sql > "$log/pgtap.tap" 2>&1
count_tap pgtap "$log/pgtap.tap"

# The mock Events API's own checks: the fixture the integration tests trust
python3 test/mock/test_events_api.py > "$log/mock.tap" 2>&1
count_tap mock "$log/mock.tap"

rm -rf "$log"
# the caller (run-tests.sh) adds the integration tests to these totals
echo "$passed $failed" > "${TT_TOTALS:-/dev/null}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
