#!/usr/bin/env bash
# `offsite run` of a PostgreSQL job (format sql, zstd level 3) against the
# native pipeline it replaces, on the same database of more than 1 GB:
#   - threads = 1: offsite run ÷ `pg_dump -Fp | zstd -3 > file`      (aim <= 1.05)
#   - threads = 0: offsite run ÷ `pg_dump -Fp | zstd -3 -T0 > file`  (aim < 1)
#   - peak RSS of the runner process (VmHWM, polled)                  (aim <= 64 MiB)
# offsite's wall time is the whole command: config, lock, pg_dumpall
# --globals-only, pg_dump, compression, sha256, fsync, rename, manifest.
# The job has verify = "none" and no destination, so both sides do the same
# work (a checksum verify re-reads the file; shipping is measured by the
# plugin benchmarks).
#
# The database: pgbench at scale $SCALE (60: ~900 MB, compresses very well)
# plus ~$RANDOM_MB MB of call records with random text and random bytea
# (compresses about 2:1), so the dump is not unrealistically compressible.
# It is built once and cached (never started) in
# ${OFFSITE_CACHE:-$HOME/.cache/offsite}/bench-pgdata-*; each run copies it
# into a temporary folder, starts a private server on a free 127.0.0.1
# port, warms the page cache with one dump, measures, and cleans up.
# Measures, never fails on a slow result; fails when a step fails.
#
# Usage: bench/postgres.sh    Env: SCALE (60), RANDOM_MB (300), RUNS (3: best
#   of RUNS per figure), OFFSITE_BIN, OFFSITE_CACHE, OFFSITE_PG_BIN.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
scale="${SCALE:-60}"
random_mb="${RANDOM_MB:-300}"
runs="${RUNS:-3}"

bash "$repo/tests/install/postgres.sh" >/dev/null
[ -x "$pgbin/pg_dump" ] || die "$pgbin/pg_dump missing: run tests/install/postgres.sh"
command -v zstd >/dev/null || die "the zstd command is required: apt-get install -y zstd"

work="$(mktemp -d "${TMPDIR:-/tmp}/offsite-bench-pg.XXXXXX")"
[ "$(id -u)" -eq 0 ] && chown postgres: "$work"
data="$work/data"
sock="$work/sock"
server_started=
cleanup() {
    if [ -n "$server_started" ]; then
        as_pg "$pgbin/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
as_pg mkdir "$sock"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
start_server() { # $1 = extra server options
    as_pg "$pgbin/pg_ctl" -D "$data" -l "$work/server.log" -w -t 120 \
        -o "-p $port -k $sock -c listen_addresses=127.0.0.1 ${1:-}" start >/dev/null ||
        die "the server did not start: $(tail -5 "$work/server.log")"
    server_started=1
}
psql_() { "$pgbin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres "$@"; }

cached="$cache/bench-pgdata-s$scale-r$random_mb-v1"
if [ -f "$cached/PG_VERSION" ]; then
    cp -a "$cached" "$data"
    start_server
else
    echo "building the benchmark database once (scale $scale + $random_mb MB of random rows); cached in $cached" >&2
    as_pg "$pgbin/initdb" -D "$data" -U postgres -A trust --no-sync -E UTF8 --locale=C >/dev/null
    # Tables created and filled in one transaction skip the WAL at
    # wal_level=minimal: the cached folder holds the data, not 1 GB of WAL.
    start_server "-c wal_level=minimal -c max_wal_senders=0"
    psql_ -d postgres -c "CREATE DATABASE bench"
    "$pgbin/pgbench" -i -q -s "$scale" -h "$sock" -p "$port" -U postgres bench >/dev/null 2>&1
    # ~220 bytes a row on disk: two md5s of text and 96 random bytes.
    rows=$((random_mb * 1024 * 1024 / 220))
    psql_ -d bench -c "
        CREATE EXTENSION pgcrypto;
        CREATE TABLE calls (id bigint PRIMARY KEY, at timestamptz NOT NULL, kind text NOT NULL,
                            note text NOT NULL, payload bytea NOT NULL);
        INSERT INTO calls
             SELECT i, timestamptz '2025-01-01' + i * interval '7 s',
                    (ARRAY['call', 'sms', 'data', 'voicemail'])[1 + i % 4],
                    md5(random()::text) || ' ' || md5(random()::text),
                    gen_random_bytes(96)
               FROM generate_series(1, $rows) i;"
    psql_ -d bench -c "VACUUM ANALYZE calls"
    # A clean shutdown, then into the cache under a private name first so a
    # concurrent run never sees half a copy.
    as_pg "$pgbin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    server_started=
    mkdir -p "$cache"
    cp -a "$data" "$cached.partial.$$"
    mv "$cached.partial.$$" "$cached" 2>/dev/null || rm -rf "$cached.partial.$$"
    start_server
fi

db_bytes="$(psql_ -d bench -c "SELECT pg_database_size('bench')")"
[ "$db_bytes" -ge $((1024 * 1024 * 1024)) ] || die "the database is only $db_bytes bytes; raise SCALE or RANDOM_MB"
dsn="postgresql://postgres@127.0.0.1:$port/bench"

mkdir -p "$work/plugins"
config() { # $1 = zstd threads
    { runner_table "$work/state" "$work/bench.log"; cat <<EOF

[jobs.bench]
source = "postgres"
dsn = "$dsn"
format = "sql"
compression = "zstd"
level = 3
threads = $1
verify = "none"
EOF
    } >"$work/offsite.toml"
}

elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }
best() { python3 -c "import sys; print(min(float(x) for x in sys.argv[1:]))" "$@"; }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.3f}')" "$1" "$2"; }
mib() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1024:.1f}')" "$1"; }

native() { # $@ = zstd options; prints seconds
    rm -f "$work/native.sql.zst"
    local t0 t1
    t0="$(now)"
    PGAPPNAME=bench-native "$pgbin/pg_dump" -Fp -d "$dsn" | zstd -q "$@" -o "$work/native.sql.zst"
    t1="$(now)"
    elapsed "$t0" "$t1"
}

peak_kib=0
peak_tree_kib=0
runner() { # $1 = threads; sets $secs, tracks the runner's peak RSS (no subshell)
    config "$1"
    rm -rf "$work/backups"
    local t0 t1 tpid pid hwm=0 v
    t0="$(now)"
    /usr/bin/time -v -o "$work/time.txt" "$bin" --config "$work/offsite.toml" run bench \
        2>>"$work/runner.err" &
    tpid=$!
    # The runner is the only child of time(1): poll its high-water mark.
    pid=
    while [ -z "$pid" ] && kill -0 "$tpid" 2>/dev/null; do
        pid="$(awk '{print $1}' "/proc/$tpid/task/$tpid/children" 2>/dev/null)" || true
        [ -n "$pid" ] || sleep 0.01
    done
    while [ -n "$pid" ] && v="$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" && [ -n "$v" ]; do
        hwm="$v"
        sleep 0.1
    done
    wait "$tpid" || die "offsite run failed: $(tail -5 "$work/runner.err")"
    t1="$(now)"
    [ "$hwm" -gt "$peak_kib" ] && peak_kib="$hwm"
    [ "$hwm" -gt 0 ] || die "could not read the runner's VmHWM"
    v="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")"
    [ "${v:-0}" -gt "$peak_tree_kib" ] && peak_tree_kib="$v"
    secs="$(elapsed "$t0" "$t1")"
}

echo "warming the page cache with one pg_dump..." >&2
"$pgbin/pg_dump" -Fp -d "$dsn" >/dev/null

st_native=(); st_offsite=(); mt_native=(); mt_offsite=()
for _ in $(seq "$runs"); do
    st_native+=("$(native -3)")
    native_size="$(stat -c %s "$work/native.sql.zst")"
    runner 1
    st_offsite+=("$secs")
    offsite_size="$(stat -c %s "$work"/backups/bench/bench-*.sql.zst)"
    mt_native+=("$(native -3 -T0)")
    runner 0
    mt_offsite+=("$secs")
done
st_n="$(best "${st_native[@]}")"; st_o="$(best "${st_offsite[@]}")"
mt_n="$(best "${mt_native[@]}")"; mt_o="$(best "${mt_offsite[@]}")"

echo "PostgreSQL $(psql_ -d bench -c 'SHOW server_version'), database bench: $(mib $((db_bytes / 1024))) MiB;" \
    "dump compressed by zstd -3: $(mib $((native_size / 1024))) MiB (native), $(mib $((offsite_size / 1024))) MiB (offsite); $(nproc) cores; best of $runs"
printf '%-58s %8s s\n' "pg_dump -Fp | zstd -3" "$st_n"
printf '%-58s %8s s\n' "offsite run (format sql, zstd level 3, threads = 1)" "$st_o"
printf '%-58s %8s s\n' "pg_dump -Fp | zstd -3 -T0" "$mt_n"
printf '%-58s %8s s\n' "offsite run (format sql, zstd level 3, threads = 0)" "$mt_o"
echo "ratio single-threaded offsite/native: $(ratio "$st_o" "$st_n") (aim <= 1.05)"
echo "ratio multi-threaded  offsite/native: $(ratio "$mt_o" "$mt_n") (aim < 1)"
echo "peak RSS of the runner (VmHWM): $(mib "$peak_kib") MiB (aim <= 64 MiB);" \
    "max over the runner and its children (time -v, pg_dump included): $(mib "$peak_tree_kib") MiB"
