#!/usr/bin/env bash
# Installs the two TFTP servers the tftp tests and bench run against:
# tftpd-hpa (in.tftpd) and atftpd. Debian packages them as conflicting, so
# neither is installed system-wide: each .deb is downloaded and unpacked with
# `dpkg -x` into its own folder, and only their shared library (libwrap0) is
# installed through apt. Idempotent: quiet when everything is already there.
#
#   ${OFFSITE_CACHE:-$HOME/.cache/offsite}/tools/tftpd-hpa/usr/sbin/in.tftpd
#   ${OFFSITE_CACHE:-$HOME/.cache/offsite}/tools/atftpd/usr/sbin/atftpd
#
# The tests look there, or at $OFFSITE_IN_TFTPD / $OFFSITE_ATFTPD.
# Prints the two paths on success.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

cache="${OFFSITE_CACHE:-$HOME/.cache/offsite}"
tools="$cache/tools"

log() { echo "tftp.sh: $*" >&2; }

updated=0
apt_update_once() {
    if [ "$updated" = 0 ]; then
        log "apt-get update"
        apt-get update -qq >/dev/null
        updated=1
    fi
}

need_root() {
    if [ "$(id -u)" != 0 ]; then
        log "must run as root to install $1 (or set OFFSITE_IN_TFTPD / OFFSITE_ATFTPD)"
        exit 1
    fi
}

# Shared library both servers link against.
if ! dpkg-query -W -f='${Status}' libwrap0 2>/dev/null | grep -q 'install ok installed'; then
    need_root libwrap0
    log "installing libwrap0"
    if ! apt-get install -y -qq --no-install-recommends libwrap0 >/dev/null 2>&1; then
        apt_update_once
        apt-get install -y -qq --no-install-recommends libwrap0 >/dev/null
    fi
fi

# extract PKG BINARY: unpack PKG's .deb into $tools/PKG unless BINARY is there.
extract() {
    local pkg="$1" bin="$2" dest="$tools/$1"
    if [ -x "$dest/$bin" ]; then
        return 0
    fi
    local work
    work="$(mktemp -d)"
    log "downloading and unpacking $pkg into $dest"
    if ! (cd "$work" && apt-get download -qq "$pkg" >/dev/null 2>&1); then
        apt_update_once
        (cd "$work" && apt-get download -qq "$pkg" >/dev/null)
    fi
    rm -rf "$dest.tmp"
    mkdir -p "$dest.tmp"
    dpkg -x "$work"/"$pkg"_*.deb "$dest.tmp"
    rm -rf "$work" "$dest"
    mv "$dest.tmp" "$dest"
    if [ ! -x "$dest/$bin" ]; then
        log "$pkg unpacked but $dest/$bin is missing"
        exit 1
    fi
}

mkdir -p "$tools"
extract tftpd-hpa usr/sbin/in.tftpd
extract atftpd usr/sbin/atftpd

# Smoke check: both binaries load (libraries resolved).
if ! "$tools/tftpd-hpa/usr/sbin/in.tftpd" -V >/dev/null 2>&1; then
    log "$tools/tftpd-hpa/usr/sbin/in.tftpd does not run:"
    "$tools/tftpd-hpa/usr/sbin/in.tftpd" -V || true
    exit 1
fi
if ldd "$tools/atftpd/usr/sbin/atftpd" | grep -q 'not found'; then
    log "$tools/atftpd/usr/sbin/atftpd is missing libraries:"
    ldd "$tools/atftpd/usr/sbin/atftpd" | grep 'not found' >&2
    exit 1
fi

echo "$tools/tftpd-hpa/usr/sbin/in.tftpd"
echo "$tools/atftpd/usr/sbin/atftpd"
