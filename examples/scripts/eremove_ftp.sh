#!/bin/sh
# eremove for an FTP server: deletes the copy of the backup file named by its
# single argument (its base name; the local file may be gone already). A
# copy that is not there counts as removed, so a retry after a lost answer
# succeeds. Settings are in ftp.conf beside it (see ftp.conf.example).
# Install: copy to SCRIPTS_DIR/eremove, with ftp-common.sh beside it.
set -eu
if [ $# -ne 1 ]; then
    echo "usage: $0 FILE" >&2
    exit 64
fi
. "$(dirname -- "$0")/ftp-common.sh"
name=$(basename -- "$1")

# DELE after changing into the directory (a name-only listing is the
# transfer curl needs to get there; it is thrown away).
if ftp_curl --list-only --output /dev/null --quote "-DELE $name" "$FTP_URL/"; then
    exit 0
fi
# curl exits 78 when the file does not exist.
status=0
ftp_curl --head --output /dev/null "$FTP_URL/$name" 2>/dev/null || status=$?
if [ "$status" -eq 78 ]; then
    echo "$0: $name is not on the server (already removed)"
    exit 0
fi
exit 1
