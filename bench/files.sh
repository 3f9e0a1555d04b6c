#!/usr/bin/env bash
# File-tree backups against GNU tar piped into zstd, the way an operator
# would do it by hand:
#   1. a tree of >= 1 GiB of mixed sizes (many small files, some of a few
#      MiB, a few of 100+ MiB; half random, half text-like):
#        offsite run (files job, zstd level 3)  ÷  tar -cf - TREE | zstd -3 > file
#      wall time from one run each, page cache warm for both (aim <= 1.05);
#      verify = "none" for this job, since tar | zstd does not re-read its
#      file either (offsite still fsyncs and writes its manifest);
#   2. a tree of 200,000 small files: wall time of both and peak RSS of the
#      offsite run (/usr/bin/time -v, else /proc polling; aim <= 64 MiB).
# Measures, never fails on a slow result; fails when a backup fails.
#
# Usage: bench/files.sh     Env: TREE_MB (1100), SMALL_FILES (200000),
#   OFFSITE_BIN (as the justfile exports it), TMPDIR (where the trees go;
#   needs about 2.5x TREE_MB free).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
tree_mb="${TREE_MB:-1100}"
small="${SMALL_FILES:-200000}"

command -v zstd >/dev/null || die "zstd is required (tests/install/tools.sh)"

work="$(mktemp -d "${TMPDIR:-/tmp}/offsite-bench-files.XXXXXX")"
trap 'rm -rf "$work"' EXIT


# --- 1. the mixed tree ------------------------------------------------------
python3 - "$work/big" "$tree_mb" <<'EOF'
import os, random, sys
root, total = sys.argv[1], int(sys.argv[2]) << 20
random.seed(13)
words = [bytes(random.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(random.randint(2, 9))) for _ in range(5000)]
def text(n):
    out = bytearray()
    while len(out) < n:
        out += b" ".join(random.choices(words, k=64)) + b"\n"
    return bytes(out[:n])
done, i = 0, 0
sizes = [4096] * 4000 + [64 << 10] * 800 + [3 << 20] * 100 + [150 << 20] * 5
random.shuffle(sizes)
for n in sizes:
    if done >= total:
        break
    d = os.path.join(root, f"d{i % 97:02d}", f"e{i % 13}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
        if i % 2:
            f.write(os.urandom(n))
        else:
            f.write(text(n))
    done += n
    i += 1
print(f"tree: {i} files, {done >> 20} MiB", file=sys.stderr)
EOF

{ runner_table "$work/state" "$work/bench.log"; cat <<EOF

[jobs.big]
source = "files"
paths = ["$work/big"]
level = 3
verify = "none"

[jobs.small]
source = "files"
paths = ["$work/small"]
level = 3
EOF
} >"$work/offsite.toml"
mkdir -p "$work/plugins"

# Warm the page cache for both sides alike.
tar -cf - -C "$work" big >/dev/null

t0=$(now)
tar -cf - -C "$work" big | zstd -q -3 >"$work/big.tar.zst"
# offsite fsyncs its generation before calling it one; the same for tar's.
sync "$work/big.tar.zst"
ts=$(now)
"$bin" --config "$work/offsite.toml" run big >/dev/null 2>"$work/run-big.err" || {
    cat "$work/run-big.err" >&2
    die "offsite run big failed"
}
t2=$(now)
tar_s=$(secs "$t0" "$ts")
off_s=$(secs "$ts" "$t2")
gen=$(ls "$work/backups/big/"*.tar.zst)
echo "files job over $(du -sm "$work/big" | cut -f1) MiB mixed tree:"
echo "  tar -cf - | zstd -3      ${tar_s} s incl. sync of the file ($(stat -c %s "$work/big.tar.zst") bytes)"
echo "  offsite run (zstd 3)     ${off_s} s  ($(stat -c %s "$gen") bytes)"
echo "  ratio offsite/tar+zstd   $(python3 -c "print(f'{$off_s / $tar_s:.3f}')")  (aim <= 1.05)"
rm -rf "$work/big" "$work/big.tar.zst" "$work/backups/big"

# --- 2. 200,000 small files -------------------------------------------------
python3 - "$work/small" "$small" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:03d}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}.txt"), "wb") as f:
        f.write(b"call record %d\n" % i * (1 + i % 40))
EOF
tar -cf - -C "$work" small >/dev/null

t0=$(now)
tar -cf - -C "$work" small | zstd -q -3 >"$work/small.tar.zst"
t1=$(now)
if [ -x /usr/bin/time ]; then
    /usr/bin/time -v "$bin" --config "$work/offsite.toml" run small >/dev/null 2>"$work/run-small.err" || {
        cat "$work/run-small.err" >&2
        die "offsite run small failed"
    }
    rss_kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/run-small.err")
else
    "$bin" --config "$work/offsite.toml" run small >/dev/null 2>"$work/run-small.err" &
    pid=$!
    rss_kb=0
    while kill -0 "$pid" 2>/dev/null; do
        hwm=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$pid/status" 2>/dev/null || true)
        [ -n "$hwm" ] && [ "$hwm" -gt "$rss_kb" ] && rss_kb=$hwm
        sleep 0.05
    done
    wait "$pid" || { cat "$work/run-small.err" >&2; die "offsite run small failed"; }
fi
t2=$(now)
echo "files job over $small small files:"
echo "  tar -cf - | zstd -3      $(secs "$t0" "$t1") s"
echo "  offsite run (zstd 3)     $(secs "$t1" "$t2") s, peak RSS $((rss_kb / 1024)) MiB (aim <= 64 MiB)"
