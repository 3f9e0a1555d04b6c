#!/usr/bin/env bash
# Measures (does not assert) the upload time of a 1 GiB file to one local
# moto S3 server: the s3 plugin inside the runner (the `upload` step of
# `offsite plugins test`, timed by the runner around the plugin call) against
# `aws s3 cp` and `rclone copy` to the same server, best of $RUNS each, runs
# interleaved. Prints the times and the ratios ours/theirs (below 1 = faster).
# Needs tests/install/s3.sh, the runner and the plugins built (`just build
# plugins`). Env: RUNS (default 3), SIZE_MB (default 1024), PART_SIZE (16MiB),
# PARALLEL_PARTS (4), OFFSITE_BIN, OFFSITE_WASM_DIR, AWS (default /usr/bin/aws).
set -euo pipefail

runs="${RUNS:-3}"
size_mb="${SIZE_MB:-1024}"
part_size="${PART_SIZE:-16MiB}"
parallel="${PARALLEL_PARTS:-4}"
cache="${OFFSITE_CACHE:-$HOME/.cache/offsite}"
venv="${OFFSITE_VENV:-$cache/venv}"
offsite="${OFFSITE_BIN:-${CARGO_TARGET_DIR:-$cache/target}/release/offsite}"
wasm="${OFFSITE_WASM_DIR:-$cache/target-wasm/wasm32-wasip2/release}/offsite_s3.wasm"
aws="${AWS:-/usr/bin/aws}"
rclone="${RCLONE:-$(command -v rclone || true)}"

need() { # file, what to run
    [[ -x "$1" || -f "$1" ]] || { echo "bench.sh: $1 is missing: $2" >&2; exit 1; }
}
need "$venv/bin/moto_server" "run tests/install/s3.sh"
need "$aws" "run tests/install/s3.sh (Debian's awscli)"
need "${rclone:-/nonexistent}" "run tests/install/s3.sh (rclone)"
need "$offsite" "build the runner: just build"
need "$wasm" "build the plugins: just plugins"

work="$(mktemp -d)"
moto_pid=""
cleanup() {
    [[ -z "$moto_pid" ]] || kill "$moto_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
endpoint="http://127.0.0.1:$port"
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret-key AWS_DEFAULT_REGION=us-east-1
s3() { "$aws" --endpoint-url "$endpoint" "$@"; }
s3 s3 mb s3://bench >/dev/null
head -c "$((size_mb * 1024 * 1024))" /dev/urandom >"$work/data.bin"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { print b - a }'; }
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }

ours() { # the runner's own timing of the plugin's upload call, in seconds
    local out
    if ! out="$(OFFSITE_CONFIG=/nonexistent/offsite.toml "$offsite" plugins test "$wasm" \
        --size "$((size_mb * 1024 * 1024))" \
        -s "endpoint=$endpoint" -s bucket=bench -s prefix=offsite/ \
        -s "access_key_id=$AWS_ACCESS_KEY_ID" -s "secret_access_key=$AWS_SECRET_ACCESS_KEY" \
        -s "part_size=$part_size" -s "parallel_parts=$parallel" 2>&1)"; then
        echo "$out" >&2
        exit 1
    fi
    grep -q "conformance: passed" <<<"$out" || { echo "$out" >&2; exit 1; }
    awk '$1 == "upload" && $2 == "ok" { printf "%.3f\n", $3 / 1000 }' <<<"$out"
}

aws_cp() {
    local t0
    t0="$(now)"
    s3 s3 cp --only-show-errors "$work/data.bin" s3://bench/aws/data.bin
    elapsed "$t0"
    s3 s3 rm --only-show-errors s3://bench/aws/data.bin
}

rclone_copy() {
    local t0
    t0="$(now)"
    # rclone reads AWS_CA_BUNDLE even for http:// endpoints; unset it.
    # NO_HEAD: rclone 1.60 checks an upload with HEAD ?versionId=null, which
    # moto answers 400, and then uploads again; --retries 1 makes any
    # failure fail the bench instead of being timed.
    env -u AWS_CA_BUNDLE \
        RCLONE_CONFIG_MOTO_TYPE=s3 RCLONE_CONFIG_MOTO_PROVIDER=Other RCLONE_CONFIG_MOTO_NO_HEAD=true \
        RCLONE_CONFIG_MOTO_ENDPOINT="$endpoint" RCLONE_CONFIG_MOTO_REGION=us-east-1 \
        RCLONE_CONFIG_MOTO_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
        RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
        "$rclone" copy -q --retries 1 "$work/data.bin" moto:bench/rclone/
    elapsed "$t0"
    s3 s3 rm --only-show-errors s3://bench/rclone/data.bin
}

best_ours="" best_aws="" best_rclone=""
for _ in $(seq "$runs"); do
    best_ours="$(min "$best_ours" "$(ours)")"
    best_aws="$(min "$best_aws" "$(aws_cp)")"
    best_rclone="$(min "$best_rclone" "$(rclone_copy)")"
done
left="$(s3 s3api list-multipart-uploads --bucket bench --query 'length(Uploads || `[]`)' --output text)"
[[ "$left" == "0" ]] || echo "bench.sh: warning: $left multipart uploads left in the bucket" >&2

awk -v o="$best_ours" -v a="$best_aws" -v r="$best_rclone" -v mb="$size_mb" -v ps="$part_size" -v pp="$parallel" 'BEGIN {
    printf "s3 bench %d MiB upload to moto (best of runs): offsite-s3 %.2f s (%.0f MiB/s, %s parts, %d in flight), aws s3 cp %.2f s (%.0f MiB/s), rclone copy %.2f s (%.0f MiB/s)\n",
        mb, o, mb / o, ps, pp, a, mb / a, r, mb / r
    printf "s3 bench ratio offsite-s3/aws-cli %.2f\n", o / a
    printf "s3 bench ratio offsite-s3/rclone %.2f\n", o / r
}'
