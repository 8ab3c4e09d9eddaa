#!/bin/sh
# Build the connect-provision image from deploy/Containerfile with the local
# base images made by build-bases.sh (for a machine that cannot pull
# rust:1.89-slim-bookworm / debian:bookworm-slim). Where those can be pulled,
# this script is not needed: see README.md next to it.
#
# usage: deploy/container/build.sh [extra `podman build` options...]
#
# Environment (all optional):
#   TAG        image tag (default connect-provision:<version in Cargo.toml>)
#   SUITE      tag of the local base images (default bookworm)
#   FROM_GIT   build a committed tree instead of the working tree, e.g.
#              FROM_GIT=HEAD: `git archive` of that commit is the build
#              context (deploy/Containerfile and .containerignore are still
#              taken from the working tree). Use it while the working tree is
#              being edited; the image's revision label is then that commit.
#   VENDOR     VENDOR=1: run `cargo vendor --locked --offline` on this host
#              (from its own cargo cache, into a temporary copy of the
#              context, never into the repository) and add a
#              .cargo/config.toml that points cargo at vendor/, so the build
#              stage needs no network. For a machine whose HTTPS egress the
#              build base's CA bundle cannot verify (e.g. a TLS-intercepting
#              proxy), or no access to the crate registry at all. Needs the host's cargo
#              to have fetched the locked crates already.
#
# Without VENDOR, compiling needs the crate registry (the build stage runs `cargo build
# --locked`); crates are kept in a build cache mount, so a rebuild does not
# fetch again.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SUITE=${SUITE:-bookworm}
VERSION=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$ROOT/Cargo.toml" | head -n 1)
TAG=${TAG:-connect-provision:$VERSION}
BUILD_IMAGE=localhost/connect-provision-build-base:$SUITE
RUNTIME_IMAGE=localhost/connect-provision-runtime-base:$SUITE

for image in "$BUILD_IMAGE" "$RUNTIME_IMAGE"; do
    podman image exists "$image" || {
        echo "build.sh: $image not found; run deploy/container/build-bases.sh first" >&2
        exit 2
    }
done

CONTEXT=$ROOT
REVISION=
if [ -n "${FROM_GIT:-}" ] || [ -n "${VENDOR:-}" ]; then
    CONTEXT=$(mktemp -d "${TMPDIR:-/tmp}/connect-provision-context.XXXXXX")
    trap 'rm -rf "$CONTEXT"' EXIT INT TERM
fi
if [ -n "${FROM_GIT:-}" ]; then
    REVISION=$(git -C "$ROOT" rev-parse --verify "$FROM_GIT^{commit}")
    git -C "$ROOT" archive "$REVISION" | tar -x -C "$CONTEXT"
    mkdir -p "$CONTEXT/deploy"
    cp "$ROOT/deploy/Containerfile" "$CONTEXT/deploy/Containerfile"
    cp "$ROOT/.containerignore" "$CONTEXT/.containerignore"
    echo "build.sh: building commit $REVISION (context $CONTEXT)"
else
    if git -C "$ROOT" rev-parse --verify -q HEAD >/dev/null 2>&1 &&
        [ -z "$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock)" ]; then
        # The working tree's sources match HEAD: label that commit.
        REVISION=$(git -C "$ROOT" rev-parse HEAD)
    fi
    if [ "$CONTEXT" != "$ROOT" ]; then
        # A copy of the working tree (tracked + untracked, minus .gitignore'd).
        (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
            tar --null --ignore-failed-read -T - -cf -) | tar -x -C "$CONTEXT"
    fi
fi

if [ -n "${VENDOR:-}" ]; then
    [ ! -e "$CONTEXT/.cargo/config.toml" ] || {
        echo "build.sh: VENDOR=1 but the tree has its own .cargo/config.toml; merge by hand" >&2
        exit 2
    }
    mkdir -p "$CONTEXT/.cargo"
    (cd "$CONTEXT" && cargo vendor --locked --offline --versioned-dirs vendor) \
        >"$CONTEXT/.cargo/config.toml"
    echo "build.sh: vendored $(find "$CONTEXT/vendor" -mindepth 1 -maxdepth 1 -type d | wc -l) crates into the build context"
fi

set -x
podman build \
    -f "$CONTEXT/deploy/Containerfile" \
    --pull=never \
    --build-arg BUILD_IMAGE="$BUILD_IMAGE" \
    --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" \
    --build-arg VERSION="$VERSION" \
    --build-arg REVISION="$REVISION" \
    -t "$TAG" \
    "$@" \
    "$CONTEXT"
