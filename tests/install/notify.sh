#!/usr/bin/env bash
# Installs what the notifier plugins' tests need; safe to run again.
#   - a Python venv with aiosmtpd (the real SMTP server the smtp tests start),
#     at $OFFSITE_VENV, else ${OFFSITE_CACHE:-$HOME/.cache/offsite}/venv;
#     the webhook sink (tests/harness/http_sink.py) needs only python3 itself
#   - openssl (the STARTTLS tests make a self-signed certificate with `openssl req`)
#   - clang (ring, the TLS provider inside the smtp plugin, compiles C for
#     wasm32 with it; gcc cannot target wasm32)
#   - the wasm32-wasip2 Rust target
set -euo pipefail

cache="${OFFSITE_CACHE:-$HOME/.cache/offsite}"
venv="${OFFSITE_VENV:-$cache/venv}"

missing=()
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# Debian's python3 needs python3-venv for `python3 -m venv` (ensurepip).
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
if ((${#missing[@]})); then
    echo "notify.sh: apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "notify.sh: creating venv $venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import aiosmtpd' >/dev/null 2>&1; then
    echo "notify.sh: pip install aiosmtpd into $venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check aiosmtpd
    "$venv/bin/python" -c 'import aiosmtpd; print("notify.sh: aiosmtpd", aiosmtpd.__version__, "ready in '"$venv"'")'
fi
