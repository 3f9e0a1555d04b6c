"""aiosmtpd with AUTH, for the tests (the `python -m aiosmtpd` command line
has no option for an authenticator):

    python smtp_auth_sink.py PORT MAILDIR USER PASSWORD CERT KEY AUTHLOG [MECHANISM ...]

Listens on 127.0.0.1:PORT with STARTTLS (CERT/KEY) required before any mail
command, and AUTH required; aiosmtpd offers AUTH only after STARTTLS
(auth_require_tls, its default). MECHANISMs (PLAIN, LOGIN) limit what AUTH
offers. Mails land in MAILDIR/new (aiosmtpd.handlers.Mailbox, as with the
command line); every AUTH attempt is appended to AUTHLOG as a JSON line
{"mechanism", "login", "success"} (never the password).
"""
import asyncio
import json
import ssl
import sys

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

port, maildir, user, password, cert, key, auth_log = sys.argv[1:8]
offered = [m.upper() for m in sys.argv[8:]] or ["PLAIN", "LOGIN"]


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login == user.encode() and auth_data.password == password.encode()
    )
    login = auth_data.login.decode("utf-8", "replace") if isinstance(auth_data, LoginPassword) else None
    with open(auth_log, "a") as log:
        log.write(json.dumps({"mechanism": mechanism, "login": login, "success": ok}) + "\n")
    # handled=False: aiosmtpd itself answers 535 on failure.
    return AuthResult(success=ok, handled=False)


tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
tls.load_cert_chain(cert, key)
handler = Mailbox(maildir)
loop = asyncio.new_event_loop()


def factory():
    return SMTP(
        handler,
        hostname="sink.test",
        tls_context=tls,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
        auth_exclude_mechanism=[m for m in ("PLAIN", "LOGIN") if m not in offered],
        loop=loop,
    )


loop.run_until_complete(loop.create_server(factory, host="127.0.0.1", port=int(port)))
loop.run_forever()
