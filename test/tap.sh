# Sourced by the test runners.  count_tap SUITE FILE adds the TAP output in
# FILE to the totals $passed and $failed: every planned check that did not
# print "ok" (a "not ok", or one that never ran) is a failure, and a suite
# that planned nothing counts as one failure.
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
