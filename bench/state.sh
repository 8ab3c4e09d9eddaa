#!/usr/bin/env bash
# Incremental nightly run with --state: a night where 99% of the rows are
# already known. Prints a Markdown table of rows/s and peak RSS.
#
#   bench/state.sh                 # 1M rows (USERS=1000000), 1% new
#   USERS=200000 bench/state.sh    # quicker
#
# Night 1 is not provisioned for real: its results.csv (every row created) is
# written directly and seeded with `state import`, as a one-off import would.
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${USERS:-1000000}
NEW=$((USERS / 100))
PORT=${PORT:-18870}
DATA=bench/data/state
mkdir -p "$DATA"
cargo build --release --quiet
BIN=$PWD/target/release/connect-provision

night1="$DATA/night1_$USERS.csv"
night2="$DATA/night2_$USERS.csv"
if [ ! -f "$night1" ]; then
  python3 bench/gen_customers.py "$USERS" --out "$night1" --seed 3
fi
python3 - "$night1" "$night2" "$NEW" "$DATA/results_$USERS.csv" <<'PY'
import csv, sys
src, dst, new, results = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with open(src, newline='') as f, open(dst, 'w', newline='') as g, open(results, 'w', newline='') as r:
    rd = csv.reader(f); w = csv.writer(g, lineterminator='\n'); rw = csv.writer(r, lineterminator='\n')
    w.writerow(next(rd)); rw.writerow(['row','user_id','status','http_status','attempts','error','duration_ms'])
    for i, row in enumerate(rd, 1):
        w.writerow(row); rw.writerow([i, row[0], 'created', 200, 1, '', 3])
    for j in range(new):
        w.writerow([f'fresh{j:08d}', 'Nina', 'Novak', '', 'en-US'])
PY

state="$DATA/state_$USERS.db"
rm -f "$state" "$state"-wal "$state"-shm "$state".lock
t0=$(date +%s.%N)
"$BIN" state import --state "$state" --results "$DATA/results_$USERS.csv" "$night1" >/dev/null
t1=$(date +%s.%N)
import_s=$(echo "$t1 - $t0" | bc)

"$BIN" sandbox --listen "127.0.0.1:$PORT" >/dev/null 2>&1 &
SB=$!
trap 'kill $SB 2>/dev/null || true' EXIT
sleep 0.5
export CONNECT_CLIENT_ID=sandbox-client CONNECT_CLIENT_SECRET=sandbox-secret

run() { # input out -> "wall rss_kib"
  rm -rf "$2"
  /usr/bin/time -f '%e %M' -o "$2.time" "$BIN" run "$1" --base-url "http://127.0.0.1:$PORT" \
    --rate 100000 --state "$state" --out "$2" --no-progress -q >/dev/null 2>&1 || true
  cat "$2.time"
}
# 100% known (night 1 again): the local speed of known rows.
read -r known_s known_rss < <(run "$night1" "$DATA/out_known")
# 99% known + 1% new: a realistic night.
read -r night_s night_rss < <(run "$night2" "$DATA/out_night2")
sent=$(curl -s "127.0.0.1:$PORT/_sandbox/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["users_requests"])')
size=$(du -m "$state" | cut -f1)

echo
echo "| state users | import s | all known: rows/s | all known: peak RSS MiB | 99% known + 1% new: rows/s | peak RSS MiB | requests sent | state MiB |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
awk -v u="$USERS" -v imp="$import_s" -v ks="$known_s" -v kr="$known_rss" -v ns="$night_s" -v nr="$night_rss" -v n="$NEW" -v sent="$sent" -v sz="$size" 'BEGIN {
  printf "| %d | %.1f | %.0f | %.1f | %.0f | %.1f | %d (new: %d) | %d |\n", u, imp, u/ks, kr/1024, (u+n)/ns, nr/1024, sent, n, sz }'
