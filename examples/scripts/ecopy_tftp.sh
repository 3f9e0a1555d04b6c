#!/bin/sh
# ecopy for a TFTP server, like the sample seed 000 ships as
# /home/ssp/scripts/ecopy_tftp.sh: uploads the backup file named by its
# single argument, under the same base name, and exits 0 only when the server
# acknowledged the last block.
#
# Install: copy to SCRIPTS_DIR/ecopy (chmod 0755, owned by root) and set the
# variables below. offsite runs it with an almost empty environment, so the
# settings live here, not in variables from your shell.
#
# TFTP cannot delete (RFC 1350 has no such request), so there is no eremove
# for it: old copies on the server are rotated by something on that server,
# e.g. a cron job with `find DIR -name '*.zst' -mtime +14 -delete`.
# The server must allow creating files (tftpd-hpa: -c; atftpd: writable dir).
# TFTP has no integrity check beyond UDP checksums and no atomic rename: a
# failed upload can leave a partial file under the name, which the next
# successful upload overwrites.

TFTP_HOST=192.0.2.10     # name or address; an IPv6 address in brackets: [2001:db8::10]
TFTP_PORT=69
TFTP_BLKSIZE=1468        # RFC 2348 block size; 1468 fills a 1500-byte MTU, 512 sends no option
TFTP_TIMEOUT=30          # seconds to wait for the server to answer at all

set -eu
if [ $# -ne 1 ]; then
    echo "usage: $0 FILE" >&2
    exit 64
fi
file=$1
name=$(basename -- "$file")
exec curl --silent --show-error --connect-timeout "$TFTP_TIMEOUT" \
    --tftp-blksize "$TFTP_BLKSIZE" \
    --upload-file "$file" "tftp://$TFTP_HOST:$TFTP_PORT/$name"
