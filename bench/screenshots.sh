#!/usr/bin/env bash
# The two report.html screenshots under docs/: the 200-row sample against the
# embedded sandbox, and 3,000 rows (bench/gen_customers.py, an invalid row
# every 150, a duplicate every 700) with --rate auto against a sandbox limited
# to 40 requests/s with 2 % 5xx faults, 20 ms latency and 30 s tokens.
# Needs Debian's chromium and Python's pillow (pip install pillow).
#
# Usage: bench/screenshots.sh [BIN]      (default target/release/connect-provision)
set -euo pipefail

cd "$(dirname "$0")/.."
BIN="${1:-target/release/connect-provision}"
PORT="${PORT:-18951}"
WORK="$(mktemp -d -t shots.XXXXXX)"
trap 'kill -INT "${SB:-0}" 2>/dev/null || true; rm -rf "${WORK}"' EXIT

"${BIN}" run samples/customers.csv --sandbox --out "${WORK}/sample" --no-progress >/dev/null || true
python3 bench/gen_customers.py 3000 --invalid-every 150 --duplicate-every 700 \
    --id-prefix shot- --out "${WORK}/faults.csv"
"${BIN}" sandbox --listen "127.0.0.1:${PORT}" --rate-limit 40 --fail-rate 0.02 \
    --token-ttl 30s --latency 20ms --seed 7 >"${WORK}/sandbox.log" 2>&1 &
SB=$!
sleep 1
CONNECT_CLIENT_ID=sandbox-client CONNECT_CLIENT_SECRET=sandbox-secret \
    "${BIN}" run "${WORK}/faults.csv" --base-url "http://127.0.0.1:${PORT}" --rate auto \
    --rate-start 10 --rate-max 100 --max-attempts 2 --out "${WORK}/faults" --no-progress \
    >/dev/null || true

for name in sample faults; do
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$(mktemp -d -p "${WORK}")" --hide-scrollbars \
        --force-device-scale-factor=0.6 --window-size=1040,2520 \
        --screenshot="${WORK}/${name}.png" "file://${WORK}/${name}/report.html" 2>/dev/null
    python3 - "${WORK}/${name}.png" "docs/report-${name}.png" <<'PY'
import sys
from PIL import Image
im = Image.open(sys.argv[1]).convert("RGB")
im.quantize(colors=160, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(sys.argv[2], optimize=True)
PY
    echo "docs/report-${name}.png"
done
