#!/bin/sh
# efetch for an FTP server (offsite's addition to seed 000's contract, used by
# `offsite restore --from`): writes the backup NAME from the server to the
# absolute path TARGET. Settings are in ftp.conf beside it.
# Install: copy to SCRIPTS_DIR/efetch, with ftp-common.sh beside it.
set -eu
if [ $# -ne 2 ]; then
    echo "usage: $0 NAME TARGET" >&2
    exit 64
fi
. "$(dirname -- "$0")/ftp-common.sh"
ftp_curl --output "$2" "$FTP_URL/$1"
