# Sourced by ecopy_ftp.sh, eremove_ftp.sh and efetch_ftp.sh: reads
# ftp.conf from the scripts' own directory and defines ftp_curl.
conf="$(dirname -- "$0")/ftp.conf"
if [ ! -r "$conf" ]; then
    echo "$0: $conf is missing; copy ftp.conf.example there and edit it" >&2
    exit 78
fi
. "$conf"
: "${FTP_URL:?is not set in $conf}" "${FTP_NETRC:?is not set in $conf}"
FTP_URL=${FTP_URL%/}

# curl with the login from the netrc file (never on the command line, where
# `ps` would show it) and errors only.
ftp_curl() {
    if [ "${FTP_TLS:-no}" = yes ]; then
        curl --silent --show-error --netrc-file "$FTP_NETRC" --ssl-reqd "$@"
    else
        curl --silent --show-error --netrc-file "$FTP_NETRC" "$@"
    fi
}
