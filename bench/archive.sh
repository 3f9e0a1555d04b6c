#!/usr/bin/env bash
# Archive mode (seed 003) on a churning tree, side by side with restic and
# borg (Debian packages, tests/install/bench.sh):
#   1. a tree of SMALL_FILES (200,000) small files; run 1, then 10 % churn
#      (the oldest tenth deleted, as many new files added), run 2:
#      offsite's run-2 wall time, bytes read (rchar/read_bytes from its own
#      /proc/self/io, logged at the end of the scan) and peak RSS (VmHWM;
#      aim <= 100 MiB); restic and borg: run-2 wall time on the same tree;
#      then run 3 with nothing changed (what the tree alone costs);
#   1b. the same churn (SMALL_FILES/10 new files, as many deleted) on a tree
#      a quarter the size: run 2's time and bytes read should be about the
#      big tree's (they grow with the new files, not the tree);
#   2. find + extract one file: `offsite cat` vs `restic find` + `restic
#      restore --include` vs `borg list` + `borg extract`;
#   3. `offsite find` over a catalog of CATALOG_FILES (1,000,000) files: a
#      glob + time query (aim < 1 s).
# Measures, never fails on a slow result; fails when a backup fails.
#
# Usage: bench/archive.sh     Env: SMALL_FILES, CATALOG_FILES, OFFSITE_BIN,
#   OFFSITE_WASM_DIR, TMPDIR.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
small="${SMALL_FILES:-200000}"
catalog_files="${CATALOG_FILES:-1000000}"

bash "$repo/tests/install/bench.sh"

work="$(mktemp -d "${TMPDIR:-/tmp}/offsite-bench-archive.XXXXXX")"
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/plugins"
cat > "$work/offsite.toml" <<TOML
[runner]
backup_dir = "$work/backups"
plugins_dir = "$work/plugins"
state_dir = "$work/state"
log_file = "$work/backup.log"

[jobs.rec]
source = "archive"
paths = ["$work/tree"]
volume_size = "256MiB"
seal_after = "6h"
level = 3
TOML

cat >> "$work/offsite.toml" <<TOML

[jobs.quarter]
source = "archive"
paths = ["$work/quarter"]
volume_size = "256MiB"
seal_after = "6h"
level = 3
TOML

# tree: folders of 1,000 recordings of 200 B .. 4 KiB (random bytes)
grow() { # FROM COUNT [TREE]
    python3 - "${3:-$work/tree}" "$1" "$2" <<'PY'
import os, random, sys
root, start, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(start)
for i in range(start, start + n):
    d = os.path.join(root, f"d{i // 1000:05d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"call-{i:08d}.wav"), "wb") as f:
        f.write(os.urandom(random.randint(200, 4096)))
PY
}
churn() { # FROM COUNT [TREE]: delete COUNT files (by number) from FROM
    python3 - "${3:-$work/tree}" "$1" "$2" <<'PY'
import os, sys
root, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(first, first + n):
    p = os.path.join(root, f"d{i // 1000:05d}", f"call-{i:08d}.wav")
    os.remove(p)
    if i % 1000 == 999:
        os.rmdir(os.path.dirname(p))
PY
}
grow 0 "$small"
tenth=$((small / 10))
echo "tree: $small files, $(du -sh "$work/tree" | cut -f1)" >&2

off() { "$bin" --config "$work/offsite.toml" "$@"; }
usage() { grep 'scan rchar=' "$work/backup.log" | tail -1 | sed 's/.*scan //'; }
scanned() { grep 'directories unchanged' "$work/backup.log" | tail -1 | sed 's/.*files ([0-9]* bytes); //'; }

t0=$(now); off run rec >/dev/null 2>&1; t1=$(now)
echo "offsite  run 1: $(secs "$t0" "$t1") s  $(usage)"
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$work/restic"
export BORG_PASSPHRASE=bench BORG_REPO="$work/borg" BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
restic init -q
borg init --encryption=none
t0=$(now); restic backup -q "$work/tree"; t1=$(now)
echo "restic   run 1: $(secs "$t0" "$t1") s"
t0=$(now); borg create --compression zstd,3 ::r1 "$work/tree"; t1=$(now)
echo "borg     run 1: $(secs "$t0" "$t1") s"

churn 0 "$tenth"
grow "$small" "$tenth"
t0=$(now); off run rec >/dev/null 2>&1; t1=$(now)
echo "offsite  run 2 (10 % churn): $(secs "$t0" "$t1") s  $(usage)  [$(scanned)]"
t0=$(now); restic backup -q "$work/tree"; t1=$(now)
echo "restic   run 2 (10 % churn): $(secs "$t0" "$t1") s"
t0=$(now); borg create --compression zstd,3 ::r2 "$work/tree"; t1=$(now)
echo "borg     run 2 (10 % churn): $(secs "$t0" "$t1") s"
t0=$(now); off run rec >/dev/null 2>&1; t1=$(now)
echo "offsite  run 3 (no change, $small files): $(secs "$t0" "$t1") s  $(usage)  [$(scanned)]"

# 1b. the same number of new files on a tree a quarter the size
quarter=$((small / 4))
grow 0 "$quarter" "$work/quarter"
off run quarter >/dev/null 2>&1
churn 0 "$tenth" "$work/quarter"
grow "$quarter" "$tenth" "$work/quarter"
t0=$(now); off run quarter >/dev/null 2>&1; t1=$(now)
echo "offsite  run 2 on $quarter files, the same $tenth new: $(secs "$t0" "$t1") s  $(usage)  [$(scanned)]"
t0=$(now); off run quarter >/dev/null 2>&1; t1=$(now)
echo "offsite  run 3 (no change, $quarter files): $(secs "$t0" "$t1") s  $(usage)  [$(scanned)]"

# 2. one deleted file (gone since run 2), found and extracted
name="call-$(printf %08d 17).wav"
path="$work/tree/d00000/$name"
t0=$(now); off find rec "$name" >/dev/null; off cat rec "$path" > "$work/one.off"; t1=$(now)
echo "offsite  find + cat one file: $(secs "$t0" "$t1") s"
t0=$(now); restic find -q "$name" >/dev/null
restic restore -q latest --target "$work/r" --include "$path" 2>/dev/null || true
restic restore -q "$(restic snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["short_id"])')" --target "$work/r" --include "$path"
t1=$(now)
echo "restic   find + restore one file: $(secs "$t0" "$t1") s"
t0=$(now); borg list ::r1 "${path#/}" >/dev/null; (cd "$work" && mkdir -p b && cd b && borg extract ::r1 "${path#/}"); t1=$(now)
echo "borg     list + extract one file: $(secs "$t0" "$t1") s"
cmp "$work/one.off" "$work/b/${path#/}" || die "offsite cat and borg extract differ"

# 3. find over a catalog of CATALOG_FILES files
python3 - "$work/backups/rec/catalog.sqlite" "$catalog_files" <<'PY'
import sqlite3, sys, random
db, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
vid = c.execute("SELECT id FROM volumes ORDER BY seq LIMIT 1").fetchone()[0]
have = c.execute("SELECT COUNT(*) FROM members").fetchone()[0]
base = 1_700_000_000 * 10**9
rows = []
for i in range(have, n):
    name = f"call-{i:08d}.wav".encode()
    rows.append((f"/srv/calls/d{i // 1000:05d}/".encode() + name, name))
c.executemany("INSERT OR IGNORE INTO paths(path, name) VALUES (?, ?)", rows)
c.execute("""INSERT INTO members(path_id, volume_id, offset, clen, header_len, size, mtime_ns, ctime_ns,
  ino, dev, mode, uid, gid, sha256, archived_at)
  SELECT id, ?, 0, 1, 512, 1000, ? + id * 1000000000, 0, id, 0, 33188, 0, 0, 'x', ? + id * 1000000000
  FROM paths WHERE id > (SELECT MAX(path_id) FROM members)""", (vid, base, base))
c.commit()
print(c.execute("SELECT COUNT(*) FROM members").fetchone()[0], "members", file=sys.stderr)
PY
# a name prefix that matches 1 % of the catalog (call-0042* of 1,000,000)
pat="call-$(printf %08d $((catalog_files * 42 / 100)) | cut -c1-4)*"
t0=$(now); n=$(off find rec "$pat" --since 2023-11-14T22:13:20Z --until 2023-11-26T00:00:00Z --json | grep -c '"path"' || true); t1=$(now)
rss=$( { /usr/bin/time -f %M "$bin" --config "$work/offsite.toml" find rec "$pat" --since 2023-11-14T22:13:20Z >/dev/null; } 2>&1 | tail -1)
echo "offsite  find over $catalog_files files (glob + time): $(secs "$t0" "$t1") s, $n matches, peak RSS ${rss} KiB"
