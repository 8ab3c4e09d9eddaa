#!/usr/bin/env bash
# Dry-run throughput and memory: read, validate (phones, locales, names) and
# de-duplicate a customer CSV, writing all three reports; no network.
#
# For each size it prints the median (and min) wall time, the median rows/s, the median
# and max peak RSS over RUNS timed runs (after one untimed warm-up, so the
# input is in the page cache), and the median time of a cheap same-run
# reference over the same file, with the ratio dry-run / reference.
#
# Usage: bench/dry_run.sh            (env: RUNS SIZES REF SEED)
#   RUNS=5 SIZES="100000 1000000" REF=wc bench/dry_run.sh
#   REF=wc      `wc -l FILE`: reading every byte once (default; the I/O floor)
#   REF=cat     `cat FILE > /dev/null`
#   REF=pycsv   python3's csv module parsing every record (a CSV-parsing baseline)
# Inputs: bench/gen_customers.py ROWS --invalid-every 1000 --duplicate-every 5000,
# generated once into bench/data/ (gitignored) and reused. Reports go to
# bench/out/ (gitignored). Wall time comes from a nanosecond clock around
# `/usr/bin/time -f '%e %M'`; peak RSS is its %M.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS="${RUNS:-5}"
SIZES="${SIZES:-100000 1000000}"
REF="${REF:-wc}"
SEED="${SEED:-1}"
TIME=/usr/bin/time

[ -x "${TIME}" ] || { echo "${TIME} is required (apt-get install time)" >&2; exit 1; }
command -v python3 >/dev/null 2>&1 || { echo "python3 is required" >&2; exit 1; }
case "${REF}" in
    wc) REF_NAME='`wc -l`' ;;
    cat) REF_NAME='`cat > /dev/null`' ;;
    pycsv) REF_NAME='python3 `csv.reader`' ;;
    *) echo "REF must be wc, cat or pycsv" >&2; exit 2 ;;
esac

echo "building (cargo build --release)..." >&2
cargo build --release --quiet
BIN=target/release/connect-provision
mkdir -p bench/data bench/out
WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT

now_ns() { date +%s%N; }

# median of the numbers on stdin
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
maximum() { sort -g | tail -n 1; }
minimum() { sort -g | head -n 1; }

# run_ref FILE: the reference command over FILE
run_ref() {
    case "${REF}" in
        wc) wc -l "$1" >/dev/null ;;
        cat) cat "$1" >/dev/null ;;
        pycsv) python3 -c 'import csv, sys
with open(sys.argv[1], newline="", encoding="utf-8") as f:
    n = sum(1 for _ in csv.reader(f))' "$1" ;;
    esac
}

# dry_run FILE OUT: one dry run; exit 0 or 1 (invalid rows) is a finished run
dry_run() {
    local rc=0
    "${TIME}" -f '%e %M' -o "${WORK}/time" "${BIN}" run "$1" --dry-run --out "$2" \
        >"${WORK}/stdout" 2>"${WORK}/stderr" || rc=$?
    if [ "${rc}" -ne 0 ] && [ "${rc}" -ne 1 ]; then
        echo "dry run of $1 exited ${rc}:" >&2
        cat "${WORK}/stderr" >&2
        exit 1
    fi
}

label() {
    case "$1" in
        *000000) echo "$(($1 / 1000000))M" ;;
        *000) echo "$(($1 / 1000))k" ;;
        *) echo "$1" ;;
    esac
}

ROWS_OUT=()
for n in ${SIZES}; do
    name="$(label "${n}")"
    file="bench/data/customers_${name}_s${SEED}_i1000_d5000.csv"
    if [ ! -s "${file}" ]; then
        echo "generating ${file}..." >&2
        python3 bench/gen_customers.py "${n}" --seed "${SEED}" \
            --invalid-every 1000 --duplicate-every 5000 --out "${file}.tmp"
        mv "${file}.tmp" "${file}"
    fi
    out="bench/out/dry_run_${name}"
    mib="$(awk -v b="$(stat -c %s "${file}")" 'BEGIN { printf "%.1f", b / 1048576 }')"

    echo "${name}: warm-up..." >&2
    dry_run "${file}" "${out}"
    read_rows="$(sed -n 's/.*"rows_read": *\([0-9]*\).*/\1/p' "${out}/summary.json")"
    [ "${read_rows}" = "${n}" ] || { echo "summary.json says rows_read=${read_rows}, expected ${n}" >&2; exit 1; }
    run_ref "${file}"

    : >"${WORK}/wall"
    : >"${WORK}/rss"
    : >"${WORK}/ref"
    for i in $(seq 1 "${RUNS}"); do
        t0="$(now_ns)"
        dry_run "${file}" "${out}"
        t1="$(now_ns)"
        awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.4f\n", ns / 1e9 }' >>"${WORK}/wall"
        # The last line: `time` writes "Command exited with non-zero status 1" first.
        tail -n 1 "${WORK}/time" | awk '{ printf "%.1f\n", $2 / 1024 }' >>"${WORK}/rss"
        t0="$(now_ns)"
        run_ref "${file}"
        t1="$(now_ns)"
        awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.4f\n", ns / 1e9 }' >>"${WORK}/ref"
        echo "${name}: run ${i}/${RUNS}: $(tail -n 1 "${WORK}/wall") s, $(tail -n 1 "${WORK}/rss") MiB" >&2
    done
    wall="$(median <"${WORK}/wall")"
    wall_min="$(minimum <"${WORK}/wall")"
    rss_med="$(median <"${WORK}/rss")"
    rss_max="$(maximum <"${WORK}/rss")"
    ref="$(median <"${WORK}/ref")"
    ROWS_OUT+=("$(awk -v name="${name}" -v mib="${mib}" -v w="${wall}" -v wm="${wall_min}" -v n="${n}" \
        -v rm="${rss_med}" -v rx="${rss_max}" -v r="${ref}" 'BEGIN {
        printf "| %s | %s | %.3f | %.3f | %d | %.1f | %.1f | %.3f | %.0f× |", \
            name, mib, w, wm, n / w, rm, rx, r, (r > 0 ? w / r : 0) }')")
done

cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)"
echo
echo "Dry run (\`connect-provision run FILE --dry-run\`), median of ${RUNS} runs after a warm-up;"
echo "$(nproc) cores${cpu:+, ${cpu}}; $(rustc --version | cut -d' ' -f1-2); input: gen_customers.py, 1 invalid row per 1,000, 1 duplicate per 5,000."
echo
echo "| rows | input MiB | wall s (median) | wall s (min) | rows/s (median) | peak RSS MiB (median) | peak RSS MiB (max) | ${REF_NAME} s (median) | dry run / ${REF_NAME} |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for row in "${ROWS_OUT[@]}"; do
    echo "${row}"
done
