#!/usr/bin/env bash
# Command-line tools the tests and benchmarks compare against or drive:
# zstd, curl and faketime (a run with a wrong clock). Idempotent and quiet when present.
set -euo pipefail
missing=()
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
if ((${#missing[@]})); then
    echo "tools.sh: apt-get install ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    }
fi
