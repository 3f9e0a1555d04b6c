#!/usr/bin/env bash
# WAL archiving, offsite against pgBackRest on the same 16 MiB segments of a
# real PostgreSQL 15 cluster (random md5 text, so they compress about 2:1):
#   - archive_command: `offsite wal-push` vs `pgbackrest archive-push`
#     (both zstd level 1, to a local store/repository): p50, p99, segments/s
#   - restore_command: `offsite wal-fetch` vs `pgbackrest archive-get`:
#     p50, p99, segments/s (one process per segment, as PostgreSQL calls it)
# Both run as the server's user, one call per segment, timed around the
# process. Measures, never fails on a slow result; fails when a step fails.
#
#   - shipping the store to a local-dir destination and to moto (S3) by
#     `offsite daemon`, and recovery from moto alone with wal_prefetch 0 / 8
#
# Usage: bench/wal.sh    Env: SEGMENTS (32), OFFSITE_BIN, OFFSITE_CACHE, OFFSITE_PG_BIN,
#                             OFFSITE_WASM_DIR, OFFSITE_VENV.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
segments="${SEGMENTS:-32}"
bash "$repo/tests/install/postgres.sh" >/dev/null
bash "$repo/tests/install/pgbackrest.sh" >/dev/null

# The server's user runs both tools (pg_work gives it a copy of offsite).
pg_work wal
as_pg mkdir "$work/segs" "$work/out"
pg_start -c wal_keep_size=4GB -c wal_recycle=off -c max_wal_size=4GB
rows=$((segments * 160000))
psql "CREATE TABLE t AS SELECT g, md5(random()::text) || md5(random()::text) AS v FROM generate_series(1, $rows) g" >/dev/null
psql "SELECT pg_switch_wal()" >/dev/null
current=$(psql "SELECT pg_walfile_name(pg_current_wal_lsn())")
names=()
for f in $(ls "$data/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort); do
    [ "$f" \< "$current" ] && names+=("$f")
done
(( ${#names[@]} > segments )) && names=("${names[@]: -$segments}")
(( ${#names[@]} > 0 )) || die "no complete WAL segment was written"
for n in "${names[@]}"; do as_pg cp "$data/pg_wal/$n" "$work/segs/$n"; done

{ runner_table; pg_job_table; echo "wal = true"; } > "$work/offsite.toml"
pgbackrest_conf 1
chown -R postgres: "$work" 2>/dev/null || true
as_pg pgbackrest --config="$work/pgbackrest.conf" --stanza=bench stanza-create >/dev/null

# time_each LABEL CMD...: runs CMD with {} replaced by each segment name,
# prints p50/p99 (ms) and segments/s.
time_each() {
    local label="$1"; shift
    local ms=() t0 t1 all0 all1
    all0=$(date +%s%N)
    for n in "${names[@]}"; do
        local args=("${@//\{\}/$n}")
        t0=$(date +%s%N); as_pg "${args[@]}" >/dev/null 2>&1 || die "$label failed on $n"; t1=$(date +%s%N)
        ms+=($(( (t1 - t0) / 1000000 )))
    done
    all1=$(date +%s%N)
    python3 - "$label" "$(( (all1 - all0) / 1000000 ))" "${ms[@]}" <<'PY'
import sys
label, total, ms = sys.argv[1], int(sys.argv[2]), sorted(int(x) for x in sys.argv[3:])
p = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]
print(f"{label:44s} p50 {p(0.5):5d} ms  p99 {p(0.99):5d} ms  {len(ms) * 1000 / max(total, 1):6.1f} segments/s")
PY
}

echo "WAL archiving, ${#names[@]} segments of 16 MiB (random md5 text), one process per segment"
time_each "offsite wal-push (local WAL store)" "$bin" --config "$work/offsite.toml" wal-push db "$work/segs/{}"
time_each "pgbackrest archive-push (local repo)" pgbackrest --config="$work/pgbackrest.conf" --stanza=bench archive-push "$work/segs/{}"
time_each "offsite wal-fetch (local WAL store)" "$bin" --config "$work/offsite.toml" wal-fetch db "{}" "$work/out/{}"
for n in "${names[@]}"; do cmp -s "$work/out/$n" "$work/segs/$n" || die "offsite wal-fetch of $n differs"; done
rm -f "$work/out/"*
time_each "pgbackrest archive-get (local repo)" pgbackrest --config="$work/pgbackrest.conf" --stanza=bench archive-get "{}" "$work/out/{}"
for n in "${names[@]}"; do cmp -s "$work/out/$n" "$work/segs/$n" || die "pgbackrest archive-get of $n differs"; done
echo "stored: offsite $(du -sb "$work/backups/db/wal" | cut -f1) bytes, pgbackrest $(du -sb "$work/pgbr-repo/archive" | cut -f1) bytes"

# ---- Beyond the local store (issue 17, part A) -------------------------------
# Shipping the store above to a local-dir destination and to moto (S3), by
# `offsite daemon` (timed from its start until the destination's state file
# lists every segment); then recovery from moto alone (an empty local store),
# one wal-fetch process per segment as PostgreSQL calls it, with
# wal_prefetch = 0 and 8. pgbackrest archive-get from its local repository
# (above) is the nearest comparison: it has no S3 here.
need_plugin local_dir s3
[ -x "$venv/bin/moto_server" ] || die "$venv/bin/moto_server missing: bash tests/install/s3.sh"
mkdir -p "$work/plugins" "$work/nas" "$work/empty-wal" "$work/state-pg"
install -m 0644 "$wasm_dir/offsite_local_dir.wasm" "$work/plugins/local-dir.wasm"
install -m 0644 "$wasm_dir/offsite_s3.wasm" "$work/plugins/s3.wasm"
moto_port=$(free_port)
"$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >/dev/null 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true; pg_cleanup' EXIT
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$moto_port) 2>/dev/null && break; sleep 0.1; done
"$venv/bin/python" -c "
import boto3, sys
boto3.client('s3', endpoint_url='http://127.0.0.1:$moto_port', aws_access_key_id='x',
    aws_secret_access_key='x', region_name='us-east-1').create_bucket(Bucket='wal')" || die "moto bucket"
# ship_conf DEST STATE WAL_DIR PREFETCH: a config whose job db archives into
# WAL_DIR and ships to DEST.
ship_conf() {
    runner_table "$2" "$work/offsite-ship.log"
    cat <<TOML
[destinations.nas]
plugin = "local-dir"
path = "$work/nas"
[destinations.s3]
plugin = "s3"
endpoint = "http://127.0.0.1:$moto_port"
region = "us-east-1"
bucket = "wal"
prefix = "pg/"
access_key_id = "x"
secret_access_key = "x"
TOML
    pg_job_table
    cat <<TOML
wal = true
wal_dir = "$3"
wal_prefetch = $4
destinations = ["$1"]
TOML
}
chown -R postgres: "$work" 2>/dev/null || true
# ship_to DEST: seconds until every segment is confirmed there.
ship_to() {
    ship_conf "$1" "$work/state" "$work/backups/db/wal" 0 > "$work/ship-$1.toml"
    local t0 t1 d
    # Compile the plugins into the cache first: a fresh install pays that once.
    "$bin" --config "$work/ship-$1.toml" config check >/dev/null 2>&1 || die "config check $1"
    t0=$(date +%s%N)
    "$bin" --config "$work/ship-$1.toml" daemon >/dev/null 2>&1 &
    d=$!
    until [ "$(python3 -c "import json,sys
try: print(len(json.load(open('$work/backups/db/wal/shipped/$1.json'))['confirmed']))
except Exception: print(0)")" -ge "${#names[@]}" ]; do
        kill -0 $d 2>/dev/null || die "daemon for $1 exited"
        sleep 0.05
    done
    t1=$(date +%s%N)
    kill $d; wait $d 2>/dev/null || true
    python3 -c "n=${#names[@]}; ms=$(( (t1 - t0) / 1000000 )); print(f'{\"offsite daemon shipping to $1\":44s} {n} files in {ms} ms  {n*1000/max(ms,1):6.1f} segments/s (daemon start included)')"
}
ship_to nas
ship_to s3
chown -R postgres: "$work" 2>/dev/null || true
for depth in 0 8; do
    rm -rf "$work/empty-wal/"* "$work/out/"*
    ship_conf s3 "$work/state-pg" "$work/empty-wal" "$depth" > "$work/fetch-$depth.toml"
    chown postgres: "$work/fetch-$depth.toml" 2>/dev/null || true
    as_pg "$bin" --config "$work/fetch-$depth.toml" config check >/dev/null 2>&1 || die "config check (fetch)"
    time_each "offsite wal-fetch from moto, wal_prefetch=$depth" "$bin" --config "$work/fetch-$depth.toml" wal-fetch db "{}" "$work/out/{}"
    for n in "${names[@]}"; do cmp -s "$work/out/$n" "$work/segs/$n" || die "wal-fetch from moto of $n differs"; done
done
