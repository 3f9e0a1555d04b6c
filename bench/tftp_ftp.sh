#!/usr/bin/env bash
# Upload throughput of the tftp and ftp plugins, run by the runner inside its
# sandbox, against curl (a native C client) to the same local servers, with
# one incompressible file (200 MB by default):
#   - tftp, tftpd-hpa, blksize 1468, lockstep      ÷ curl -T, blksize 1468  (aim <= 1.1)
#   - tftp, atftpd, blksize 1468, windowsize 16    ÷ curl -T, blksize 1468  (aim <= 0.5)
#     (and lockstep against atftpd, for reference)
#   - ftp, pyftpdlib plain                         ÷ curl -T                (aim <= 1.1)
#   - ftp, pyftpdlib explicit TLS                  ÷ curl -T --ssl-reqd     (reference)
# The plugin's time is the `upload` step of `offsite plugins test`: the
# upload call alone, with the runner streaming the file into the sandbox
# (the conformance run then fetches it back and checks the sha256).
# Each figure is the best of $RUNS runs. Prints raw seconds and the ratios
# plugin/curl (below 1 = faster than curl). Measures, never fails on a slow
# result; fails when a transfer fails.
#
# Usage: bench/tftp_ftp.sh          Env: SIZE_MB (200), RUNS (3),
#   OFFSITE_BIN, OFFSITE_WASM_DIR (as the justfile exports them),
#   OFFSITE_IN_TFTPD / OFFSITE_ATFTPD, OFFSITE_VENV.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
size_mb="${SIZE_MB:-200}"
runs="${RUNS:-3}"
py="$venv/bin/python"
need_plugin tftp ftp

command -v curl >/dev/null || die "curl is required"
curl -V | grep -qw tftp || die "this curl has no tftp support"

mapfile -t tftpd < <(bash "$repo/tests/install/tftp.sh")
in_tftpd="${OFFSITE_IN_TFTPD:-${tftpd[0]}}"
atftpd="${OFFSITE_ATFTPD:-${tftpd[1]}}"
bash "$repo/tests/install/ftp.sh" >/dev/null
"$py" -c 'import pyftpdlib, OpenSSL' 2>/dev/null || die "pyftpdlib missing in $venv: run tests/install/ftp.sh"

work="$(mktemp -d "${TMPDIR:-/tmp}/offsite-bench-tftp-ftp.XXXXXX")"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
chmod 755 "$work" # atftpd runs as nobody and must reach its directory
mkdir -p "$work/hpa" "$work/atftpd" "$work/ftp" "$work/ftps" "$work/state"
chmod 777 "$work/atftpd"

# A config only for its state_dir (the compiled-plugin cache) and limits.
runner_table "$work/state" "$work/bench.log" >"$work/offsite.toml"

free_udp_port() {
    python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_tftp() { # ready when a read request for a missing file is answered
    python3 - "$1" <<'EOF' || die "TFTP server on port $1 did not start"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.05)
end = time.time() + 10
while time.time() < end:
    s.sendto(b"\x00\x01offsite-probe\x00octet\x00", ("127.0.0.1", int(sys.argv[1])))
    try:
        s.recvfrom(600)
        sys.exit(0)
    except OSError:
        pass
sys.exit(1)
EOF
}
hpa_port="$(free_udp_port)"
"$in_tftpd" -L -a "127.0.0.1:$hpa_port" -c -s -u root "$work/hpa" &
pids+=("$!")
at_port="$(free_udp_port)"
"$atftpd" --daemon --no-fork --port "$at_port" --bind-address 127.0.0.1 --logfile /dev/null "$work/atftpd" &
pids+=("$!")
wait_tftp "$hpa_port"
wait_tftp "$at_port"

user=bench
pass="bench-$$-$RANDOM"
printf '%s\n' "$pass" >"$work/ftp.pass"
chmod 600 "$work/ftp.pass"   # offsite refuses a secret file others can read
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -keyout "$work/ftpd.key" -out "$work/ftpd.pem" -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 2>/dev/null
start_ftpd() { # $1 = root, rest = extra args; sets $ftp_port
    local out="$work/port.$RANDOM"
    "$py" "$repo/plugins/ftp/tests/ftpd.py" --dir "$1" --user "$user" --password "$pass" "${@:2}" >"$out" 2>/dev/null &
    pids+=("$!")
    for _ in $(seq 100); do
        ftp_port="$(head -n1 "$out" 2>/dev/null || true)"
        [ -n "$ftp_port" ] && return 0
        sleep 0.1
    done
    die "ftpd.py did not start"
}
start_ftpd "$work/ftp"
ftp_plain="$ftp_port"
start_ftpd "$work/ftps" --certfile "$work/ftpd.pem" --keyfile "$work/ftpd.key"
ftp_tls="$ftp_port"

bytes=$((size_mb * 1000 * 1000))
head -c "$bytes" /dev/urandom >"$work/src.bin"
# plugin_upload WASM SERVER_DIR SETTINGS...: seconds of the upload step.
plugin_upload() {
    local wasm="$1" dir="$2" args=() out secs
    shift 2
    for s in "$@"; do args+=(-s "$s"); done
    out="$("$bin" --config "$work/offsite.toml" plugins test "$wasm" "${args[@]}" --size "$bytes" 2>&1)" ||
        { echo "$out" >&2; die "plugins test failed"; }
    secs="$(awk '$1 == "upload" && $2 == "ok" { printf "%.3f", $3 / 1000 }' <<<"$out")"
    [ -n "$secs" ] || { echo "$out" >&2; die "no upload time in the output"; }
    find "$dir" -type f -delete
    echo "$secs"
}
# curl_upload SERVER_DIR CURL_ARGS...: seconds of `curl -T`, checked byte for byte.
curl_upload() {
    local dir="$1" t0 t1
    shift
    t0="$(now)"
    curl -sS --fail "$@" -T "$work/src.bin" 2>"$work/err" || { cat "$work/err" >&2; die "curl $* failed"; }
    t1="$(now)"
    # atftpd acknowledges the last block before it closes the file.
    for _ in $(seq 200); do
        [ "$(stat -c %s "$dir/curl.bin" 2>/dev/null || echo 0)" = "$bytes" ] && break
        sleep 0.05
    done
    cmp -s "$work/src.bin" "$dir/curl.bin" || die "curl's copy in $dir differs"
    rm -f "$dir/curl.bin"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
best() { # best (lowest) of $runs runs of the command's printed seconds
    local b="" t
    for _ in $(seq "$runs"); do
        t="$("$@")"
        b="$(awk -v a="$b" -v t="$t" 'BEGIN { if (a == "" || t < a) print t; else print a }')"
    done
    echo "$b"
}
mbps() { awk -v n="$bytes" -v s="$1" 'BEGIN { printf "%.1f", n / s / 1000000 }'; }
row() { # label plugin_secs curl_secs aim
    awk -v l="$1" -v o="$2" -v c="$3" -v aim="$4" -v n="$bytes" 'BEGIN {
        printf "%-46s plugin %7.3f s (%6.1f MB/s)  curl %7.3f s (%6.1f MB/s)  ratio %.2f%s\n",
            l, o, n / o / 1e6, c, n / c / 1e6, o / c, (aim == "" ? "" : sprintf("  (aim <= %s)", aim)) }'
}

tftp_wasm="$wasm_dir/offsite_tftp.wasm"
ftp_wasm="$wasm_dir/offsite_ftp.wasm"
echo "tftp/ftp plugins vs curl: ${size_mb} MB upload, best of $runs, 127.0.0.1"

c="$(best curl_upload "$work/hpa" --tftp-blksize 1468 "tftp://127.0.0.1:$hpa_port/curl.bin")"
o="$(best plugin_upload "$tftp_wasm" "$work/hpa" host=127.0.0.1 port="$hpa_port" blksize=1468 windowsize=1)"
row "tftp tftpd-hpa blksize 1468 lockstep" "$o" "$c" 1.1

c="$(best curl_upload "$work/atftpd" --tftp-blksize 1468 "tftp://127.0.0.1:$at_port/curl.bin")"
o="$(best plugin_upload "$tftp_wasm" "$work/atftpd" host=127.0.0.1 port="$at_port" blksize=1468 windowsize=1)"
row "tftp atftpd blksize 1468 lockstep" "$o" "$c" ""
o="$(best plugin_upload "$tftp_wasm" "$work/atftpd" host=127.0.0.1 port="$at_port" blksize=1468 windowsize=16)"
row "tftp atftpd blksize 1468 windowsize 16" "$o" "$c" 0.5

c="$(best curl_upload "$work/ftp" --user "$user:$pass" "ftp://127.0.0.1:$ftp_plain/curl.bin")"
o="$(best plugin_upload "$ftp_wasm" "$work/ftp" host=127.0.0.1 port="$ftp_plain" user="$user" password_file="$work/ftp.pass")"
row "ftp pyftpdlib plain" "$o" "$c" 1.1

c="$(best curl_upload "$work/ftps" --ssl-reqd --cacert "$work/ftpd.pem" --user "$user:$pass" "ftp://127.0.0.1:$ftp_tls/curl.bin")"
o="$(best plugin_upload "$ftp_wasm" "$work/ftps" host=127.0.0.1 port="$ftp_tls" user="$user" password_file="$work/ftp.pass" \
    tls=true "tls_ca=$(cat "$work/ftpd.pem")")"
row "ftp pyftpdlib explicit TLS" "$o" "$c" ""
