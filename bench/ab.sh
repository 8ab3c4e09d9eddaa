#!/usr/bin/env bash
# Before/after comparison of two builds, as alternated pairs on the same
# machine in the same run (the machine is shared and noisy: only ratios
# measured side by side mean anything).
#
# For each of PAIRS rounds, in alternating order (A B, then B A, ...):
#   dry run:    `run FILE --dry-run` over a ROWS_DRY-row file (bench/gen_customers.py
#               with an invalid row every 1000 and a duplicate every 5000):
#               wall seconds and peak RSS (/usr/bin/time %e %M).
#   throughput: `run FILE --rate 1000000 --concurrency 50 --no-progress` against
#               one sandbox (`sandbox`, no limit, from build B, reset before each
#               run) over ROWS_TPUT rows: summary.json rows_per_second.
# Prints the medians of each build and the median of the per-pair ratios
# B / A (rows/s; RSS).
#
# Usage: bench/ab.sh BIN_A BIN_B      (env: PAIRS ROWS_DRY ROWS_TPUT PORT)
#   bench/ab.sh /tmp/bin-before target/release/connect-provision
set -euo pipefail

cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: bench/ab.sh BIN_A BIN_B" >&2; exit 2; }
PAIRS="${PAIRS:-5}"
ROWS_DRY="${ROWS_DRY:-1000000}"
ROWS_TPUT="${ROWS_TPUT:-50000}"
PORT="${PORT:-18811}"
TIME=/usr/bin/time
[ -x "${TIME}" ] || { echo "${TIME} is required (apt-get install time)" >&2; exit 1; }
export CONNECT_CLIENT_ID=sandbox-client
export CONNECT_CLIENT_SECRET=sandbox-secret

WORK="$(mktemp -d -t ab-bench.XXXXXX)"
SANDBOX_PID=""
cleanup() {
    [ -n "${SANDBOX_PID}" ] && kill -INT "${SANDBOX_PID}" 2>/dev/null && wait "${SANDBOX_PID}" 2>/dev/null
    rm -rf "${WORK}"
}
trap cleanup EXIT
# Private copies: a rebuild during the run must not change what is measured.
cp "$1" "${WORK}/A"
cp "$2" "${WORK}/B"

mkdir -p bench/data
DRY="bench/data/customers_${ROWS_DRY}.csv"
[ -f "${DRY}" ] || python3 bench/gen_customers.py "${ROWS_DRY}" --invalid-every 1000 \
    --duplicate-every 5000 --out "${DRY}"

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

"${WORK}/B" sandbox --listen "127.0.0.1:${PORT}" >"${WORK}/sandbox.log" 2>&1 &
SANDBOX_PID=$!
for _ in $(seq 1 50); do
    curl -fs "http://127.0.0.1:${PORT}/_sandbox/stats" >/dev/null 2>&1 && break
    sleep 0.1
done

dry() { # build round
    local out="${WORK}/dry-$1-$2"
    "${TIME}" -f '%e %M' -o "${WORK}/time" "${WORK}/$1" run "${DRY}" --dry-run --out "${out}" \
        >/dev/null 2>&1 || true
    [ -f "${out}/summary.json" ] || { echo "dry run of $1 wrote no summary" >&2; exit 1; }
    # The last line: time(1) puts "Command exited with non-zero status 1" (a
    # dry run with invalid rows) before it.
    read -r secs rss < <(tail -n 1 "${WORK}/time")
    echo "${secs}" >>"${WORK}/dry-secs-$1"
    echo "${rss}" >>"${WORK}/dry-rss-$1"
    rm -rf "${out}"
}

tput() { # build round
    local out="${WORK}/tput-$1-$2" input="${WORK}/tput-$2.csv"
    [ -f "${input}" ] || python3 bench/gen_customers.py "${ROWS_TPUT}" --id-prefix "ab$2-" --out "${input}"
    curl -fs -X POST "http://127.0.0.1:${PORT}/_sandbox/reset" >/dev/null
    "${WORK}/$1" run "${input}" --base-url "http://127.0.0.1:${PORT}" --rate 1000000 \
        --concurrency 50 --no-progress --out "${out}" >/dev/null 2>&1 || true
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["rows_per_second"])' \
        "${out}/summary.json" >>"${WORK}/tput-$1"
    rm -rf "${out}"
}

for round in $(seq 1 "${PAIRS}"); do
    if [ $((round % 2)) -eq 1 ]; then order="A B"; else order="B A"; fi
    for b in ${order}; do dry "${b}" "${round}"; done
    for b in ${order}; do tput "${b}" "${round}"; done
    echo "round ${round}/${PAIRS} done" >&2
done

# Per-round ratios B / A (each round ran A and B back to back, so a
# drifting load on the shared machine cancels out), then their median.
ratio() { paste "$1" "$2" | awk -v inv="$3" '{ print (inv ? $1 / $2 : $2 / $1) }' | median; }
da=$(median <"${WORK}/dry-secs-A"); db=$(median <"${WORK}/dry-secs-B")
ra=$(median <"${WORK}/dry-rss-A"); rb=$(median <"${WORK}/dry-rss-B")
ta=$(median <"${WORK}/tput-A"); tb=$(median <"${WORK}/tput-B")
dr=$(ratio "${WORK}/dry-secs-A" "${WORK}/dry-secs-B" 1)
rr=$(ratio "${WORK}/dry-rss-A" "${WORK}/dry-rss-B" 0)
tr=$(ratio "${WORK}/tput-A" "${WORK}/tput-B" 0)
awk -v da="${da}" -v db="${db}" -v ra="${ra}" -v rb="${rb}" -v ta="${ta}" -v tb="${tb}" \
    -v dr="${dr}" -v rr="${rr}" -v tr="${tr}" -v n="${ROWS_DRY}" -v pairs="${PAIRS}" 'BEGIN {
    printf "| measure (%d alternated pairs) | A (median) | B (median) | B / A (median of the pairs) |\n", pairs
    printf "|---|---:|---:|---:|\n"
    printf "| dry run, %d rows: rows/s | %.0f | %.0f | %.3f |\n", n, n / da, n / db, dr
    printf "| dry run: peak RSS MiB | %.1f | %.1f | %.3f |\n", ra / 1024, rb / 1024, rr
    printf "| throughput, rows/s | %.0f | %.0f | %.3f |\n", ta, tb, tr
}'
