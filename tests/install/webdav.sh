#!/usr/bin/env bash
# Installs the WebDAV server the plugin-kit tests start on 127.0.0.1:
# wsgidav on cheroot (both from PyPI), in the venv at $OFFSITE_VENV, else
# ${OFFSITE_CACHE:-$HOME/.cache/offsite}/venv. Safe to run again; quiet when
# everything is there.
set -euo pipefail

cache="${OFFSITE_CACHE:-$HOME/.cache/offsite}"
venv="${OFFSITE_VENV:-$cache/venv}"

if [[ ! -x "$venv/bin/python3" ]]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python3" -c 'import wsgidav, cheroot' >/dev/null 2>&1; then
    echo "webdav.sh: pip install wsgidav cheroot into $venv"
    "$venv/bin/pip" install -q 'wsgidav>=4.3,<5' 'cheroot>=10'
fi
