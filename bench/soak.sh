#!/usr/bin/env bash
# Soak: ROWS rows (default 1M) at --rate RATE (default 2000) against a
# faulty sandbox (2 % 500/503, 1 % connections reset, tokens lasting 30 s),
# a kill -9 of the run once half the rows are recorded, then --resume to
# the end. Prints the peak RSS (VmHWM) at 10 %, 50 % and 100 % of the rows
# and checks that
#   - RSS grows after the first 10 % by no more than the duplicate filter's
#     share (BYTES_PER_ID, default 24, per row read since, plus SLACK_MIB,
#     default 16, for the allocator and hash-table doubling);
#   - every row appears exactly once in results.csv;
#   - the sandbox created no user twice (`duplicate_creations` in its stats)
#     and holds one user per created/exists row.
#
#   bench/soak.sh                          # 1M rows, about 10 minutes
#   ROWS=100000 RATE=2000 bench/soak.sh    # a quick check
#   NO_BUILD=1 bench/soak.sh               # with the release binary as built
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}
RATE=${RATE:-2000}
PORT=${PORT:-18890}
BYTES_PER_ID=${BYTES_PER_ID:-24}
SLACK_MIB=${SLACK_MIB:-16}
DATA=bench/data/soak
OUT=bench/out/soak
mkdir -p "$DATA" bench/out
[ "${NO_BUILD:-}" = 1 ] || nice -n 10 cargo build --release --quiet
BIN=$PWD/target/release/connect-provision

input="$DATA/customers_$ROWS.csv"
if [ ! -f "$input" ]; then
  python3 bench/gen_customers.py "$ROWS" --out "$input" --seed 21
fi
rm -rf "$OUT"

"$BIN" sandbox --listen "127.0.0.1:$PORT" --fail-rate 0.02 --reset-rate 0.01 \
  --token-ttl 30s --seed 21 -q >"$DATA/sandbox.log" 2>&1 &
SANDBOX=$!
trap 'kill "$SANDBOX" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/_sandbox/stats" && break
  sleep 0.1
done

export CONNECT_CLIENT_ID=sandbox-client CONNECT_CLIENT_SECRET=sandbox-secret
# `nice` execs the tool, so $! is the tool's own PID (its /proc status).
args=(run "$input" --base-url "http://127.0.0.1:$PORT" --out "$OUT" --rate "$RATE" --no-progress -q)
# The data lines of results.csv so far (header excluded).
recorded() {
  if [ -f "$OUT/results.csv" ]; then
    echo $(($(wc -l <"$OUT/results.csv") - 1))
  else
    echo 0
  fi
}
# VmHWM and VmRSS of a process, in KiB.
mem() { awk '/^VmHWM/{h=$2} /^VmRSS/{r=$2} END{print h+0, r+0}' "/proc/$1/status" 2>/dev/null || echo "0 0"; }
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }

# Part 1: until half the rows are recorded, then kill -9.
: >"$DATA/run.log"
start=$(date +%s)
nice -n 10 "$BIN" "${args[@]}" >>"$DATA/run.log" 2>&1 &
PID=$!
hwm10="" rows10=""
while :; do
  sleep 1
  n=$(recorded)
  read -r hwm rss < <(mem "$PID")
  if [ -z "$hwm10" ] && [ "$n" -ge $((ROWS / 10)) ]; then hwm10=$hwm rows10=$n; fi
  if [ "$n" -ge $((ROWS / 2)) ]; then break; fi
  if ! kill -0 "$PID" 2>/dev/null; then
    echo "the run ended before half the rows (see $DATA/run.log)" >&2
    exit 1
  fi
done
hwm50=$hwm rss50=$rss rows50=$n
kill -9 "$PID"
rc1=0
wait "$PID" || rc1=$?

# Part 2: --resume to the end.
nice -n 10 "$BIN" "${args[@]}" --resume >>"$DATA/run.log" 2>&1 &
PID=$!
hwm100=0 rss100=0 hwm_resume=""
while kill -0 "$PID" 2>/dev/null; do
  read -r h r < <(mem "$PID")
  if [ "$h" -gt 0 ]; then
    hwm100=$h rss100=$r
    if [ -z "$hwm_resume" ] && [ "$(recorded)" -gt "$rows50" ]; then hwm_resume=$h; fi
  fi
  sleep 1
done
rc2=0
wait "$PID" || rc2=$?
elapsed=$(($(date +%s) - start))

# Every row exactly once; the statuses.
check=$(python3 - "$OUT/results.csv" "$ROWS" <<'PY'
import csv, collections, sys
path, rows = sys.argv[1], int(sys.argv[2])
seen = collections.Counter(); status = collections.Counter()
with open(path, newline='') as f:
    r = csv.reader(f); next(r)
    for rec in r:
        seen[int(rec[0])] += 1; status[rec[2]] += 1
twice = sum(1 for c in seen.values() if c > 1)
missing = sum(1 for i in range(1, rows + 1) if i not in seen)
print(len(seen), twice, missing, status['created'] + status['exists'],
      ' '.join(f'{k}={v}' for k, v in sorted(status.items())))
PY
)
read -r distinct twice missing sent_ok statuses <<<"$check"
stats=$(curl -s "http://127.0.0.1:$PORT/_sandbox/stats")
users=$(curl -s "http://127.0.0.1:$PORT/_sandbox/users" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2]))" "$stats" "$1"; }
dup=$(field duplicate_creations)

# Memory: growth after the 10 % mark within the duplicate filter's share.
budget() { echo $(( ($1 * BYTES_PER_ID) / 1024 + SLACK_MIB * 1024 )); }
grow1=$((hwm50 - hwm10))
grow2=$((hwm100 - hwm10))
ok1=$([ "$grow1" -le "$(budget $((rows50 - rows10)))" ] && echo yes || echo NO)
ok2=$([ "$grow2" -le "$(budget $((ROWS - rows10)))" ] && echo yes || echo NO)

echo "soak: $ROWS rows at --rate $RATE; sandbox --fail-rate 0.02 --reset-rate 0.01 --token-ttl 30s; kill -9 at $rows50 rows, then --resume; $elapsed s"
echo
echo "| point | rows recorded | peak RSS (VmHWM) MiB | RSS MiB |"
echo "|---|---:|---:|---:|"
echo "| 10 % (first part) | $rows10 | $(mib "$hwm10") | |"
echo "| 50 % (first part, before kill -9) | $rows50 | $(mib "$hwm50") | $(mib "$rss50") |"
echo "| resumed part, first sample past 50 % | | $(mib "${hwm_resume:-0}") | |"
echo "| 100 % (resumed part, last sample) | $distinct | $(mib "$hwm100") | $(mib "$rss100") |"
echo
echo "RSS growth after 10 %: +$(mib $grow1) MiB to 50 % (within the filter's share: $ok1), +$(mib $grow2) MiB to 100 % (within: $ok2)"
echo "results.csv: $distinct distinct rows of $ROWS, $twice listed twice, $missing missing; $statuses"
echo "sandbox: $users users held, created/exists rows $sent_ok, duplicate_creations $dup"
echo "sandbox stats: $stats"
echo "exit codes: killed part $rc1 (137 = SIGKILL), resumed part $rc2"
if [ "$twice" -ne 0 ] || [ "$missing" -ne 0 ] || [ "$dup" != "0" ] || [ "$users" -ne "$sent_ok" ] \
  || [ "$ok1" != yes ] || [ "$ok2" != yes ]; then
  echo "SOAK FAILED" >&2
  exit 1
fi
echo "soak passed"
