#!/usr/bin/env bash
# Incremental nightly run with --state: a night where 99% of the rows are
# already known. Prints a Markdown table of rows/s and peak RSS: medians of
# RUNS rounds (default 1), each round importing the state afresh and running
# three nights: every row known in file order, every row known in random
# order (the same rows shuffled), and 99 % known + 1 % new.
#
#   bench/state.sh                 # 1M rows (USERS=1000000), 1% new
#   USERS=200000 bench/state.sh    # quicker
#   RUNS=3 USERS=10000000 bench/state.sh
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

shuffled="$DATA/night1_${USERS}_random.csv"
if [ ! -f "$shuffled" ]; then
  { head -n 1 "$night1"; tail -n +2 "$night1" | shuf --random-source=<(yes); } >"$shuffled"
fi

RUNS=${RUNS:-1}
state="$DATA/state_$USERS.db"
"$BIN" sandbox --listen "127.0.0.1:$PORT" >/dev/null 2>&1 &
SB=$!
trap 'kill $SB 2>/dev/null || true' EXIT
sleep 0.5
export CONNECT_CLIENT_ID=sandbox-client CONNECT_CLIENT_SECRET=sandbox-secret

run() { # input out -> "wall rss_kib"
  rm -rf "$2"
  /usr/bin/time -f '%e %M' -o "$2.time" "$BIN" run "$1" --base-url "http://127.0.0.1:$PORT" \
    --rate 100000 --state "$state" --out "$2" --no-progress -q >/dev/null 2>&1 || true
  tail -n 1 "$2.time"
}
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
W=$(mktemp -d)
for i in $(seq 1 "$RUNS"); do
  rm -f "$state" "$state"-wal "$state"-shm "$state".lock
  /usr/bin/time -f '%e %M' -o "$W/import.time" \
    "$BIN" state import --state "$state" --results "$DATA/results_$USERS.csv" "$night1" >/dev/null
  read -r s r < <(tail -n 1 "$W/import.time"); echo "$s" >>"$W/import_s"; echo "$r" >>"$W/import_rss"
  # 100% known (night 1 again): the local speed of known rows, in file order...
  read -r s r < <(run "$night1" "$DATA/out_known"); echo "$s" >>"$W/known_s"; echo "$r" >>"$W/known_rss"
  # ...and in random order.
  read -r s r < <(run "$shuffled" "$DATA/out_random"); echo "$s" >>"$W/random_s"; echo "$r" >>"$W/random_rss"
  # 99% known + 1% new: a realistic night.
  read -r s r < <(run "$night2" "$DATA/out_night2"); echo "$s" >>"$W/night_s"; echo "$r" >>"$W/night_rss"
  echo "round $i: import $(tail -n 1 "$W/import_s") s, known $(tail -n 1 "$W/known_s") s, random $(tail -n 1 "$W/random_s") s, night $(tail -n 1 "$W/night_s") s" >&2
done
grep -c ',unchanged,' "$DATA/out_random/results.csv" >"$W/unchanged_random" || true
sent=$(curl -s "127.0.0.1:$PORT/_sandbox/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["users_requests"])')
size=$(du -m "$state" | cut -f1)
m() { median <"$W/$1"; }

echo
echo "medians of $RUNS round(s); rows marked unchanged in the last random-order night: $(cat "$W/unchanged_random")"
echo "| state users | import s | import peak RSS MiB | all known, file order: rows/s | peak RSS MiB | all known, random order: rows/s | peak RSS MiB | 99% known + 1% new: rows/s | peak RSS MiB | requests sent (all rounds) | state MiB |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
awk -v u="$USERS" -v imp="$(m import_s)" -v ir="$(m import_rss)" -v ks="$(m known_s)" -v kr="$(m known_rss)" \
  -v rs="$(m random_s)" -v rr="$(m random_rss)" -v ns="$(m night_s)" -v nr="$(m night_rss)" -v n="$NEW" -v sent="$sent" -v sz="$size" 'BEGIN {
  printf "| %d | %.1f | %.1f | %.0f | %.1f | %.0f | %.1f | %.0f | %.1f | %d (new: %d a round) | %d |\n", u, imp, ir/1024, u/ks, kr/1024, u/rs, rr/1024, (u+n)/ns, nr/1024, sent, n, sz }'
rm -rf "$W"
