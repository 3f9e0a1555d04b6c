#!/usr/bin/env bash
# Installs componentize-py (PyPI, pinned), which builds Python plugins into
# wasm32-wasip2 components (`offsite plugins new NAME --lang python`), in the
# venv at $OFFSITE_VENV, else ${OFFSITE_CACHE:-$HOME/.cache/offsite}/venv.
# Safe to run again; quiet when it is there.
set -euo pipefail

version=0.25.1
cache="${OFFSITE_CACHE:-$HOME/.cache/offsite}"
venv="${OFFSITE_VENV:-$cache/venv}"

if [[ ! -x "$venv/bin/python3" ]]; then
    python3 -m venv "$venv"
fi
if [[ "$("$venv/bin/componentize-py" --version 2>/dev/null)" != *"$version"* ]]; then
    echo "componentize.sh: pip install componentize-py==$version into $venv"
    "$venv/bin/pip" install -q "componentize-py==$version"
fi
