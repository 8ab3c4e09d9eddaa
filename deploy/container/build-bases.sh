#!/bin/sh
# Build local stand-ins for the two base images deploy/Containerfile uses, for a
# machine that can reach a Debian package mirror but no container registry:
#
#   localhost/connect-provision-runtime-base:bookworm
#       stand-in for debian:bookworm-slim: Debian bookworm
#       "minbase" (essential + required packages: sh, coreutils, passwd...), with
#       docs/man pages/locales left out the way the -slim images do.
#   localhost/connect-provision-build-base:bookworm
#       stand-in for rust:1.89-slim-bookworm: bookworm minbase
#       + gcc, libc6-dev, make, pkg-config, ca-certificates, plus a Rust
#       toolchain COPIED FROM THIS HOST (no toolchain can be downloaded here).
#       Whatever version the host's toolchain is (>= 1.89 required), that is
#       what compiles the image; it is NOT the official 1.89 image.
#
# Both are built with mmdebstrap into a tarball and imported with
# `podman import`. Needs root (or a working `mmdebstrap --mode=unshare`),
# mmdebstrap and podman.
#
# Environment (all optional):
#   SUITE            Debian suite (default bookworm)
#   APT_SOURCES      a sources.list file (one-line "deb URI SUITE COMPONENTS"
#                    entries) to build from. Default: the host's own apt
#                    sources for $SUITE, $SUITE-updates and $SUITE-security
#                    (main), read with `apt-get indextargets`. No mirror host
#                    is named in this script.
#   RUST_TOOLCHAIN   toolchain directory to copy into the build base
#                    (default: $RUSTUP_HOME/toolchains/stable-<host triple>,
#                    RUSTUP_HOME defaulting to ~/.rustup)
#   ONLY             "runtime" or "build" to make just one of the two
#   KEEP_TARBALLS    directory to keep the rootfs tarballs in (default: deleted)
# shellcheck disable=SC2016  # single-quoted $(...)/$1 are for apt and mmdebstrap's hook shell
set -eu

SUITE=${SUITE:-bookworm}
ARCH=$(dpkg --print-architecture)
RUNTIME_TAG=localhost/connect-provision-runtime-base:$SUITE
BUILD_TAG=localhost/connect-provision-build-base:$SUITE

for tool in mmdebstrap podman; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "build-bases.sh: $tool not found (apt-get install mmdebstrap podman)" >&2
        exit 2
    }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cp-bases.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

# --- apt sources ---------------------------------------------------------------
if [ -n "${APT_SOURCES:-}" ]; then
    cp "$APT_SOURCES" "$WORK/sources.list"
else
    # The host's configured Debian mirror(s) for this suite, as one-line entries.
    apt-get indextargets --format '$(SITE) $(RELEASE) $(COMPONENT)' 'Created-By: Packages' \
        | awk -v s="$SUITE" '$3 == "main" && ($2 == s || $2 == s "-updates" || $2 == s "-security") { print "deb " $1 " " $2 " main" }' \
        | sort -u >"$WORK/sources.list"
fi
if ! grep -q "^deb .* $SUITE main" "$WORK/sources.list"; then
    echo "build-bases.sh: no apt source for '$SUITE main' found; set APT_SOURCES" >&2
    exit 2
fi
echo "== apt sources used (from the host's apt configuration):"
sed 's/^/   /' "$WORK/sources.list"

# dpkg path excludes as in the official -slim images (copyright files kept).
# The "key=value" form matters: mmdebstrap applies only that form to the
# essential packages it unpacks itself.
cat >"$WORK/slim.dpkg.cfg" <<'CFG'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/groff/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/lintian/*
path-exclude=/usr/share/linda/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
CFG

# SOURCE_DATE_EPOCH makes mmdebstrap's output reproducible (for the same packages).
: "${SOURCE_DATE_EPOCH:=$(date +%s)}"
export SOURCE_DATE_EPOCH

# Merged /usr set up by mmdebstrap itself; without this hook bookworm's
# init-system-helpers pulls in usrmerge and, with it, the full perl (~50 MB).
MERGED_USR_HOOK=/usr/share/mmdebstrap/hooks/merged-usr

# mmdebstrap SUITE TARBALL [extra mmdebstrap options...]
debootstrap_tar() {
    suite=$1 tarball=$2
    shift 2
    if [ -d "$MERGED_USR_HOOK" ]; then set -- --hook-dir="$MERGED_USR_HOOK" "$@"; fi
    mmdebstrap --variant=minbase --architectures="$ARCH" \
        --dpkgopt="$WORK/slim.dpkg.cfg" \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log "$1"/var/log/apt/*' \
        "$@" \
        "$suite" "$tarball" "$WORK/sources.list"
}

# --- runtime base ----------------------------------------------------------------
case ${ONLY:-all} in all | runtime | build) ;; *) echo "build-bases.sh: ONLY must be runtime or build" >&2; exit 2 ;; esac

if [ "${ONLY:-all}" != build ]; then
    echo "== building $RUNTIME_TAG"
    debootstrap_tar "$SUITE" "$WORK/runtime.tar"
    podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' \
        --message "debian $SUITE minbase (mmdebstrap), stand-in for debian:$SUITE-slim" \
        "$WORK/runtime.tar" "$RUNTIME_TAG"
    if [ -n "${KEEP_TARBALLS:-}" ]; then cp "$WORK/runtime.tar" "$KEEP_TARBALLS/"; fi
fi

# --- build base ------------------------------------------------------------------
if [ "${ONLY:-all}" != runtime ]; then
    RUSTUP_HOME_HOST=${RUSTUP_HOME:-$HOME/.rustup}
    TRIPLE=$(uname -m)-unknown-linux-gnu
    TOOLCHAIN=${RUST_TOOLCHAIN:-$RUSTUP_HOME_HOST/toolchains/stable-$TRIPLE}
    if [ ! -x "$TOOLCHAIN/bin/cargo" ] || [ ! -x "$TOOLCHAIN/bin/rustc" ]; then
        echo "build-bases.sh: no Rust toolchain at $TOOLCHAIN (set RUST_TOOLCHAIN)" >&2
        exit 2
    fi
    echo "== building $BUILD_TAG with $("$TOOLCHAIN/bin/rustc" -V) from $TOOLCHAIN"
    # Same layout as the official rust images: RUSTUP_HOME=/usr/local/rustup,
    # CARGO_HOME=/usr/local/cargo, cargo/rustc on PATH via /usr/local/cargo/bin
    # (symlinks straight into the toolchain; no rustup proxy inside).
    # The toolchain's share/doc (~800 MB of HTML) is left out.
    debootstrap_tar "$SUITE" "$WORK/build.tar" \
        --include=ca-certificates,gcc,libc6-dev,make,pkg-config \
        --customize-hook="mkdir -p \"\$1\"/usr/local/rustup/toolchains/stable-$TRIPLE \"\$1\"/usr/local/cargo/bin" \
        --customize-hook="tar -C '$TOOLCHAIN' --exclude=./share/doc -cf - . | tar -C \"\$1\"/usr/local/rustup/toolchains/stable-$TRIPLE -xf -" \
        --customize-hook="for b in cargo rustc rustdoc; do ln -s ../../rustup/toolchains/stable-$TRIPLE/bin/\$b \"\$1\"/usr/local/cargo/bin/\$b; done" \
        --customize-hook='chroot "$1" env PATH=/usr/local/cargo/bin:/usr/bin:/bin sh -c "cargo -V && rustc -V && cc --version | head -n1"'
    podman import \
        --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
        --change 'ENV CARGO_HOME=/usr/local/cargo' \
        --change "ENV RUSTUP_TOOLCHAIN=stable-$TRIPLE" \
        --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' \
        --message "debian $SUITE minbase + gcc + host Rust toolchain, stand-in for rust:1.89-slim-$SUITE" \
        "$WORK/build.tar" "$BUILD_TAG"
    if [ -n "${KEEP_TARBALLS:-}" ]; then cp "$WORK/build.tar" "$KEEP_TARBALLS/"; fi
fi

echo "== done"
podman images --filter reference='localhost/connect-provision-*-base'
