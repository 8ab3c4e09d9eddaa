#!/usr/bin/env bash
# Instruction counts of two builds, under valgrind's callgrind: the work a run
# does, whatever else the shared machine is doing (wall-clock ratios on it
# swing by ±10 %). Both measures run each build RUNS times, alternated, and
# print the medians and their ratio B / A.
#
#   dry run:  `run FILE --dry-run` over ROWS_DRY rows (bench/gen_customers.py,
#             an invalid row every 1000, a duplicate every 5000).
#   live run: `run FILE --rate 1000000 --concurrency 50` over ROWS_LIVE rows
#             against one sandbox (build B, native, reset before each run);
#             only the tool runs under callgrind.
#
# Usage: bench/instr.sh BIN_A BIN_B      (env: RUNS ROWS_DRY ROWS_LIVE PORT)
#   bench/instr.sh /tmp/bin-before target/release/connect-provision
set -euo pipefail

cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: bench/instr.sh BIN_A BIN_B" >&2; exit 2; }
RUNS="${RUNS:-3}"
ROWS_DRY="${ROWS_DRY:-200000}"
ROWS_LIVE="${ROWS_LIVE:-5000}"
PORT="${PORT:-18812}"
command -v valgrind >/dev/null || { echo "valgrind is required" >&2; exit 1; }
export CONNECT_CLIENT_ID=sandbox-client
export CONNECT_CLIENT_SECRET=sandbox-secret

WORK="$(mktemp -d -t instr-bench.XXXXXX)"
SANDBOX_PID=""
cleanup() {
    [ -n "${SANDBOX_PID}" ] && kill -INT "${SANDBOX_PID}" 2>/dev/null && wait "${SANDBOX_PID}" 2>/dev/null
    rm -rf "${WORK}"
}
trap cleanup EXIT
cp "$1" "${WORK}/A"
cp "$2" "${WORK}/B"

mkdir -p bench/data
DRY="bench/data/customers_${ROWS_DRY}.csv"
[ -f "${DRY}" ] || python3 bench/gen_customers.py "${ROWS_DRY}" --invalid-every 1000 \
    --duplicate-every 5000 --out "${DRY}"

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# Instructions of one command under callgrind.
instructions() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>"${WORK}/vg" >/dev/null || true
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "${WORK}/vg" | tail -n 1
}

"${WORK}/B" sandbox --listen "127.0.0.1:${PORT}" >"${WORK}/sandbox.log" 2>&1 &
SANDBOX_PID=$!
for _ in $(seq 1 50); do
    curl -fs "http://127.0.0.1:${PORT}/_sandbox/stats" >/dev/null 2>&1 && break
    sleep 0.1
done

for run in $(seq 1 "${RUNS}"); do
    if [ $((run % 2)) -eq 1 ]; then order="A B"; else order="B A"; fi
    for b in ${order}; do
        rm -rf "${WORK}/out"
        instructions "${WORK}/${b}" run "${DRY}" --dry-run --out "${WORK}/out" --no-progress \
            >>"${WORK}/dry-${b}"
        input="${WORK}/live-${run}-${b}.csv"
        python3 bench/gen_customers.py "${ROWS_LIVE}" --id-prefix "i${run}${b}-" --out "${input}"
        curl -fs -X POST "http://127.0.0.1:${PORT}/_sandbox/reset" >/dev/null
        rm -rf "${WORK}/out"
        instructions "${WORK}/${b}" run "${input}" --base-url "http://127.0.0.1:${PORT}" \
            --rate 1000000 --concurrency 50 --no-progress --out "${WORK}/out" >>"${WORK}/live-${b}"
    done
    echo "run ${run}/${RUNS} done" >&2
done

da=$(median <"${WORK}/dry-A"); db=$(median <"${WORK}/dry-B")
la=$(median <"${WORK}/live-A"); lb=$(median <"${WORK}/live-B")
awk -v da="${da}" -v db="${db}" -v la="${la}" -v lb="${lb}" -v nd="${ROWS_DRY}" \
    -v nl="${ROWS_LIVE}" -v runs="${RUNS}" 'BEGIN {
    printf "| instructions (median of %d runs) | A | B | B / A |\n", runs
    printf "|---|---:|---:|---:|\n"
    printf "| dry run, %d rows: per row | %.0f | %.0f | %.3f |\n", nd, da / nd, db / nd, db / da
    printf "| live run, %d rows: per row | %.0f | %.0f | %.3f |\n", nl, la / nl, lb / nl, lb / la
}'
