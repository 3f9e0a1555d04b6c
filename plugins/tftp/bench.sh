#!/usr/bin/env bash
# Throughput of the offsite TFTP client against curl's (a native C client),
# on 127.0.0.1, with a 200 MB random file:
#   - tftpd-hpa, blksize 1468 (tftpd-hpa has no windowsize, so lockstep),
#   - atftpd, blksize 1468: curl (no windowsize support) vs ours at
#     windowsize 16.
# Upload (curl -T) and download (curl -o), each checked byte for byte.
# Prints seconds, MB/s and ours/curl throughput ratios. Measures, never fails
# on a slow result; fails if a transfer fails or corrupts data.
#
# Usage: plugins/tftp/bench.sh [SIZE_MB]   (default 200)
# Env:   OFFSITE_TFTP_CLIENT  use this client binary instead of building the
#                             `tftp` example (cargo, release)
#        CARGO_TARGET_DIR     as usual for the build
#        OFFSITE_IN_TFTPD / OFFSITE_ATFTPD  server binaries (else installed
#                             by tests/install/tftp.sh)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
size_mb="${1:-200}"

command -v curl >/dev/null || { echo "bench.sh: curl is required" >&2; exit 1; }
curl -V | grep -qw tftp || { echo "bench.sh: this curl has no tftp support" >&2; exit 1; }

# Servers.
mapfile -t paths < <(bash "$root/tests/install/tftp.sh")
in_tftpd="${OFFSITE_IN_TFTPD:-${paths[0]}}"
atftpd="${OFFSITE_ATFTPD:-${paths[1]}}"

# Our client.
if [ -n "${OFFSITE_TFTP_CLIENT:-}" ]; then
    client="$OFFSITE_TFTP_CLIENT"
else
    # The plugins workspace builds for wasm32-wasip2 by default: ask for
    # the host explicitly.
    host="$(rustc -vV | sed -n 's/^host: //p')"
    (cd "$here/.." && cargo build --quiet --release --target "$host" --example tftp -p offsite-tftp)
    target="${CARGO_TARGET_DIR:-$here/../target}"
    client="$target/$host/release/examples/tftp"
fi
[ -x "$client" ] || { echo "bench.sh: client $client not found" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/offsite-tftp-bench.XXXXXX")"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

mkdir -p "$work/hpa" "$work/atftpd" "$work/out"
chmod 755 "$work" # atftpd runs as nobody and must reach its directory
chmod 777 "$work/atftpd"
hpa_port="$(free_port)"
"$in_tftpd" -L -a "127.0.0.1:$hpa_port" -c -s -u root "$work/hpa" &
pids+=("$!")
at_port="$(free_port)"
"$atftpd" --daemon --no-fork --port "$at_port" --bind-address 127.0.0.1 --logfile /dev/null "$work/atftpd" &
pids+=("$!")
# Ready when a read of a missing file is answered (ERROR 1).
wait_ready() {
    for _ in $(seq 100); do
        local answer
        answer="$("$client" get "$1" offsite-bench-probe /dev/null --timeout-ms 100 --retries 0 2>&1 || true)"
        case "$answer" in *not-found*) return ;; esac
        sleep 0.05
    done
    echo "bench.sh: server on $1 did not start" >&2
    exit 1
}
wait_ready "127.0.0.1:$hpa_port"
wait_ready "127.0.0.1:$at_port"

src="$work/src.bin"
head -c "$((size_mb * 1000 * 1000))" /dev/urandom > "$src"
bytes="$(stat -c %s "$src")"

now() { date +%s.%N; }
# run LABEL COMMAND...: times the command, prints nothing, sets $secs.
run() {
    local t0 t1
    t0="$(now)"
    if ! "$@" 2>"$work/err"; then
        echo "bench.sh: FAILED: $*" >&2
        cat "$work/err" >&2
        exit 1
    fi
    t1="$(now)"
    secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
}
same() {
    cmp -s "$src" "$1" || { echo "bench.sh: $1 differs from the source" >&2; exit 1; }
}
mbps() { awk -v n="$bytes" -v s="$1" 'BEGIN { printf "%.1f", n / s / 1000000 }'; }

printf '%-44s %8s %9s\n' "transfer (${size_mb} MB)" "seconds" "MB/s"
row() { printf '%-44s %8.2f %9s\n' "$1" "$2" "$(mbps "$2")"; }
ratio() { printf '  ours/curl throughput: %s\n' "$(awk -v o="$1" -v c="$2" 'BEGIN { printf "%.2f", c / o }')"; }

# --- tftpd-hpa, blksize 1468 ---
srv="127.0.0.1:$hpa_port"
run curl -sS --tftp-blksize 1468 -T "$src" "tftp://$srv/curl.bin"; c_put="$secs"; same "$work/hpa/curl.bin"
row "tftpd-hpa put  curl  blksize 1468" "$c_put"
run "$client" put "$srv" ours.bin "$src" --blksize 1468; o_put="$secs"; same "$work/hpa/ours.bin"
row "tftpd-hpa put  ours  blksize 1468" "$o_put"; ratio "$o_put" "$c_put"
run curl -sS --tftp-blksize 1468 -o "$work/out/c" "tftp://$srv/ours.bin"; c_get="$secs"; same "$work/out/c"
row "tftpd-hpa get  curl  blksize 1468" "$c_get"
run "$client" get "$srv" ours.bin "$work/out/o" --blksize 1468; o_get="$secs"; same "$work/out/o"
row "tftpd-hpa get  ours  blksize 1468" "$o_get"; ratio "$o_get" "$c_get"
rm -f "$work/hpa/"*.bin "$work/out/"*

# --- atftpd, blksize 1468; ours with windowsize 16 ---
srv="127.0.0.1:$at_port"
settle() { # atftpd acknowledges the last block before it closes the file
    for _ in $(seq 100); do [ "$(stat -c %s "$1" 2>/dev/null || echo 0)" = "$bytes" ] && return; sleep 0.05; done
}
run curl -sS --tftp-blksize 1468 -T "$src" "tftp://$srv/curl.bin"; c_put="$secs"; settle "$work/atftpd/curl.bin"; same "$work/atftpd/curl.bin"
row "atftpd put  curl  blksize 1468" "$c_put"
run "$client" put "$srv" ours1.bin "$src" --blksize 1468; o1_put="$secs"; settle "$work/atftpd/ours1.bin"; same "$work/atftpd/ours1.bin"
row "atftpd put  ours  blksize 1468" "$o1_put"; ratio "$o1_put" "$c_put"
run "$client" put "$srv" ours.bin "$src" --blksize 1468 --windowsize 16; o_put="$secs"; settle "$work/atftpd/ours.bin"; same "$work/atftpd/ours.bin"
row "atftpd put  ours  blksize 1468 window 16" "$o_put"; ratio "$o_put" "$c_put"
run curl -sS --tftp-blksize 1468 -o "$work/out/c" "tftp://$srv/ours.bin"; c_get="$secs"; same "$work/out/c"
row "atftpd get  curl  blksize 1468" "$c_get"
run "$client" get "$srv" ours.bin "$work/out/o1" --blksize 1468; o1_get="$secs"; same "$work/out/o1"
row "atftpd get  ours  blksize 1468" "$o1_get"; ratio "$o1_get" "$c_get"
run "$client" get "$srv" ours.bin "$work/out/o" --blksize 1468 --windowsize 16; o_get="$secs"; same "$work/out/o"
row "atftpd get  ours  blksize 1468 window 16" "$o_get"; ratio "$o_get" "$c_get"
