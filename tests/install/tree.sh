#!/usr/bin/env bash
# What the file-tree tests (tests/e2e/trees.rs) compare against: GNU tar
# (with ACL and xattr support) and diff; getfacl/getfattr to look at a tree
# by hand when a comparison fails. Idempotent and quiet when present.
set -euo pipefail
missing=()
command -v tar >/dev/null 2>&1 || missing+=(tar)
command -v diff >/dev/null 2>&1 || missing+=(diffutils)
command -v getfacl >/dev/null 2>&1 || missing+=(acl)
command -v getfattr >/dev/null 2>&1 || missing+=(attr)
if ((${#missing[@]})); then
    echo "tree.sh: apt-get install ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    }
fi
