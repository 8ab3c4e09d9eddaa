#!/usr/bin/env bash
# Run every cargo-fuzz target for N minutes, one at a time, and print a
# Markdown table: runs, coverage (cov and ft of libFuzzer's last status
# line) and crashes (files libFuzzer wrote to fuzz/artifacts/TARGET).
#
#   bench/fuzz.sh                  # 10 minutes per target
#   bench/fuzz.sh 1                # 1 minute per target (or MINUTES=1)
#   TARGETS="answer sandbox" bench/fuzz.sh 2
#
# Needs the nightly toolchain and cargo-fuzz (installed if missing). Each
# target starts from its committed corpus, fuzz/corpus/TARGET, read only:
# what the run finds goes to fuzz/work/TARGET (ignored by git), its log to
# fuzz/work/TARGET.log. libFuzzer stops at the first crash; the table then
# says so, and the input is in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-${MINUTES:-10}}
TARGETS=${TARGETS:-"reader results config answer sandbox"}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# The default build: optimised, with debug assertions and overflow checks,
# and AddressSanitizer.
nice -n 10 cargo +nightly fuzz build >/dev/null
mkdir -p fuzz/work

artifacts() { { find "fuzz/artifacts/$1" -type f 2>/dev/null || true; } | wc -l; }

echo "| target | minutes | runs | cov | ft | corpus | crashes |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for t in $TARGETS; do
  work=fuzz/work/$t
  log=fuzz/work/$t.log
  mkdir -p "$work"
  before=$(artifacts "$t")
  rc=0
  nice -n 10 cargo +nightly fuzz run "$t" "$work" "fuzz/corpus/$t" -- \
    -max_total_time=$((MINUTES * 60)) -print_final_stats=1 \
    -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+.*cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")
  crashes=$(($(artifacts "$t") - before))
  note=""
  if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    note=" (exit $rc, see $log)"
  fi
  echo "| $t | $MINUTES | ${runs:-?} | ${cov:-?} | ${ft:-?} | ${corp:-?} | $crashes$note |"
done
