#!/usr/bin/env bash
# A `format = "snapshot"` job (pg_basebackup, zstd level 3, one generation
# file) against `pgbackrest backup --type=full` (zstd level 3, local
# repository, its default process-max=1) of the same PostgreSQL 15 cluster
# of at least 1 GiB (pgbench -i, scale $SCALE), one run each, both as the
# server's user. Prints wall time and peak RSS of each and offsite's as a
# ratio of pgBackRest's. Peak RSS is GNU time's %M: the largest of the
# process and the descendants it waited for (pg_basebackup for offsite,
# pgBackRest's local worker), not their sum; the server's own work
# (walsender, checkpointer) is not in either. Measures, never fails on a
# slow result; fails when a step fails or the cluster is under 1 GiB.
#
# Usage: bench/snapshot.sh    Env: SCALE (70), OFFSITE_BIN, OFFSITE_CACHE, OFFSITE_PG_BIN.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
scale="${SCALE:-70}"
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) missing: apt-get install time"
bash "$repo/tests/install/postgres.sh" >/dev/null
bash "$repo/tests/install/pgbackrest.sh" >/dev/null

pg_work snapshot
pgbackrest_conf 3 "repo1-retention-full=1
start-fast=y"
chown postgres: "$work/pgbackrest.conf" 2>/dev/null || true
# pgBackRest needs WAL archiving to check its backup; it archives to its
# own repository (offsite's snapshot does not need it).
pg_start -c max_wal_size=4GB -c archive_mode=on \
    "-c archive_command='pgbackrest --config=$work/pgbackrest.conf --stanza=bench archive-push %p'"
as_pg pgbackrest --config="$work/pgbackrest.conf" --stanza=bench stanza-create >/dev/null
as_pg "$pgbin/pgbench" -i -q -s "$scale" -h "$sock" -p "$port" -U postgres postgres >/dev/null 2>&1 \
    || die "pgbench -i failed"
psql "CHECKPOINT" >/dev/null
# Let the archiver catch up, so neither tool waits on pgbench's WAL.
last=$(psql "SELECT pg_walfile_name(pg_switch_wal())")
for _ in $(seq 600); do
    [[ "$(psql "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")" < "$last" ]] || break
    sleep 0.5
done
size=$(du -sb --exclude=pg_wal "$data" | cut -f1)
(( size >= 1073741824 )) || die "the cluster is $size bytes (pg_wal aside), under 1 GiB: raise SCALE"

{ runner_table; pg_job_table; echo 'verify = "none"'; } > "$work/offsite.toml"
mkdir -p "$work/plugins"
chown -R postgres: "$work" 2>/dev/null || true

# measure LABEL CMD...: one run as the server's user; prints and sets
# $secs and $kib.
measure() {
    local label="$1"; shift
    local out="$work/time.$RANDOM"
    as_pg /usr/bin/time -o "$out" -f "%e %M" "$@" >/dev/null 2>"$work/err.log" \
        || { cat "$work/err.log" >&2; die "$label failed"; }
    read -r secs kib < "$out"
    printf "%-42s %8.2f s  peak RSS %7d KiB\n" "$label" "$secs" "$kib"
}

echo "Full physical backup of a $((size / 1048576)) MiB (pg_wal aside) PostgreSQL 15 cluster (pgbench scale $scale), one run each"
measure "offsite run (format = snapshot)" "$bin" --config "$work/offsite.toml" run db
o_secs=$secs; o_kib=$kib
measure "pgbackrest backup --type=full" pgbackrest --config="$work/pgbackrest.conf" --stanza=bench --type=full backup
p_secs=$secs; p_kib=$kib
ls "$work"/backups/db/db-*.tar.zst >/dev/null 2>&1 || die "offsite wrote no generation"
echo "stored: offsite $(du -sb "$work/backups/db" | cut -f1) bytes, pgbackrest $(du -sb "$work/pgbr-repo/backup" | cut -f1) bytes"
python3 - "$o_secs" "$p_secs" "$o_kib" "$p_kib" <<'PY'
import sys
os_, ps, ok, pk = (float(x) for x in sys.argv[1:])
print(f"offsite / pgbackrest: wall time {os_ / ps:.2f}x, peak RSS {ok / pk:.2f}x")
PY
