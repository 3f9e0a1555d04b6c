#!/usr/bin/env bash
# Installs PostgreSQL 15 (server + client tools: initdb, pg_ctl, pg_dump,
# pg_dumpall, pg_basebackup, pg_restore, psql, pgbench) for the end-to-end
# tests. Idempotent and silent when everything is already there; runs
# `apt-get update` only when the package lists cannot provide the packages.
#
# Debian's postinst creates a "main" cluster but cannot start it here
# (policy-rc.d); the tests never use it: they start their own clusters.
set -euo pipefail

MAJOR=15
BIN=/usr/lib/postgresql/$MAJOR/bin
PACKAGES=(postgresql-$MAJOR postgresql-client-$MAJOR)

have_all() {
    local tool
    for tool in initdb pg_ctl postgres pg_dump pg_dumpall pg_basebackup pg_restore psql pgbench pg_verifybackup; do
        [ -x "$BIN/$tool" ] || return 1
    done
}

if have_all; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
    command -v sudo >/dev/null || {
        echo "tests/install/postgres.sh: PostgreSQL $MAJOR is missing and this is not root; run it as root" >&2
        exit 1
    }
else
    SUDO=
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() {
    $SUDO apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

echo "installing ${PACKAGES[*]}..." >&2
# A candidate in the current lists means no update is needed.
if ! apt-cache policy "${PACKAGES[@]}" 2>/dev/null | grep -q 'Candidate: [0-9]' || ! apt_install; then
    $SUDO apt-get update -q >/dev/null
    apt_install
fi

have_all || {
    echo "tests/install/postgres.sh: installed ${PACKAGES[*]} but $BIN is still incomplete" >&2
    exit 1
}
echo "PostgreSQL $MAJOR installed in $BIN" >&2
