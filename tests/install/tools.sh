#!/usr/bin/env bash
# Command-line tools the tests and benchmarks compare against or drive:
# zstd and curl; GNU tar and diff (tests/e2e/trees.rs compares with their
# results), getfacl/getfattr to look at a tree by hand when a comparison
# fails. Idempotent and quiet when present.
set -euo pipefail
missing=()
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
command -v tar >/dev/null 2>&1 || missing+=(tar)
command -v diff >/dev/null 2>&1 || missing+=(diffutils)
command -v getfacl >/dev/null 2>&1 || missing+=(acl)
command -v getfattr >/dev/null 2>&1 || missing+=(attr)
if ((${#missing[@]})); then
    echo "tools.sh: apt-get install ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    }
fi
