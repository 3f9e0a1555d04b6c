# What every bench script starts with; sourced, never run (`just bench`
# runs bench/*.sh only). After it: $repo, $cache, $bin (the offsite build,
# checked), $wasm_dir, $venv, $pgbin, and die(), as_pg(), free_port(),
# now()/secs() for wall times; the config pieces runner_table(),
# pg_job_table() and pgbackrest_conf().
#   OFFSITE_CACHE (~/.cache/offsite), OFFSITE_BIN, OFFSITE_WASM_DIR,
#   OFFSITE_VENV, OFFSITE_PG_BIN (/usr/lib/postgresql/15/bin): as the
#   justfile exports them.

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${OFFSITE_CACHE:-$HOME/.cache/offsite}"
bin="${OFFSITE_BIN:-$cache/target/release/offsite}"
wasm_dir="${OFFSITE_WASM_DIR:-$cache/target-wasm/wasm32-wasip2/release}"
venv="${OFFSITE_VENV:-$cache/venv}"
pgbin="${OFFSITE_PG_BIN:-/usr/lib/postgresql/15/bin}"
bench_name="$(basename "$0")"

die() { echo "$bench_name: $*" >&2; exit 1; }
[ -x "$bin" ] || die "$bin missing: just build"

# initdb and the server refuse root: run them as the postgres user.
if [ "$(id -u)" -eq 0 ]; then as_pg() { runuser -u postgres -- "$@"; }; else as_pg() { "$@"; }; fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

# The plugins a bench needs, built: need_plugin tftp ftp
need_plugin() {
    local p
    for p in "$@"; do
        [ -f "$wasm_dir/offsite_$p.wasm" ] || die "$wasm_dir/offsite_$p.wasm missing: just plugins"
    done
}

# pg_work NAME: a work folder the server's user owns ($work), with a copy
# of offsite it can run ($bin: a build under root's home, 0700, is out of
# its reach), and a new cluster there ($data, socket folder $sock, a free
# $port), not started; removed on exit (extend the trap with pg_cleanup).
pg_work() {
    work="$(mktemp -d "${TMPDIR:-/tmp}/offsite-bench-$1.XXXXXX")"
    chmod 755 "$work"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$work"
        install -m 0755 "$bin" "$work/offsite"
        bin="$work/offsite"
    fi
    data="$work/data"; sock="$work/sock"; started=
    trap pg_cleanup EXIT
    as_pg mkdir "$sock"
    as_pg "$pgbin/initdb" -D "$data" -U postgres -A trust --no-sync --no-instructions >/dev/null
    port=$(free_port)
}
pg_cleanup() {
    [ -n "$started" ] && as_pg "$pgbin/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
# pg_start ARGS...: start the cluster of pg_work on 127.0.0.1:$port with
# these extra server arguments (e.g. -c max_wal_size=4GB).
pg_start() {
    as_pg "$pgbin/pg_ctl" -D "$data" -l "$work/server.log" -w -o \
        "-p $port -k $sock -c listen_addresses=127.0.0.1 $*" start >/dev/null
    started=1
}
# psql SQL: one statement as postgres on the pg_work cluster, unaligned.
psql() { as_pg "$pgbin/psql" -X -q -A -t -h "$sock" -p "$port" -U postgres -d postgres -c "$1"; }

# runner_table [STATE_DIR [LOG_FILE]]: the config's [runner] table for a
# bench under $work (state in $work/state, log in $work/offsite.log unless
# given).
runner_table() {
    cat <<TOML
[runner]
backup_dir = "$work/backups"
plugins_dir = "$work/plugins"
state_dir = "${1:-$work/state}"
log_file = "${2:-$work/offsite.log}"
TOML
}

# pg_job_table: job db, a pg_basebackup snapshot of the bench cluster, run
# by hand (add its other keys after it).
pg_job_table() {
    cat <<TOML
[jobs.db]
source = "postgres"
dsn = "postgresql://postgres@127.0.0.1:$port/postgres"
format = "snapshot"
schedule = "manual"
TOML
}

# pgbackrest_conf LEVEL [GLOBAL_LINES]: $work/pgbackrest.conf for stanza
# `bench` on the bench cluster, repository under $work, zstd at LEVEL, quiet
# logs; GLOBAL_LINES (one option a line) join [global].
pgbackrest_conf() {
    cat > "$work/pgbackrest.conf" <<CONF
[global]
repo1-path=$work/pgbr-repo
log-path=$work/pgbr-log
lock-path=$work/pgbr-lock
compress-type=zst
compress-level=$1
log-level-console=error
log-level-file=off
${2:-}
[bench]
pg1-path=$data
pg1-socket-path=$sock
pg1-port=$port
CONF
}
