#!/usr/bin/env bash
# Throughput of the sandbox's create-user path: how many users it can *create*
# per second on loopback (target: >= 20,000/s on a 2-core machine).
#
# Load generator: wrk with a Lua script that gives every request a unique
# user_id, so each request is a real creation (validation, title-casing, store),
# not a cheap "taken" answer. oha would be the other choice, but its body is
# static, which would measure one creation and N-1 rejections.
#
# Usage: bench/sandbox.sh            (env: PORT DURATION CONNECTIONS THREADS)
#   PORT=18787 DURATION=10s CONNECTIONS=50 THREADS=1 bench/sandbox.sh
# The server runs as `connect-provision sandbox`; if this build's CLI has no
# `sandbox` subcommand yet, the `sandbox_server` example is used instead.
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
CLI=(target/release/connect-provision sandbox --listen "127.0.0.1:${PORT}")
EXAMPLE=(target/release/examples/sandbox_server --listen "127.0.0.1:${PORT}")

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

# Starts "$@" in the background; succeeds once /_sandbox/stats answers.
start_server() {
    "$@" >"${WORK}/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        curl -sf "${BASE}/_sandbox/stats" >/dev/null 2>&1 && return 0
        kill -0 "${SERVER_PID}" 2>/dev/null || { SERVER_PID=""; return 1; }
        sleep 0.1
    done
    return 1
}

if start_server "${CLI[@]}"; then
    SERVER=("${CLI[@]}")
else
    # The CLI's `sandbox` subcommand may not be wired up in this build yet.
    echo "note: '${CLI[*]}' did not start ($(head -c 200 "${WORK}/server.log")); using examples/sandbox_server.rs" >&2
    cargo build --release --quiet --example sandbox_server
    start_server "${EXAMPLE[@]}" || { cat "${WORK}/server.log" >&2; exit 1; }
    SERVER=("${EXAMPLE[@]}")
fi
curl -sf -X POST "${BASE}/_sandbox/reset" >/dev/null

# 4. Token.
TOKEN="$(curl -sf -X POST "${BASE}/v2/oauth/token" -H 'Content-Type: application/json' \
    -d '{"client_id":"sandbox-client","client_secret":"sandbox-secret","grant_type":"client_credentials"}' |
    sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')"
[ -n "${TOKEN}" ] || { echo "could not get a token" >&2; exit 1; }

# 5. Load: unique user_id per request (thread id + per-thread counter).
cat >"${WORK}/create.lua" <<'LUA'
local threads = {}
function setup(thread)
    thread:set("tid", #threads)
    table.insert(threads, thread)
end
function init(args)
    token = args[1]
    n, ok, other = 0, 0, 0
    headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}
end
function request()
    n = n + 1
    local body = string.format(
        '{"user_id":"bench-%d-%d","first_name":"john","last_name":"smith","phone_number":"+18005550100","locale":"en-US"}',
        tid, n)
    return wrk.format("POST", "/v2/fulfillment/users", headers, body)
end
function response(status)
    if status == 200 then ok = ok + 1 else other = other + 1 end
end
function done(summary, latency, requests)
    local total_ok, total_other = 0, 0
    for _, t in ipairs(threads) do
        total_ok = total_ok + t:get("ok")
        total_other = total_other + t:get("other")
    end
    io.write(string.format("wrk: 200 answers %d, other answers %d\n", total_ok, total_other))
end
LUA

echo "server: ${SERVER[*]}"
echo "load:   wrk -t${THREADS} -c${CONNECTIONS} -d${DURATION} (unique user_id per request)"
wrk -t"${THREADS}" -c"${CONNECTIONS}" -d"${DURATION}" --latency \
    -s "${WORK}/create.lua" "${BASE}" -- "${TOKEN}" | tee "${WORK}/wrk.out"

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
