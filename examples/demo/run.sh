#!/usr/bin/env bash
# `just demo`: back up a small generated web app tree, ship it through the
# local-dir plugin, list, verify and restore it. No server, no root: all of
# it lives under ./demo-out.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
demo="$root/demo-out"
bin="${OFFSITE_BIN:?run through just demo}"
wasm="${OFFSITE_WASM_DIR:?run through just demo}"

rm -rf "$demo"
mkdir -p "$demo"/{plugins,nas,data/wwwroot/app/static,data/wwwroot/app/uploads}
cp "$wasm/offsite_local_dir.wasm" "$demo/plugins/local-dir.wasm"
sed "s|@DEMO@|$demo|g" "$root/examples/demo/offsite.toml" > "$demo/offsite.toml"

# A small app: code, config, uploads (incompressible), a symlink.
app="$demo/data/wwwroot/app"
for i in $(seq 1 40); do
    printf '<?php // page %d\necho "hello from page %d";\n' "$i" "$i" > "$app/page$i.php"
done
printf 'DB_HOST=127.0.0.1\nDB_NAME=app\n' > "$app/.env"
chmod 600 "$app/.env"
head -c 2000000 /dev/urandom > "$app/uploads/photo.jpg"
seq 1 20000 > "$app/static/data.csv"
ln -s static/data.csv "$app/latest.csv"

off() { "$bin" --config "$demo/offsite.toml" "$@"; }
step() { printf '\n\033[1m$ offsite %s\033[0m\n' "$*"; }

step config check;  off config check
step run demo;      off run demo
sleep 1.1
echo "changed" >> "$app/page1.php"
step run demo;      off run demo
step list;          off list
step verify demo;   off verify demo
step restore demo --to-dir demo-out/restored
off restore demo --to-dir "$demo/restored"
if diff -r "$app" "$demo/restored$app" >/dev/null; then
    echo "restored tree is identical to $app"
else
    echo "restored tree differs from $app" >&2
    exit 1
fi
printf '\nthe NAS folder (%s):\n' "$demo/nas"
ls -l "$demo/nas"
printf '\nlog: %s\n' "$demo/backup.log"
