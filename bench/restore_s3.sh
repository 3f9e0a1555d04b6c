#!/usr/bin/env bash
# Restore from S3 into a fresh database: `offsite restore --from s3 --to-dsn`
# against the same work by hand (`aws s3 cp`, then `zstd -d | psql`), from
# one run each against the same local S3 server (moto). Prints the ratio.
# Measures, never fails on a slow result; fails when a step fails.
#
# Env: SCALE (pgbench scale, default 10), OFFSITE_BIN, OFFSITE_WASM_DIR,
# OFFSITE_CACHE, OFFSITE_PG_BIN.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
scale="${SCALE:-10}"
need_plugin s3
for s in postgres s3 tools; do bash "$repo/tests/install/$s.sh" >/dev/null; done
command -v aws >/dev/null || die "aws CLI missing: tests/install/s3.sh"

work="$(mktemp -d "${TMPDIR:-/tmp}/offsite-bench-restore.XXXXXX")"
[ "$(id -u)" -eq 0 ] && chown postgres: "$work"
pgport="$(free_port)"; s3port="$(free_port)"
moto_pid=
cleanup() {
    as_pg "$pgbin/pg_ctl" -D "$work/data" -m immediate -w stop >/dev/null 2>&1 || true
    [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

as_pg mkdir "$work/sock"
as_pg "$pgbin/initdb" -D "$work/data" -U postgres -A trust --no-sync -E UTF8 --locale=C >/dev/null
as_pg "$pgbin/pg_ctl" -D "$work/data" -l "$work/server.log" -w \
    -o "-p $pgport -k $work/sock -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
psql_() { "$pgbin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pgport" -U postgres "$@"; }
psql_ -d postgres -c "CREATE DATABASE bench"
"$pgbin/pgbench" -i -q -s "$scale" -h 127.0.0.1 -p "$pgport" -U postgres bench >/dev/null 2>&1
echo "database: $(psql_ -d bench -c "SELECT pg_size_pretty(pg_database_size('bench'))") (pgbench scale $scale)"

"$venv/bin/moto_server" -H 127.0.0.1 -p "$s3port" >"$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 100); do curl -s "http://127.0.0.1:$s3port" >/dev/null && break; sleep 0.1; done
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
unset AWS_CA_BUNDLE
s3() { aws --endpoint-url "http://127.0.0.1:$s3port" "$@"; }
s3 s3 mb s3://bench >/dev/null

mkdir -p "$work/plugins"
cp "$wasm_dir/offsite_s3.wasm" "$work/plugins/s3.wasm"
printf 'testing\n' > "$work/s3.secret"
chmod 600 "$work/s3.secret"   # offsite refuses a secret file others can read
{ runner_table "$work/state" "$work/backup.log"; cat <<TOML

[destinations.s3]
plugin = "s3"
endpoint = "http://127.0.0.1:$s3port"
bucket = "bench"
prefix = "db/"
access_key_id = "testing"
secret_access_key_file = "$work/s3.secret"

[jobs.bench]
source = "postgres"
dsn = "postgresql://postgres@127.0.0.1:$pgport/bench"
format = "sql"
destinations = ["s3"]
TOML
} > "$work/offsite.toml"
"$bin" --config "$work/offsite.toml" run bench 2>/dev/null || die "offsite run failed (see $work/backup.log)"
name="$(s3 s3 ls s3://bench/db/ | awk '{print $4}' | grep -v manifest | head -1)"
echo "generation: $name ($(s3 s3 ls "s3://bench/db/$name" | awk '{print $3}' | head -1) bytes in S3)"
rm -rf "$work/backups"
t0=$(now)
"$bin" --config "$work/offsite.toml" restore bench --from s3 \
    --to-dsn "postgresql://postgres@127.0.0.1:$pgport/by_offsite" >/dev/null 2>&1 || die "offsite restore failed"
t1=$(now)
psql_ -d postgres -c "CREATE DATABASE by_hand"
s3 s3 cp "s3://bench/db/$name" "$work/by_hand.sql.zst" >/dev/null
zstd -q -d -c "$work/by_hand.sql.zst" | psql_ -d by_hand >/dev/null
t2=$(now)
calc() { python3 -c "print($1)"; }
ours=$(calc "$t1 - $t0"); hand=$(calc "$t2 - $t1")
rows_a=$(psql_ -d by_offsite -c "SELECT count(*) FROM pgbench_accounts")
rows_b=$(psql_ -d by_hand -c "SELECT count(*) FROM pgbench_accounts")
[ "$rows_a" = "$rows_b" ] || die "the restores differ: $rows_a vs $rows_b rows"
printf 'restore from S3: offsite %.2f s, aws s3 cp + zstd -d | psql %.2f s, ratio %.2f (aim <= 1.1)\n' \
    "$ours" "$hand" "$(calc "$ours / $hand")"
