"""A pyftpdlib FTP/FTPS server for the ftp plugin's tests (and bench.sh).

Binds 127.0.0.1 on a kernel-chosen port and prints that port on stdout,
so callers never race for a port. Options let a test switch off commands
(to force the client's fallbacks), make SIZE lie, or refuse dot names.
"""

import argparse
import logging
import os
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--passive-ports", default="", help="comma-separated")
    p.add_argument("--certfile")
    p.add_argument("--keyfile")
    p.add_argument("--disable", action="append", default=[], help="command to refuse with 500")
    p.add_argument("--lie-size", action="store_true", help="SIZE answers one byte more")
    p.add_argument(
        "--refuse-dot-names",
        action="store_true",
        help="answer 553 to STOR/RNFR/DELE of names starting with a dot (hardened servers)",
    )
    p.add_argument("--log", help="log file (commands and replies)")
    a = p.parse_args()

    if a.log:
        logging.basicConfig(filename=a.log, level=logging.DEBUG, format="%(asctime)s %(message)s")
    else:
        logging.basicConfig(level=logging.WARNING)

    if a.certfile:
        from pyftpdlib.handlers import TLS_FTPHandler

        base = TLS_FTPHandler
    else:
        base = FTPHandler

    class Handler(base):
        if a.refuse_dot_names:

            def _dot(self, path):
                if os.path.basename(path.rstrip("/")).startswith("."):
                    self.respond("553 File names starting with a dot are not allowed.")
                    return True
                return False

            def ftp_STOR(self, file, mode="w"):
                if not self._dot(file):
                    return base.ftp_STOR(self, file, mode)

            def ftp_RNFR(self, path):
                if not self._dot(path):
                    return base.ftp_RNFR(self, path)

            def ftp_DELE(self, path):
                if not self._dot(path):
                    return base.ftp_DELE(self, path)

        if a.lie_size:

            def ftp_SIZE(self, path):
                if not self.fs.isfile(self.fs.realpath(path)):
                    self.respond("550 not a file.")
                    return
                self.respond(f"213 {self.fs.getsize(path) + 1}")

    auth = DummyAuthorizer()
    auth.add_user(a.user, a.password, a.dir, perm="elradfmwMT")
    Handler.authorizer = auth
    Handler.auth_failed_timeout = 0.1
    disabled = {c.upper() for c in a.disable}
    Handler.proto_cmds = {k: v for k, v in base.proto_cmds.items() if k not in disabled}
    if a.passive_ports:
        Handler.passive_ports = [int(x) for x in a.passive_ports.split(",")]
    if a.certfile:
        Handler.certfile = a.certfile
        Handler.keyfile = a.keyfile or a.certfile
        # Refuse anything unprotected, so a passing test proves PROT P worked.
        Handler.tls_control_required = True
        Handler.tls_data_required = True

    server = FTPServer(("127.0.0.1", 0), Handler)
    print(server.socket.getsockname()[1], flush=True)
    # Nobody reads stdout after the port: point it at /dev/null.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(os.devnull, "w")
    server.serve_forever(handle_exit=True)


if __name__ == "__main__":
    main()
