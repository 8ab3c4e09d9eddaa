#!/usr/bin/env bash
# Live-engine benchmarks of `connect-provision run` against the embedded
# sandbox (`connect-provision sandbox`) on loopback. Prints a Markdown table.
#
#   1. Rate fidelity: sandbox --rate-limit R, tool --rate R (R = 100, 200).
#      "window rate" = rows created / sending window, where the window runs
#      from the first to the last creation the sandbox saw (polled from
#      /_sandbox/stats every 10 ms; computed as Δcreated / Δt between those
#      two observations, so startup and shutdown are excluded). Compared with
#      created / elapsed_seconds and summary.json's achieved_rps, which both
#      include startup. 429s: summary throttled_429 and the sandbox's
#      `throttled`. Target: 0 429s and window rate >= 0.97 R.
#   2. Throughput: sandbox with no limit, tool --rate 1000000 --concurrency 50
#      over ROWS_TPUT rows (rows/s = summary rows_per_second = rows / elapsed,
#      startup included), with and without the hidden --no-journal, alternated;
#      each round is followed by `oha -c 50 -z 10s` (the issue's reference:
#      the same endpoint and concurrency; bodies picked at random from a file
#      of 2M distinct user_ids, so about 15% are answered 400 "taken") and by
#      `wrk -t1 -c50 -d10s` (bench/wrk_create.lua: a unique user_id per
#      request), both against the same sandbox process.
#      Targets: tool / oha >= 0.70; journal on / off within 5%.
#   3. Latency hiding: sandbox --latency 100ms, tool --rate 200 with default
#      concurrency over 3000 rows. Target: rows / elapsed >= 194.
#
# Every figure is the median of RUNS runs (default 3). Each run uses a fresh
# --id-prefix and the sandbox is reset before it, so its stats are per run.
# The tool, the sandbox, the stats poller and wrk share the machine's cores.
#
# Usage: bench/engine.sh          (env: RUNS ROWS_100 ROWS_200 ROWS_TPUT
#                                        ROWS_LAT WRK_DURATION KEEP SECTIONS)
#   RUNS=1 bench/engine.sh        quick pass (~2 min instead of ~5)
#   KEEP=1 bench/engine.sh        keep inputs, reports and logs (path printed)
#   SECTIONS=throughput bench/engine.sh   only some of: rate throughput latency
#   BENCH_REV=abc123 bench/engine.sh   label for the table (default: git HEAD, +dirty)
# Ports: 18801-18804 on 127.0.0.1 (must be free).
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
ROWS_100="${ROWS_100:-2000}"     # 20 s at 100/s
ROWS_200="${ROWS_200:-3000}"     # 15 s at 200/s
ROWS_TPUT="${ROWS_TPUT:-100000}"
ROWS_LAT="${ROWS_LAT:-3000}"     # 15 s at 200/s
WRK_DURATION="${WRK_DURATION:-10s}"
KEEP="${KEEP:-0}"
PORT_R100=18801
PORT_R200=18802
PORT_TPUT=18803
PORT_LAT=18804
BUILT=target/release/connect-provision
export CONNECT_CLIENT_ID=sandbox-client
export CONNECT_CLIENT_SECRET=sandbox-secret

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- prerequisites
command -v python3 >/dev/null 2>&1 || die "python3 is required"
command -v curl >/dev/null 2>&1 || die "curl is required"
command -v timeout >/dev/null 2>&1 || die "timeout (coreutils) is required"
export PATH="${PATH}:${HOME}/.cargo/bin"
if ! command -v oha >/dev/null 2>&1; then
    log "installing oha (cargo install oha --locked; a few minutes)..."
    cargo install oha --locked --quiet
fi
if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk (apt-get)..."
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi

log "building (cargo build --release)..."
cargo build --release --quiet
WORK="$(mktemp -d -t engine-bench.XXXXXX)"
# Run a private copy: a rebuild of target/ during the benchmark (another
# cargo in this checkout) must not mix two binaries in one table.
BIN="${WORK}/connect-provision"
cp "${BUILT}" "${BIN}"
"${BIN}" sandbox --help >/dev/null 2>&1 || die "this build has no 'sandbox' subcommand"
SANDBOX_PIDS=()
POLL_PID=""

stop_pid() { # pid: SIGINT, up to 5 s, then SIGKILL
    local pid="$1"
    kill -0 "${pid}" 2>/dev/null || return 0
    kill -INT "${pid}" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "${pid}" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "${pid}" 2>/dev/null && kill -KILL "${pid}" 2>/dev/null
    wait "${pid}" 2>/dev/null || true
}

cleanup() {
    local pid
    [ -n "${POLL_PID}" ] && stop_pid "${POLL_PID}"
    for pid in "${SANDBOX_PIDS[@]}"; do stop_pid "${pid}"; done
    if [ "${KEEP}" = 1 ]; then
        log "kept: ${WORK}"
    else
        rm -rf "${WORK}"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers
# Stats poller: one keep-alive connection, a line "t users_requests created"
# each time the counters change. t is CLOCK_MONOTONIC seconds.
cat >"${WORK}/poll.py" <<'PY'
import http.client, json, signal, sys, time
port, out, interval = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_term)
conn, last = None, None
with open(out, "w") as f:
    while not stop:
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/_sandbox/stats")
            s = json.loads(conn.getresponse().read())
        except Exception:
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(interval)
            continue
        t = time.monotonic()
        v = (s["users_requests"], s["created"])
        if v != last:
            f.write(f"{t:.6f} {v[0]} {v[1]}\n")
            f.flush()
            last = v
        time.sleep(interval)
PY

# window FILE -> "secs rate": Δcreated/Δt from the first observation with a
# creation to the last change.
window() {
    python3 - "$1" <<'PY'
import sys
pts = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
pts = [p for p in pts if p[2] > 0]
if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
    print("nan nan")
else:
    dt = pts[-1][0] - pts[0][0]
    print(f"{dt:.3f} {(pts[-1][2] - pts[0][2]) / dt:.2f}")
PY
}

# summ DIR -> "created requests_sent throttled_429 achieved_rps rows_per_second elapsed_seconds exit_code"
summ() {
    python3 - "$1/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(s["counts"]["created"], s["requests_sent"], s["throttled_429"], s["achieved_rps"],
      s["rows_per_second"], s["elapsed_seconds"], s["exit_code"])
PY
}

# stat PORT FIELD -> integer field of /_sandbox/stats
sbstat() {
    curl -sf "http://127.0.0.1:$1/_sandbox/stats" |
        python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"
}

# median v... (numbers; "nan" ignored)
median() {
    python3 - "$@" <<'PY'
import statistics, sys
v = [float(x) for x in sys.argv[1:] if x not in ("nan", "")]
print(f"{statistics.median(v):.2f}" if v else "nan")
PY
}
# ratio a b -> a/b with 3 decimals
ratio() { python3 -c "import sys; a,b=map(float,sys.argv[1:]); print(f'{a/b:.3f}' if b else 'nan')" "$1" "$2"; }
# ge a b -> "yes" if a >= b
ge() { python3 -c "import sys; a,b=map(float,sys.argv[1:]); print('yes' if a>=b else '**no**')" "$1" "$2"; }
isum() { local t=0 x; for x in "$@"; do t=$((t + x)); done; echo "${t}"; }
slashed() { local IFS=/; echo "$*"; }

# start_sandbox PORT [sandbox args...]: background, logs to WORK, waits for stats.
start_sandbox() {
    local port="$1"; shift
    if curl -s -o /dev/null "http://127.0.0.1:${port}/" 2>/dev/null; then
        die "port ${port} is already in use"
    fi
    "${BIN}" sandbox --listen "127.0.0.1:${port}" "$@" >"${WORK}/sandbox-${port}.log" 2>&1 &
    local pid=$!
    SANDBOX_PIDS+=("${pid}")
    for _ in $(seq 1 100); do
        if grep -q "listening on" "${WORK}/sandbox-${port}.log" 2>/dev/null &&
            curl -sf "http://127.0.0.1:${port}/_sandbox/stats" >/dev/null 2>&1; then
            log "sandbox $(sed -n 's/.*listening on //p' "${WORK}/sandbox-${port}.log") (pid ${pid}) $*"
            return 0
        fi
        kill -0 "${pid}" 2>/dev/null || { cat "${WORK}/sandbox-${port}.log" >&2; die "sandbox on ${port} exited"; }
        sleep 0.1
    done
    die "sandbox on ${port} did not answer"
}

reset_sandbox() { curl -sf -X POST "http://127.0.0.1:$1/_sandbox/reset" >/dev/null; }

# sandbox_token PORT -> an access token (a reset revokes the earlier ones).
sandbox_token() {
    curl -sf -X POST "http://127.0.0.1:$1/v2/oauth/token" -H 'Content-Type: application/json' \
        -d '{"client_id":"sandbox-client","client_secret":"sandbox-secret","grant_type":"client_credentials"}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

gen() { # rows prefix file
    python3 bench/gen_customers.py "$1" --id-prefix "$2" --out "$3"
}

# run_tool NAME PORT INPUT LIMIT_SECS [tool args...]: one run; reports in WORK/NAME.
run_tool() {
    local name="$1" port="$2" input="$3" limit="$4"; shift 4
    local rc=0
    timeout --signal=INT --kill-after=10 "${limit}" \
        "${BIN}" run "${input}" --base-url "http://127.0.0.1:${port}" \
        --out "${WORK}/${name}" --no-progress "$@" >"${WORK}/${name}.log" 2>&1 || rc=$?
    [ -f "${WORK}/${name}/summary.json" ] || { tail -5 "${WORK}/${name}.log" >&2; die "${name}: no summary.json (exit ${rc})"; }
    [ "${rc}" -eq 0 ] || log "warning: ${name} exited ${rc}"
}

# poll_start PORT FILE / poll_stop
poll_start() {
    python3 "${WORK}/poll.py" "$1" "$2" 0.01 &
    POLL_PID=$!
    sleep 0.2
}
poll_stop() {
    sleep 0.1
    stop_pid "${POLL_PID}"
    POLL_PID=""
}

ROWS=() # the Markdown table body
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); }

# ---------------------------------------------------------------- 1. rate fidelity
rate_fidelity() { # R PORT NROWS
    local r="$1" port="$2" n="$3" i name input
    local win=() per_elapsed=() arps=() t429=() s429=() created=()
    start_sandbox "${port}" --rate-limit "${r}"
    for i in $(seq 1 "${RUNS}"); do
        name="rate${r}-${i}"
        input="${WORK}/${name}.csv"
        gen "${n}" "r${r}x${i}x" "${input}"
        reset_sandbox "${port}"
        poll_start "${port}" "${WORK}/${name}.poll"
        run_tool "${name}" "${port}" "${input}" $((n * 3 / r + 30)) --rate "${r}"
        poll_stop
        read -r c _sent thr arp _rps el _rc < <(summ "${WORK}/${name}")
        read -r wsecs wrate < <(window "${WORK}/${name}.poll")
        win+=("${wrate}")
        per_elapsed+=("$(python3 -c "print(f'{$c/$el:.2f}')")")
        arps+=("${arp}")
        t429+=("${thr}")
        s429+=("$(sbstat "${port}" throttled)")
        created+=("${c}")
        log "${name}: created ${c}/${n}, window ${wsecs}s -> ${wrate}/s, created/elapsed ${per_elapsed[-1]}/s (elapsed ${el}s), achieved_rps ${arp}, 429 tool ${thr} sandbox ${s429[-1]}"
    done
    local mw; mw="$(median "${win[@]}")"
    local target; target="$(python3 -c "print(f'{0.97*$r:.0f}')")"
    row "1. rate ${r}/s, ${n} rows" "created / sending window (rows/s)" "$(slashed "${win[@]}")" "${mw}" ">= ${target}" "$(ge "${mw}" "${target}")"
    row "" "created / elapsed (rows/s)" "$(slashed "${per_elapsed[@]}")" "$(median "${per_elapsed[@]}")" "" ""
    row "" "summary achieved_rps" "$(slashed "${arps[@]}")" "$(median "${arps[@]}")" "" ""
    row "" "created (of ${n})" "$(slashed "${created[@]}")" "$(median "${created[@]}")" "= ${n}" "$([ "$(isum "${created[@]}")" -eq $((n * RUNS)) ] && echo yes || echo '**no**')"
    local tt st; tt="$(isum "${t429[@]}")"; st="$(isum "${s429[@]}")"
    row "" "429s: summary throttled_429 / sandbox throttled" "$(slashed "${t429[@]}") / $(slashed "${s429[@]}")" "${tt} / ${st} (total)" "0" "$([ "${tt}" -eq 0 ] && [ "${st}" -eq 0 ] && echo yes || echo '**no**')"
}

# ---------------------------------------------------------------- 2. throughput
throughput() {
    local port="${PORT_TPUT}" n="${ROWS_TPUT}" i mode name input
    local on=() off=() auto=() wrk_rps=() wrk_created=() wrk_other=() token secs
    local oha_rps=() oha_created=() oha_taken=()
    start_sandbox "${port}"
    secs="$(printf '%s' "${WRK_DURATION}" | sed -n 's/^\([0-9]*\)s\{0,1\}$/\1/p')"
    python3 bench/oha_bodies.py "${WORK}/oha-bodies.txt"
    for i in $(seq 1 "${RUNS}"); do
        # Alternate the order too, so neither mode always runs first.
        local order="on off auto"
        [ $((i % 2)) -eq 0 ] && order="auto off on"
        for mode in ${order}; do
            name="tput-${mode}-${i}"
            input="${WORK}/${name}.csv"
            gen "${n}" "t${mode}x${i}x" "${input}"
            reset_sandbox "${port}"
            local extra=()
            local rate=(--rate 1000000)
            [ "${mode}" = off ] && extra=(--no-journal)
            # --rate auto far below its limit: started at its ceiling, so the
            # figure is the cost of adapting, not the warm-up from 10/s.
            [ "${mode}" = auto ] && rate=(--rate auto --rate-start 1000000 --rate-max 1000000)
            run_tool "${name}" "${port}" "${input}" 120 "${rate[@]}" --concurrency 50 "${extra[@]}"
            read -r c _sent _thr _arp rps el _rc < <(summ "${WORK}/${name}")
            [ "${c}" -eq "${n}" ] || log "warning: ${name} created ${c} of ${n}"
            case "${mode}" in on) on+=("${rps}") ;; off) off+=("${rps}") ;; auto) auto+=("${rps}") ;; esac
            log "${name}: created ${c} in ${el}s -> ${rps} rows/s"
            rm -f "${input}"
            [ "${KEEP}" = 1 ] || rm -rf "${WORK:?}/${name}"
        done
        # oha right after, same sandbox process and concurrency.
        reset_sandbox "${port}"
        token="$(sandbox_token "${port}")"
        timeout --kill-after=5 $((secs + 30)) oha --no-tui -c 50 -z "${WRK_DURATION}" -m POST \
            -H "Authorization: Bearer ${token}" -H 'Content-Type: application/json' \
            -Z "${WORK}/oha-bodies.txt" --output-format json \
            "http://127.0.0.1:${port}/v2/fulfillment/users" >"${WORK}/oha-${i}.json" 2>"${WORK}/oha-${i}.err"
        read -r orps otaken < <(python3 - "${WORK}/oha-${i}.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
codes = d.get("statusCodeDistribution", {})
total = sum(codes.values()) or 1
print(f'{d["summary"]["requestsPerSec"]:.2f} {100 * codes.get("400", 0) / total:.1f}')
PY
)
        oha_rps+=("${orps}")
        oha_taken+=("${otaken}")
        oha_created+=("$(python3 -c "print(f'{$(sbstat "${port}" created)/${secs}:.2f}')")")
        log "oha-${i}: ${orps} req/s, created ${oha_created[-1]}/s, 400 taken ${otaken}%"
        # wrk right after, same sandbox process.
        reset_sandbox "${port}"
        token="$(sandbox_token "${port}")"
        [ -n "${token}" ] || die "no token for wrk"
        timeout --kill-after=5 $((secs + 30)) wrk -t1 -c50 -d"${WRK_DURATION}" -s bench/wrk_create.lua \
            "http://127.0.0.1:${port}" -- "${token}" "w${i}" >"${WORK}/wrk-${i}.out" 2>&1
        wrk_rps+=("$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "${WORK}/wrk-${i}.out")")
        wrk_created+=("$(python3 -c "print(f'{$(sbstat "${port}" created)/${secs}:.2f}')")")
        wrk_other+=("$(sed -n 's/^wrk: 200 answers [0-9]*, other answers \([0-9]*\).*/\1/p' "${WORK}/wrk-${i}.out")")
        log "wrk-${i}: ${wrk_rps[-1]} req/s, created ${wrk_created[-1]}/s, non-200 ${wrk_other[-1]}"
    done
    local mon moff mauto mwrk moha
    mon="$(median "${on[@]}")"; moff="$(median "${off[@]}")"; mauto="$(median "${auto[@]}")"; mwrk="$(median "${wrk_rps[@]}")"
    moha="$(median "${oha_rps[@]}")"
    local r_wrk r_oha r_j r_a
    r_wrk="$(ratio "${mon}" "${mwrk}")"; r_oha="$(ratio "${mon}" "${moha}")"; r_j="$(ratio "${mon}" "${moff}")"; r_a="$(ratio "${mauto}" "${mon}")"
    row "2. no limit, ${n} rows, --rate 1000000 --concurrency 50" "tool rows/s, journal on" "$(slashed "${on[@]}")" "${mon}" "" ""
    row "" "tool rows/s, --no-journal" "$(slashed "${off[@]}")" "${moff}" "" ""
    row "" "oha -c 50 -z ${WRK_DURATION} req/s (2M bodies, random picks)" "$(slashed "${oha_rps[@]}")" "${moha}" "" ""
    row "" "oha: sandbox created / ${secs} s; % answered 400 taken" "$(slashed "${oha_created[@]}"); $(slashed "${oha_taken[@]}")" "$(median "${oha_created[@]}")" "" ""
    row "" "wrk -t1 -c50 -d${WRK_DURATION} req/s (unique user_ids)" "$(slashed "${wrk_rps[@]}")" "${mwrk}" "" ""
    row "" "wrk: sandbox created / ${secs} s; non-200 answers" "$(slashed "${wrk_created[@]}"); $(slashed "${wrk_other[@]}")" "$(median "${wrk_created[@]}")" "" ""
    local per_round=() k
    for k in "${!on[@]}"; do per_round+=("$(ratio "${on[$k]}" "${oha_rps[$k]}")"); done
    row "" "ratio tool (journal on) / oha" "" "${r_oha}" ">= 0.70" "$(ge "${r_oha}" 0.70)"
    row "" "ratio tool / oha, per round (tool runs and oha back to back)" "$(slashed "${per_round[@]}")" "$(median "${per_round[@]}")" "" ""
    row "" "ratio tool (journal on) / wrk" "" "${r_wrk}" "" ""
    row "" "ratio journal on / off" "" "${r_j}" "0.95 .. 1.05" "$(python3 -c "print('yes' if abs($r_j-1)<=0.05 else '**no**')")"
    row "" "tool rows/s, --rate auto (start = max = 1000000)" "$(slashed "${auto[@]}")" "${mauto}" "" ""
    row "" "ratio auto / fixed" "" "${r_a}" ">= 0.95" "$(ge "${r_a}" 0.95)"
}

# ---------------------------------------------------------------- 3. latency hiding
latency_hiding() {
    local port="${PORT_LAT}" n="${ROWS_LAT}" i name input
    local per_elapsed=() win=() inflight=() created=()
    start_sandbox "${port}" --latency 100ms
    for i in $(seq 1 "${RUNS}"); do
        name="lat-${i}"
        input="${WORK}/${name}.csv"
        gen "${n}" "l${i}x" "${input}"
        reset_sandbox "${port}"
        poll_start "${port}" "${WORK}/${name}.poll"
        run_tool "${name}" "${port}" "${input}" $((n * 3 / 200 + 30)) --rate 200
        poll_stop
        read -r c _sent _thr _arp rps el _rc < <(summ "${WORK}/${name}")
        read -r wsecs wrate < <(window "${WORK}/${name}.poll")
        per_elapsed+=("$(python3 -c "print(f'{$c/$el:.2f}')")")
        win+=("${wrate}")
        inflight+=("$(sbstat "${port}" max_in_flight)")
        created+=("${c}")
        log "${name}: created ${c}/${n} in ${el}s -> ${per_elapsed[-1]}/s (rows_per_second ${rps}), window ${wsecs}s -> ${wrate}/s, sandbox max_in_flight ${inflight[-1]}"
    done
    local m; m="$(median "${per_elapsed[@]}")"
    row "3. --latency 100ms, ${n} rows, --rate 200, default concurrency" "created / elapsed (rows/s)" "$(slashed "${per_elapsed[@]}")" "${m}" ">= 194" "$(ge "${m}" 194)"
    row "" "created / sending window (rows/s)" "$(slashed "${win[@]}")" "$(median "${win[@]}")" "" ""
    row "" "sandbox max_in_flight" "$(slashed "${inflight[@]}")" "$(median "${inflight[@]}")" "" ""
}

REV="${BENCH_REV:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
[ -n "${BENCH_REV:-}" ] || git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || REV="${REV}+dirty"
T0=$(date +%s)
log "RUNS=${RUNS}; work dir ${WORK}"
SECTIONS="${SECTIONS:-rate throughput latency}"
case " ${SECTIONS} " in *" rate "*)
    rate_fidelity 100 "${PORT_R100}" "${ROWS_100}"
    rate_fidelity 200 "${PORT_R200}" "${ROWS_200}" ;;
esac
case " ${SECTIONS} " in *" throughput "*) throughput ;; esac
case " ${SECTIONS} " in *" latency "*) latency_hiding ;; esac
T1=$(date +%s)

echo
echo "## connect-provision engine benchmark (${REV}, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, RUNS=${RUNS}, $((T1 - T0)) s)"
echo
echo "| Scenario | Measure | Runs | Median | Target | Met |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
