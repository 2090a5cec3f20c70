#!/usr/bin/env bash
# Runs each libFuzzer harness (test/fuzz/*_fuzz, built by `make fuzzers`)
# for SECONDS (default 60) from its seed corpus in test/fuzz/corpus/NAME,
# in a scratch copy so the repository's corpus stays as committed.  Prints
# TAP: one check per harness, with the executions and coverage reached.
set -u
cd "$(dirname "$0")"
seconds=${1:-60}
harnesses=(normalize policy)
echo "1..${#harnesses[@]}"
n=0
for h in "${harnesses[@]}"; do
	n=$((n + 1))
	work=$(mktemp -d)
	cp corpus/"$h"/* "$work"/
	log=$work.log
	if ./"$h"_fuzz -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
		-artifact_prefix="$work/" "$work" > "$log" 2>&1; then
		echo "ok $n - $h: no crash, leak or undefined behaviour in $seconds s"
	else
		echo "not ok $n - $h: see the reproducer below"
		grep -E "ERROR|SUMMARY|runtime error|Test unit written" "$log" | head -5 | sed 's/^/# /'
	fi
	execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | awk '{print $2}')
	cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}')
	echo "# $h: ${execs:-0} executions, ${cov:-0} coverage points, corpus $(ls "$work" | wc -l) inputs"
	rm -rf "$work" "$log"
done
