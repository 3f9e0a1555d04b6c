#!/usr/bin/env bash
# Installs what the s3 plugin's tests and bench need; safe to run again.
#   - moto (its `moto_server` is the real S3 API server the tests start) and
#     boto3 (the harness creates buckets and thousands of objects with it)
#     in the venv at $OFFSITE_VENV, else ${OFFSITE_CACHE:-$HOME/.cache/offsite}/venv
#   - awscli and rclone: the native clients plugins/s3/bench.sh compares with
#   - the wasm32-wasip2 Rust target
set -euo pipefail

cache="${OFFSITE_CACHE:-$HOME/.cache/offsite}"
venv="${OFFSITE_VENV:-$cache/venv}"

missing=()
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# Debian's python3 needs python3-venv for `python3 -m venv` (ensurepip).
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
# Debian's own packages, not whatever a PATH shim provides.
[[ -x /usr/bin/aws ]] || missing+=(awscli)
[[ -x /usr/bin/rclone ]] || missing+=(rclone)
if ((${#missing[@]})); then
    echo "s3.sh: apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "s3.sh: creating venv $venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
fi
if [[ ! -x "$venv/bin/moto_server" ]] || ! "$venv/bin/python" -c 'import moto, boto3, flask' >/dev/null 2>&1; then
    echo "s3.sh: pip install moto[server] boto3 into $venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "moto[server]" boto3
fi
"$venv/bin/python" -c 'import moto, boto3; print("s3.sh: moto", moto.__version__, "boto3", boto3.__version__, "ready in '"$venv"'")'
