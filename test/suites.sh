#!/usr/bin/env bash
# The suites, run inside pg_virtualenv (PGHOST, PGPORT, PGUSER set).  Each
# suite adds its passed and failed checks to the totals; a suite that
# cannot run at all counts as one failure.
set -u
cd "$(dirname "$0")/.."

passed=0
failed=0
log=$(mktemp -d)

# Add TAP output in file $2 to the totals (suite $1): every planned check
# that did not print "ok" (a "not ok", or one that never ran) is a failure
count_tap() {
	local ok planned notok
	ok=$(grep -cE '^[[:space:]]*ok [0-9]+' "$2")
	planned=$(grep -oE '^[[:space:]]*1\.\.[0-9]+' "$2" | awk -F'[.]+' '{s += $2} END {print s + 0}')
	notok=$((planned - ok))
	if [ "$planned" -eq 0 ] || [ "$notok" -lt 0 ]; then
		notok=$((notok > 0 ? notok : 1))
	fi
	echo "== $1: $ok passed, $notok failed"
	passed=$((passed + ok))
	failed=$((failed + notok))
	[ "$notok" -eq 0 ] || grep -vE '^[[:space:]]*ok [0-9]+' "$2" | head -50
}

# Unit tests of the pure-C normalization code: no server involved
./test/unit/normalize_test > "$log/unit.tap" 2>&1
count_tap unit "$log/unit.tap"

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

rm -rf "$log"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
