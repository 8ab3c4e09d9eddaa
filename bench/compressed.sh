#!/usr/bin/env bash
# Dry-run speed on a compressed input against the same file plain, in one
# run on the same machine: for each of RUNS rounds (alternated order), a dry
# run of the ROWS-row file (bench/gen_customers.py, an invalid row every 1000,
# a duplicate every 5000), of it gzipped (gzip -6) and of it zstd'd (zstd -3).
# Prints the median rows/s of each and the median of the per-round ratios.
#
# Usage: bench/compressed.sh [BIN]      (env: RUNS ROWS)
set -euo pipefail

cd "$(dirname "$0")/.."
BIN="${1:-target/release/connect-provision}"
RUNS="${RUNS:-7}"
ROWS="${ROWS:-1000000}"
WORK="$(mktemp -d -t compressed-bench.XXXXXX)"
trap 'rm -rf "${WORK}"' EXIT

mkdir -p bench/data
PLAIN="bench/data/customers_${ROWS}.csv"
[ -f "${PLAIN}" ] || python3 bench/gen_customers.py "${ROWS}" --invalid-every 1000 \
    --duplicate-every 5000 --out "${PLAIN}"
gzip -6 -c "${PLAIN}" >"${WORK}/in.csv.gz"
zstd -3 -q -c "${PLAIN}" >"${WORK}/in.csv.zst"
cp "${BIN}" "${WORK}/bin"

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

one() { # name input
    local start end
    rm -rf "${WORK}/out"
    start=$(date +%s.%N)
    "${WORK}/bin" run "$2" --dry-run --out "${WORK}/out" --no-progress >/dev/null 2>&1 || true
    end=$(date +%s.%N)
    [ -f "${WORK}/out/summary.json" ] || { echo "no summary for $1" >&2; exit 1; }
    awk -v s="${start}" -v e="${end}" -v n="${ROWS}" 'BEGIN { print n / (e - s) }' >>"${WORK}/$1"
}

for r in $(seq 1 "${RUNS}"); do
    if [ $((r % 2)) -eq 1 ]; then order="plain gz zst"; else order="zst gz plain"; fi
    for k in ${order}; do
        case "${k}" in
            plain) one plain "${PLAIN}" ;;
            gz) one gz "${WORK}/in.csv.gz" ;;
            zst) one zst "${WORK}/in.csv.zst" ;;
        esac
    done
    echo "round ${r}/${RUNS} done" >&2
done

ratio() { paste "${WORK}/plain" "${WORK}/$1" | awk '{ print $2 / $1 }' | median; }
printf '| input (%s rows, %s rounds) | size MB | rows/s (median) | / plain (median of the rounds) |\n' "${ROWS}" "${RUNS}"
printf '|---|---:|---:|---:|\n'
for k in plain gz zst; do
    case "${k}" in
        plain) f="${PLAIN}" ;; gz) f="${WORK}/in.csv.gz" ;; zst) f="${WORK}/in.csv.zst" ;;
    esac
    size=$(stat -c %s "${f}")
    r=$([ "${k}" = plain ] && echo 1 || ratio "${k}")
    printf '| %s | %.1f | %.0f | %.3f |\n' "${k}" "$(echo "${size} / 1000000" | bc -l)" \
        "$(median <"${WORK}/${k}")" "${r}"
done
