#!/usr/bin/env bash
# CPU per request: where the two cores go when the tool, oha or wrk drives the
# sandbox with no rate limit. For each client it prints requests/s and the CPU
# time (user + system, µs per request) of the client and of the sandbox, read
# from /usr/bin/time and from /proc/PID/stat of the one sandbox process that
# all of them share. The sandbox is reset before every run.
#
#   ROWS=100000 RUNS=3 bench/cpu.sh
#
# Rows/s on this 2-core machine is roughly 2 cores / (client µs + sandbox µs),
# so these figures say how far a client can go, independent of the noise that
# wall-clock medians carry. Needs wrk and oha (bench/engine.sh installs both).
# Port 18805 on 127.0.0.1 must be free.
set -euo pipefail

cd "$(dirname "$0")/.."
ROWS="${ROWS:-100000}"
RUNS="${RUNS:-3}"
SECS="${SECS:-8}"
PORT=18805
export PATH="${PATH}:${HOME}/.cargo/bin"
export CONNECT_CLIENT_ID=sandbox-client
export CONNECT_CLIENT_SECRET=sandbox-secret
for cmd in wrk oha python3 curl /usr/bin/time; do
    command -v "${cmd}" >/dev/null 2>&1 || { echo "error: ${cmd} is required" >&2; exit 1; }
done

cargo build --release --quiet
WORK="$(mktemp -d -t cpu-bench.XXXXXX)"
BIN="${WORK}/connect-provision"
cp target/release/connect-provision "${BIN}"
"${BIN}" sandbox --listen "127.0.0.1:${PORT}" >"${WORK}/sandbox.log" 2>&1 &
SB=$!
trap 'kill ${SB} 2>/dev/null; rm -rf "${WORK}"' EXIT
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:${PORT}/_sandbox/stats" >/dev/null 2>&1 && break
    sleep 0.1
done

TCK="$(getconf CLK_TCK)"
sb_cpu() { awk '{print $14 + $15}' "/proc/${SB}/stat"; }
reset() { curl -sf -X POST "http://127.0.0.1:${PORT}/_sandbox/reset" >/dev/null; }
token() {
    curl -sf -X POST "http://127.0.0.1:${PORT}/v2/oauth/token" -H 'Content-Type: application/json' \
        -d '{"client_id":"sandbox-client","client_secret":"sandbox-secret","grant_type":"client_credentials"}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
# line NAME REQUESTS WALL_S USER_S SYS_S SANDBOX_TICKS
line() {
    python3 -c "
name, n, wall, u, s, ticks, tck = '$1', float($2), float($3), float($4), float($5), float($6), float(${TCK})
print(f'| {name} | {n/wall:,.0f} | {(u+s)/n*1e6:.1f} | {u/n*1e6:.1f} / {s/n*1e6:.1f} | {ticks/tck/n*1e6:.1f} |')"
}

python3 bench/oha_bodies.py "${WORK}/bodies.txt"

echo "| client | requests/s | client CPU µs/request | user / system | sandbox CPU µs/request |"
echo "|---|---:|---:|---:|---:|"
for i in $(seq 1 "${RUNS}"); do
    python3 bench/gen_customers.py "${ROWS}" --id-prefix "cpu${i}x" --out "${WORK}/in.csv" >/dev/null
    reset
    s0="$(sb_cpu)"
    /usr/bin/time -f "%e %U %S" -o "${WORK}/time" "${BIN}" run "${WORK}/in.csv" \
        --base-url "http://127.0.0.1:${PORT}" --out "${WORK}/out${i}" --no-progress \
        --rate 1000000 --concurrency 50 >"${WORK}/run.log" 2>&1
    s1="$(sb_cpu)"
    read -r e u s <"${WORK}/time"
    line "connect-provision run, ${ROWS} rows" "${ROWS}" "${e}" "${u}" "${s}" "$((s1 - s0))"

    reset
    tok="$(token)"
    s0="$(sb_cpu)"
    /usr/bin/time -f "%e %U %S" -o "${WORK}/time" oha --no-tui -c 50 -z "${SECS}s" -m POST \
        -H "Authorization: Bearer ${tok}" -H 'Content-Type: application/json' \
        -Z "${WORK}/bodies.txt" --output-format json \
        "http://127.0.0.1:${PORT}/v2/fulfillment/users" >"${WORK}/oha.json" 2>/dev/null
    s1="$(sb_cpu)"
    read -r _ u s <"${WORK}/time"
    n="$(python3 -c "import json; d=json.load(open('${WORK}/oha.json')); print(sum(d['statusCodeDistribution'].values()))")"
    line "oha -c 50" "${n}" "${SECS}" "${u}" "${s}" "$((s1 - s0))"

    reset
    tok="$(token)"
    s0="$(sb_cpu)"
    /usr/bin/time -f "%e %U %S" -o "${WORK}/time" wrk -t1 -c50 -d"${SECS}s" -s bench/wrk_create.lua \
        "http://127.0.0.1:${PORT}" -- "${tok}" "cpu${i}w" >"${WORK}/wrk.out" 2>&1
    s1="$(sb_cpu)"
    read -r _ u s <"${WORK}/time"
    n="$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "${WORK}/wrk.out")"
    line "wrk -t1 -c50" "${n}" "${SECS}" "${u}" "${s}" "$((s1 - s0))"
done
