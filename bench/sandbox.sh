#!/usr/bin/env bash
# Throughput of the sandbox's create-user path: how many users it can *create*
# per second on loopback (target: >= 20,000/s on a 2-core machine).
#
# Load generator: wrk with bench/wrk_create.lua, which gives every request a
# unique user_id, so each request is a real creation (validation, title-casing,
# store), not a cheap "taken" answer. oha would be the other choice, but its
# body is static, which would measure one creation and N-1 rejections.
#
# Usage: bench/sandbox.sh            (env: PORT DURATION CONNECTIONS THREADS)
#   PORT=18787 DURATION=10s CONNECTIONS=50 THREADS=1 bench/sandbox.sh
# The server is `connect-provision sandbox --listen 127.0.0.1:PORT`; the URL
# used is the one it prints.
set -euo pipefail

cd "$(dirname "$0")/.."
PORT="${PORT:-18787}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-50}"
# One wrk thread leaves the other core to the server; wrk (LuaJIT) is not the
# bottleneck at this rate.
THREADS="${THREADS:-1}"
BASE="http://127.0.0.1:${PORT}"

# 1. Load generator.
if ! command -v wrk >/dev/null 2>&1; then
    echo "installing wrk (apt-get)..." >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi
command -v curl >/dev/null 2>&1 || { echo "curl is required" >&2; exit 1; }

# 2. Build.
cargo build --release --quiet
SERVER=(target/release/connect-provision sandbox --listen "127.0.0.1:${PORT}")

# 3. Start the server, and stop it however this script ends.
WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [ -n "${SERVER_PID}" ] && kill -0 "${SERVER_PID}" 2>/dev/null; then
        kill -INT "${SERVER_PID}" 2>/dev/null || true
        wait "${SERVER_PID}" 2>/dev/null || true
    fi
    rm -rf "${WORK}"
}
trap cleanup EXIT

if curl -s -o /dev/null "${BASE}/" 2>/dev/null; then
    echo "port ${PORT} is already in use" >&2
    exit 1
fi
"${SERVER[@]}" >"${WORK}/server.log" 2>&1 &
SERVER_PID=$!
# Ready once it has printed its URL and /_sandbox/stats answers.
READY=""
for _ in $(seq 1 100); do
    URL="$(sed -n 's/^sandbox listening on \(http[^ ]*\).*/\1/p' "${WORK}/server.log")"
    if [ -n "${URL}" ] && curl -sf "${URL}/_sandbox/stats" >/dev/null 2>&1; then
        READY=1
        break
    fi
    kill -0 "${SERVER_PID}" 2>/dev/null || break
    sleep 0.1
done
if [ -z "${READY}" ]; then
    echo "sandbox did not start:" >&2
    cat "${WORK}/server.log" >&2
    exit 1
fi
BASE="${URL}"
curl -sf -X POST "${BASE}/_sandbox/reset" >/dev/null

# 4. Token.
TOKEN="$(curl -sf -X POST "${BASE}/v2/oauth/token" -H 'Content-Type: application/json' \
    -d '{"client_id":"sandbox-client","client_secret":"sandbox-secret","grant_type":"client_credentials"}' |
    sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')"
[ -n "${TOKEN}" ] || { echo "could not get a token" >&2; exit 1; }

# 5. Load: unique user_id per request (thread id + per-thread counter).
echo "server: ${SERVER[*]}"
echo "load:   wrk -t${THREADS} -c${CONNECTIONS} -d${DURATION} (unique user_id per request)"
wrk -t"${THREADS}" -c"${CONNECTIONS}" -d"${DURATION}" --latency \
    -s bench/wrk_create.lua "${BASE}" -- "${TOKEN}" | tee "${WORK}/wrk.out"

# 6. What the server saw.
STATS="$(curl -sf "${BASE}/_sandbox/stats")"
echo "stats:  ${STATS}"
field() { printf '%s' "${STATS}" | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }
CREATED="$(field created)"
SECS="$(printf '%s' "${DURATION}" | sed -n 's/^\([0-9]*\)s\{0,1\}$/\1/p')"
if [ -n "${SECS}" ] && [ "${SECS}" -gt 0 ]; then
    echo "created: ${CREATED} users in ${DURATION} = $((CREATED / SECS)) creations/s (duplicates: $(field duplicate_creations))"
else
    echo "created: ${CREATED} users in ${DURATION} (duplicates: $(field duplicate_creations))"
fi
