#!/usr/bin/env bash
# Validate the Kubernetes manifests offline.
#
#   deploy/validate.sh                 every *.yaml under deploy/kubernetes/
#   deploy/validate.sh FILE|DIR ...    those files / directories instead
#
# For each file, every document in it is validated against the Kubernetes
# JSON schemas with `kubernetes-validate --strict` (unknown fields are errors),
# for each version in K8S_VERSIONS. The schemas ship inside the PyPI package,
# so nothing is fetched at validation time; only the first run installs the
# package, pinned, into a cached virtualenv.
#
# Also checked, per file:
# - a file must hold at least one resource, and every resource must have a
#   schema (a misspelled kind or apiVersion is an error, not a warning);
# - the client secret is only ever mounted as a file: no `secretKeyRef`,
#   `secretRef` (envFrom) or CONNECT_CLIENT_SECRET outside comments;
# - `sh -c` scripts in containers' commands parse (`sh -n`), and a
#   ConfigMap's *.toml values parse as TOML;
# - what the schemas leave to the API server, for the fields relied on here:
#   podFailurePolicy actions and operators, restartPolicy Never with it,
#   FailIndex only with backoffLimitPerIndex, CronJob concurrencyPolicy;
# - kustomization.yaml (no Kubernetes schema) lists files that exist, and
#   not secret.example.yaml (applying it would overwrite the real Secret);
#   where kubectl is installed, `kubectl kustomize` (local only) builds it.
#
# Prints one line per file; exits non-zero if any file fails.
set -euo pipefail

# kubernetes-validate pinned to an exact version; it bundles schemas for
# Kubernetes 1.25 to 1.37.
KV_VERSION=1.37.0
# 1.33: the oldest release where everything used is GA or on by default
# (CronJob timeZone 1.27, podFailurePolicy 1.31, backoffLimitPerIndex 1.33,
# podReplacementPolicy beta since 1.29); its schema also requires
# onPodConditions[].status, which 1.34+ made optional. 1.37: the newest
# schema bundled, to catch removals.
K8S_VERSIONS=(1.33.0 1.37.0)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/connect-provision"
venv="$cache/kubernetes-validate-$KV_VERSION"

# --- the validator, installed once into a cached venv ---------------------
# The venv counts as installed only once `.complete` is written, so an
# interrupted install is redone rather than half-used.
if [[ ! -f "$venv/.complete" ]]; then
    echo "installing kubernetes-validate==$KV_VERSION into $venv" >&2
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv" || {
        echo "error: python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 2
    }
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION" >&2
    touch "$venv/.complete"
fi
kv="$venv/bin/kubernetes-validate"
py="$venv/bin/python"
if [[ "$("$kv" --version 2>/dev/null)" != "$KV_VERSION"* ]]; then
    echo "error: $kv is not version $KV_VERSION" >&2
    exit 2
fi

# --- which files ----------------------------------------------------------
files=()
[[ $# -gt 0 ]] || set -- "$here/kubernetes"
for arg in "$@"; do
    if [[ -d "$arg" ]]; then
        while IFS= read -r f; do files+=("$f"); done < <(find "$arg" -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
    elif [[ -f "$arg" ]]; then
        files+=("$arg")
    else
        echo "error: no such file or directory: $arg" >&2
        exit 2
    fi
done
if [[ ${#files[@]} -eq 0 ]]; then
    echo "error: no YAML files found in: $*" >&2
    exit 2
fi

# Checks that need the YAML parsed: kustomization lists, sh -c scripts.
# Prints problems, one per line; prints nothing when the file is fine.
read -r -d '' structural <<'PY' || true
import os, subprocess, sys, yaml

path = sys.argv[1]
problems = []
try:
    docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
except yaml.YAMLError as e:
    print(f"not YAML: {e}".replace("\n", " "))
    sys.exit()

def walk(node, trail):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, trail + [str(k)])
        if isinstance(node.get("command"), list) and node.get("image"):
            yield trail, node
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, trail + [str(i)])

for doc in docs:
    if doc.get("kind") == "Kustomization":
        for r in doc.get("resources", []):
            if r == "secret.example.yaml" or r.endswith("/secret.example.yaml"):
                problems.append(f"kustomization lists {r}: apply -k would overwrite the real Secret")
            elif "://" not in r and not os.path.exists(os.path.join(os.path.dirname(path), r)):
                problems.append(f"kustomization lists {r}, which does not exist")
        continue
    if doc.get("kind") == "ConfigMap":
        for key, text in (doc.get("data") or {}).items():
            if key.endswith(".toml"):
                try:
                    import tomllib
                except ImportError:  # Python < 3.11: skip this check
                    break
                try:
                    tomllib.loads(text)
                except tomllib.TOMLDecodeError as e:
                    problems.append(f"data.{key}: not valid TOML: {e}")
    for trail, container in walk(doc, []):
        cmd = container["command"]
        if len(cmd) >= 3 and cmd[0] in ("sh", "/bin/sh") and cmd[1] == "-c":
            r = subprocess.run(["sh", "-n"], input=cmd[2], text=True, capture_output=True)
            if r.returncode != 0:
                where = ".".join(trail)
                problems.append(f"{where}: sh -c script does not parse: {r.stderr.strip()}")
    # What the schemas leave to the API server (enums, cross-field rules),
    # for the Job fields this directory relies on.
    job = doc.get("spec", {}) if doc.get("kind") == "Job" else \
        doc.get("spec", {}).get("jobTemplate", {}).get("spec", {}) if doc.get("kind") == "CronJob" else None
    if doc.get("kind") == "CronJob":
        cp = doc.get("spec", {}).get("concurrencyPolicy")
        if cp not in (None, "Allow", "Forbid", "Replace"):
            problems.append(f"concurrencyPolicy: {cp!r} is not Allow, Forbid or Replace")
    if job and job.get("podFailurePolicy"):
        pod = job.get("template", {}).get("spec", {})
        if pod.get("restartPolicy") != "Never":
            problems.append("podFailurePolicy needs the pod template's restartPolicy: Never")
        for i, rule in enumerate(job["podFailurePolicy"].get("rules", [])):
            action = rule.get("action")
            if action not in ("FailJob", "FailIndex", "Ignore", "Count"):
                problems.append(f"podFailurePolicy.rules.{i}.action: {action!r} is not FailJob, FailIndex, Ignore or Count")
            if action == "FailIndex" and job.get("backoffLimitPerIndex") is None:
                problems.append(f"podFailurePolicy.rules.{i}: FailIndex needs backoffLimitPerIndex")
            codes = rule.get("onExitCodes")
            if codes and codes.get("operator") not in ("In", "NotIn"):
                problems.append(f"podFailurePolicy.rules.{i}.onExitCodes.operator: {codes.get('operator')!r} is not In or NotIn")
            if codes and codes.get("operator") == "In" and 0 in codes.get("values", []):
                problems.append(f"podFailurePolicy.rules.{i}.onExitCodes: exit code 0 is not allowed with In")
for p in problems:
    print(p)
PY

# --- validate -------------------------------------------------------------
failed=0
for f in "${files[@]}"; do
    name="${f#"$here"/}"
    errors=()

    # The secret only as a file: nothing that turns it into an environment
    # variable, outside comments (a '#' before the word on its line).
    while IFS= read -r hit; do
        errors+=("secret exposed as env (line ${hit%%:*}): ${hit#*:}")
    done < <(grep -nE '^[^#]*(secretKeyRef|secretRef|CONNECT_CLIENT_SECRET)' "$f" || true)

    while IFS= read -r p; do
        [[ -n "$p" ]] && errors+=("$p")
    done < <("$py" -c "$structural" "$f")

    is_kustomization=0
    if grep -qE '^kind:[[:space:]]*Kustomization[[:space:]]*$' "$f"; then
        is_kustomization=1
    fi

    resources=0
    if [[ $is_kustomization -eq 0 ]]; then
        for v in "${K8S_VERSIONS[@]}"; do
            set +e
            out="$("$kv" --strict -k "$v" "$f" 2>&1)"
            rc=$?
            set -e
            resources="$(grep -c ' passed for resource ' <<<"$out" || true)"
            # Fine only with exit 0, no ERROR or WARN (a WARN is a kind or
            # apiVersion without a schema) and at least one resource.
            if [[ $rc -ne 0 || $resources -eq 0 ]] || grep -qE '^(ERROR|WARN)' <<<"$out"; then
                before=${#errors[@]}
                while IFS= read -r line; do
                    [[ -n "$line" && "$line" != *' passed for resource '* ]] || continue
                    errors+=("k8s $v: ${line/"$f" /}")
                done <<<"$out"
                [[ ${#errors[@]} -gt $before ]] || errors+=("k8s $v: no resources in file")
            fi
        done
    fi

    # Where kubectl is installed, also build the kustomization (offline).
    built=""
    if [[ $is_kustomization -eq 1 ]] && command -v kubectl >/dev/null 2>&1; then
        if out="$(kubectl kustomize "$(dirname "$f")" 2>&1 >/dev/null)"; then
            built=", kubectl kustomize builds"
        else
            errors+=("kubectl kustomize: ${out//$'\n'/ }")
        fi
    fi

    if [[ ${#errors[@]} -eq 0 ]]; then
        if [[ $is_kustomization -eq 1 ]]; then
            printf 'ok    %s (kustomization: listed files exist%s)\n' "$name" "$built"
        else
            printf 'ok    %s (%d resource(s), k8s %s, strict)\n' "$name" "$resources" "${K8S_VERSIONS[*]}"
        fi
    else
        failed=$((failed + 1))
        printf 'FAIL  %s: %s\n' "$name" "${errors[0]}"
        for e in "${errors[@]:1}"; do printf '      %s\n' "$e"; done
    fi
done

if [[ $failed -gt 0 ]]; then
    echo "$failed of ${#files[@]} file(s) failed (kubernetes-validate $KV_VERSION)" >&2
    exit 1
fi
echo "all ${#files[@]} file(s) valid (kubernetes-validate $KV_VERSION, k8s ${K8S_VERSIONS[*]})"
