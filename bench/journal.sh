#!/usr/bin/env bash
# Journal cost: the engine's unlimited-throughput run with the journal on
# (fsync batches) and off (hidden --no-journal), alternated, in one script.
#   PAIRS=8 ROWS=100000 bench/journal.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${PAIRS:-8}
ROWS=${ROWS:-100000}
PORT=${PORT:-18890}
cargo build --release --quiet
BIN=$PWD/target/release/connect-provision
WORK=$(mktemp -d)
"$BIN" sandbox --listen "127.0.0.1:$PORT" >/dev/null 2>&1 &
SB=$!
trap 'kill $SB 2>/dev/null || true; rm -rf "$WORK"' EXIT
sleep 0.5
export CONNECT_CLIENT_ID=sandbox-client CONNECT_CLIENT_SECRET=sandbox-secret
on=() off=()
for i in $(seq 1 "$PAIRS"); do
  order="on off"; [ $((i % 2)) -eq 0 ] && order="off on"
  for mode in $order; do
    python3 bench/gen_customers.py "$ROWS" --id-prefix "j${mode}${i}x" --out "$WORK/in.csv"
    extra=(); [ "$mode" = off ] && extra=(--no-journal)
    "$BIN" run "$WORK/in.csv" --base-url "http://127.0.0.1:$PORT" --rate 1000000 --concurrency 50 \
      --out "$WORK/out-$mode-$i" --no-progress -q "${extra[@]}" >/dev/null
    rps=$(python3 -c "import json; print(json.load(open('$WORK/out-$mode-$i/summary.json'))['rows_per_second'])")
    if [ "$mode" = on ]; then on+=("$rps"); else off+=("$rps"); fi
    echo "pair $i $mode: $rps rows/s" >&2
    rm -rf "$WORK/out-$mode-$i"
  done
done
python3 - "${on[*]}" "${off[*]}" <<'PY'
import statistics, sys
on = [float(x) for x in sys.argv[1].split()]; off = [float(x) for x in sys.argv[2].split()]
mon, moff = statistics.median(on), statistics.median(off)
ratios = sorted(a / b for a, b in zip(on, off))
print(f"| journal | runs | median rows/s |\n|---|---|---:|")
print(f"| on | {' / '.join(f'{x:.0f}' for x in on)} | {mon:.0f} |")
print(f"| off (--no-journal) | {' / '.join(f'{x:.0f}' for x in off)} | {moff:.0f} |")
print(f"\nratio of medians on/off: {mon/moff:.3f}; median of paired ratios: {statistics.median(ratios):.3f}")
PY
