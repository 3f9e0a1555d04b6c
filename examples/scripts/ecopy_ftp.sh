#!/bin/sh
# ecopy for an FTP server: uploads the backup file named by its single
# argument under a temporary name, renames it to its base name, and exits 0
# only when the server reports the full size under that name. Settings are
# in ftp.conf beside it (see ftp.conf.example).
# Install: copy to SCRIPTS_DIR/ecopy, with ftp-common.sh beside it.
set -eu
if [ $# -ne 1 ]; then
    echo "usage: $0 FILE" >&2
    exit 64
fi
. "$(dirname -- "$0")/ftp-common.sh"
file=$1
name=$(basename -- "$file")
part=".$name.part"

# A name on the server never shows partial content: STOR to .NAME.part,
# then RNFR/RNTO (RFC 959 4.1.3) after the transfer ("-" = after, in the
# target directory).
ftp_curl --ftp-create-dirs --upload-file "$file" \
    --quote "-RNFR $part" --quote "-RNTO $name" \
    "$FTP_URL/$part"

# SIZE (RFC 3659), which curl -I reports as Content-Length.
want=$(wc -c <"$file" | tr -d ' ')
got=$(ftp_curl --head "$FTP_URL/$name" | tr -d '\r' | sed -n 's/^Content-Length: //p')
if [ "$got" != "$want" ]; then
    echo "$0: $name is ${got:-unknown} bytes on the server, $want here" >&2
    exit 1
fi
