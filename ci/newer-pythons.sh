#!/usr/bin/env bash
# Run the test suite on the Pythons pyenv does not have here (3.14, 3.15),
# from Debian's own packages, inside a debootstrap chroot.
#
#   sudo ci/newer-pythons.sh [VERSION ...]      (default: 3.14 3.15)
#   sudo ci/newer-pythons.sh --build-only       (build the chroot, run nothing)
#
# MPGUARD_CHROOT_RUN replaces the test command, run in the venv from the
# checkout's root, e.g. the benchmarks on 3.14:
#
#   MPGUARD_CHROOT_RUN="python benchmarks/bench_pool.py --methods forkserver" \
#       ci/newer-pythons.sh 3.14
#
# Why a chroot: Debian's python3.14/python3.15 packages need a newer libc
# than the host release has, so they cannot simply be apt-installed here.
# The chroot is built once (about 3 minutes) and cached in
# $MPGUARD_CHROOT (default /var/cache/mpguard/chroot-$SUITE); delete it to
# rebuild.  Every mount this script makes is unmounted on exit, failure
# included.
#
# Suite: Debian testing ("forky"), not unstable ("sid"): both carry 3.14
# and 3.15, but testing only takes packages that spent days in unstable
# without a release-critical bug, so a CI rebuild changes less often.
# Override with MPGUARD_CHROOT_SUITE=sid.
#
# Needs root, debootstrap (apt-get install debootstrap) and the Debian
# archive; the mirror is the host's own (its apt sources) unless
# MPGUARD_DEBIAN_MIRROR is set.  pip inside the chroot uses the host's pip
# configuration and certificate files, so it reaches the same registry.
set -euo pipefail

build_only=0
if [ "${1:-}" = --build-only ]; then
    build_only=1
    shift
fi
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.14 3.15)

suite=${MPGUARD_CHROOT_SUITE:-forky}
root=${MPGUARD_CHROOT:-/var/cache/mpguard/chroot-$suite}
src=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "newer-pythons: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, mount, chroot)"
command -v debootstrap >/dev/null || die "needs debootstrap (apt-get install debootstrap)"

mirror=${MPGUARD_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    # The host's main Debian archive: not a snapshot, not the security one.
    mirror=$(grep -rhsoE 'https?://[^ ]+/debian/?' /etc/apt/sources.list \
        /etc/apt/sources.list.d/ | grep -v -e snapshot -e security | head -n 1 || true)
    [ -n "$mirror" ] || die "no Debian mirror in the host's apt sources; set MPGUARD_DEBIAN_MIRROR"
fi

# Every Python the project tests goes into the one cached chroot, whichever
# of them this call runs.
# redis-server: the Celery tests start a real one.
packages=ca-certificates,redis-server
for v in 3.14 3.15; do packages="$packages,python$v,python$v-venv"; done

if [ ! -e "$root/.mpguard-ready" ] || [ "$(cat "$root/.mpguard-ready")" != "$packages" ]; then
    echo "== building the $suite chroot in $root ($packages)"
    rm -rf "$root.tmp"
    mkdir -p "$(dirname "$root")"
    # The sid script serves every later suite (it is what debootstrap
    # itself links testing names to).
    debootstrap --variant=minbase --include="$packages" \
        "$suite" "$root.tmp" "$mirror" /usr/share/debootstrap/scripts/sid \
        > "$root.log" 2>&1 || { tail -n 20 "$root.log" >&2; die "debootstrap failed (log: $root.log)"; }
    rm -rf "$root"
    mv "$root.tmp" "$root"
    echo "$packages" > "$root/.mpguard-ready"
fi
[ "$build_only" = 0 ] || exit 0

mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount -l "${mounted[$i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT

bind() {  # bind SRC DST [ro]
    mkdir -p "$2"
    mount --bind "$1" "$2"
    mounted+=("$2")
    if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}

mkdir -p "$root/proc"
mount -t proc proc "$root/proc"
mounted+=("$root/proc")
bind /sys "$root/sys"
bind /dev "$root/dev"
bind /dev/pts "$root/dev/pts"   # without it os.forkpty() fails
bind /dev/shm "$root/dev/shm"   # POSIX semaphores (multiprocessing locks)
bind "$src" "$root/src"

# The host's pip configuration and the certificate files it names, at the
# same paths, and the name resolver.
for f in /etc/pip.conf /etc/xdg/pip/pip.conf /etc/xdg/pip/constraints.txt \
    "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" /etc/resolv.conf; do
    if [ -n "$f" ] && [ -f "$f" ]; then
        mkdir -p "$root$(dirname "$f")"
        cp -L "$f" "$root$f"
    fi
done

run=${MPGUARD_CHROOT_RUN:-python -m pytest -q -p no:cacheprovider}

status=0
for v in "${versions[@]}"; do
    echo "== python $v (Debian $suite, chroot)"
    venv=/tmp/venv-$v
    # The suite's pytest cache and bytecode stay out of the bind-mounted tree.
    if ! chroot "$root" /usr/bin/env -i \
        PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
        CI="${CI:-}" MPGUARD_REQUIRE_REDIS="${MPGUARD_REQUIRE_REDIS:-}" PIP_CERT="${PIP_CERT:-}" SSL_CERT_FILE="${SSL_CERT_FILE:-}" \
        PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
        /bin/sh -c "set -e; cd /src; rm -rf $venv; python$v -m venv $venv; \
            $venv/bin/pip install -q -e '.[test]'; \
            PATH=$venv/bin:\$PATH; python --version; $run"; then
        status=1
    fi
done
exit $status
