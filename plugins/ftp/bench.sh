#!/usr/bin/env bash
# Measures (does not assert) the upload time of a 200 MB file with the ftp
# plugin's client core (native build of examples/ftp.rs) against `curl -T`,
# to the same local pyftpdlib server, plain FTP and explicit FTPS.
# Prints one line per mode with both times (best of $RUNS) and the ratio
# ours/curl (below 1 = faster than curl). If a wasmtime CLI is found (env
# WASMTIME, else `wasmtime` on PATH), also times the same client built for
# wasm32-wasip2 and run inside wasmtime, the way the plugin runs.
# Needs tests/install/ftp.sh to have run. Env: RUNS (default 5), SIZE_MB (200).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
runs="${RUNS:-5}"
size_mb="${SIZE_MB:-200}"
venv="${OFFSITE_VENV:-${OFFSITE_CACHE:-$HOME/.cache/offsite}/venv}"
py="$venv/bin/python"
if ! "$py" -c 'import pyftpdlib, OpenSSL' 2>/dev/null; then
    echo "bench.sh: pyftpdlib missing in $venv: run tests/install/ftp.sh" >&2
    exit 1
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
host_target="$(rustc -vV | sed -n 's/^host: //p')"
(cd "$repo/plugins" && cargo build -q --release --example ftp --target "$host_target")
client="$CARGO_TARGET_DIR/$host_target/release/examples/ftp"
wasmtime="${WASMTIME:-$(command -v wasmtime || true)}"
wasm=""
if [[ -n "$wasmtime" ]]; then
    (cd "$repo/plugins" && cargo build -q --release --example ftp --target wasm32-wasip2)
    wasm="$CARGO_TARGET_DIR/wasm32-wasip2/release/examples/ftp.wasm"
fi
guest() { # runs the precompiled guest (the runner caches compiled plugins too)
    "$wasmtime" run --allow-precompiled -S inherit-network=y --env FTP_PASSWORD="$FTP_PASSWORD" \
        --dir "$work::/work" "$work/ftp.cwasm" "$@"
}

work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

user=bench
export FTP_PASSWORD="bench-$$-$RANDOM"
head -c "$((size_mb * 1024 * 1024))" /dev/urandom >"$work/data.bin"
[[ -z "$wasm" ]] || "$wasmtime" compile -o "$work/ftp.cwasm" "$wasm"

# A test CA and a server certificate for 127.0.0.1.
(
    cd "$work"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 1 -subj "/CN=bench CA" 2>/dev/null
    openssl req "${ec[@]}" -keyout srv.key -out srv.csr -subj /CN=127.0.0.1 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >srv.ext
    openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 1 \
        -extfile srv.ext -out srv.pem 2>/dev/null
)

start_server() { # $1 = root dir, rest = extra args; sets $port
    mkdir -p "$1"
    local out="$work/port.$RANDOM"
    "$py" "$here/tests/ftpd.py" --dir "$1" --user "$user" --password "$FTP_PASSWORD" "${@:2}" >"$out" 2>/dev/null &
    pids+=($!)
    for _ in $(seq 100); do
        port="$(head -n1 "$out" 2>/dev/null || true)"
        [[ -n "$port" ]] && return 0
        sleep 0.1
    done
    echo "bench.sh: ftpd.py did not start" >&2
    exit 1
}

now() { date +%s.%N; }
best() { # prints the best of $runs timings of the command
    local best=""
    for _ in $(seq "$runs"); do
        local t0 t1
        t0="$(now)"
        if ! "$@" >/dev/null 2>"$work/err"; then
            cat "$work/err" >&2
            exit 1
        fi
        t1="$(now)"
        best="$(awk -v a="$best" -v t0="$t0" -v t1="$t1" 'BEGIN { b = t1 - t0; if (a == "" || b < a) print b; else print a }')"
    done
    echo "$best"
}

same() { # every file must equal the data sent
    for f in "$@"; do
        cmp -s "$f" "$work/data.bin" || { echo "bench.sh: $f differs from the data sent" >&2; exit 1; }
    done
}

report_wasm() { # mode guest curl
    awk -v m="$1" -v o="$2" -v c="$3" -v mb="$size_mb" 'BEGIN {
        printf "ftp bench %-5s %d MB upload: offsite-ftp in wasmtime %.3f s (%.0f MB/s), ratio to curl %.2f\n",
            m, mb, o, mb / o, o / c }'
}

report() { # mode ours curl
    awk -v m="$1" -v o="$2" -v c="$3" -v mb="$size_mb" 'BEGIN {
        printf "ftp bench %-5s %d MB upload: offsite-ftp %.3f s (%.0f MB/s), curl -T %.3f s (%.0f MB/s), ratio %.2f\n",
            m, mb, o, mb / o, c, mb / c, o / c }'
}

start_server "$work/plain"
ours="$(best "$client" 127.0.0.1 "$port" "$user" upload "$work/data.bin" ours.bin)"
theirs="$(best curl -sS --fail -T "$work/data.bin" --user "$user:$FTP_PASSWORD" "ftp://127.0.0.1:$port/curl.bin")"
same "$work/plain/ours.bin" "$work/plain/curl.bin"
report plain "$ours" "$theirs"
if [[ -n "$wasm" ]]; then
    guest="$(best guest 127.0.0.1 "$port" "$user" upload /work/data.bin wasm.bin)"
    same "$work/plain/wasm.bin"
    report_wasm plain "$guest" "$theirs"
fi

start_server "$work/tls" --certfile "$work/srv.pem" --keyfile "$work/srv.key"
ours="$(best "$client" --tls --ca "$work/ca.pem" 127.0.0.1 "$port" "$user" upload "$work/data.bin" ours.bin)"
theirs="$(best curl -sS --fail --ssl-reqd --cacert "$work/ca.pem" -T "$work/data.bin" \
    --user "$user:$FTP_PASSWORD" "ftp://127.0.0.1:$port/curl.bin")"
same "$work/tls/ours.bin" "$work/tls/curl.bin"
report tls "$ours" "$theirs"
if [[ -n "$wasm" ]]; then
    guest="$(best guest --tls --ca /work/ca.pem 127.0.0.1 "$port" "$user" upload /work/data.bin wasm.bin)"
    same "$work/tls/wasm.bin"
    report_wasm tls "$guest" "$theirs"
fi
