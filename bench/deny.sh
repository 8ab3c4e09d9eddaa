#!/usr/bin/env bash
# Supply-chain checks with cargo-deny, configured by deny.toml:
#   licenses, bans (duplicates warn; wildcards denied), sources (the crate registry only)
#     offline, and must pass;
#   advisories (RustSec) needs the advisory database from GitHub. When it
#     cannot be fetched the check is skipped with a clear note (exit 0 for
#     that part); if an older local copy exists it is used instead.
#
# Usage: bench/deny.sh        (env: DENY_FETCH_TIMEOUT, seconds, default 120)
# Installs cargo-deny with `cargo install cargo-deny --locked` if missing.
set -euo pipefail

cd "$(dirname "$0")/.."
FETCH_TIMEOUT="${DENY_FETCH_TIMEOUT:-120}"

if ! cargo deny --version >/dev/null 2>&1; then
    echo "deny.sh: installing cargo-deny (cargo install cargo-deny --locked)" >&2
    cargo install cargo-deny --locked
fi
echo "deny.sh: $(cargo deny --version)"

echo "deny.sh: licenses, bans, sources (offline)"
cargo deny --offline check licenses bans sources

echo "deny.sh: advisories"
log="$(mktemp)"
trap 'rm -f "${log}"' EXIT
set +e
timeout "${FETCH_TIMEOUT}" cargo deny check advisories >"${log}" 2>&1
rc=$?
set -e
if [ "${rc}" -eq 0 ]; then
    cat "${log}"
    echo "deny.sh: advisories ok"
    exit 0
fi
if [ "${rc}" -ne 124 ] && ! grep -qiE "failed to (fetch|clone|open) advisory|unable to access|could not resolve host|failed to load advisory database" "${log}"; then
    # The database was there and an advisory (or a config error) failed the check.
    cat "${log}"
    echo "deny.sh: advisories FAILED" >&2
    exit "${rc}"
fi
db_root="${CARGO_HOME:-${HOME}/.cargo}/advisory-dbs"
if compgen -G "${db_root}/advisory-db-*/crates" >/dev/null; then
    echo "deny.sh: RustSec database unreachable; using the local copy in ${db_root} (may be stale)"
    cargo deny check --disable-fetch advisories
    echo "deny.sh: advisories ok (stale database)"
else
    echo "deny.sh: advisories skipped: RustSec database unreachable (https://github.com/rustsec/advisory-db)."
    echo "deny.sh: run 'cargo deny check advisories' where GitHub is reachable (CI does)."
fi
