#!/usr/bin/env bash
# pgBackRest, the tool bench/wal.sh measures `offsite wal-push`/`wal-fetch`
# against (archive-push/archive-get). Idempotent and quiet when present.
set -euo pipefail
if ! command -v pgbackrest >/dev/null 2>&1; then
    echo "pgbackrest.sh: apt-get install pgbackrest" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends pgbackrest >/dev/null 2>&1 || {
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends pgbackrest >/dev/null
    }
fi
