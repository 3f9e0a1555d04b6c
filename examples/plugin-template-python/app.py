"""An offsite destination over HTTP (WebDAV), in Python.

Build (see README.md): componentize-py -d wit -w destination-http componentize app -o NAME.wasm
Every byte of an upload or a fetch moves host stream to host stream
(`blocking_splice`): none passes through Python, so a generation of any size
fits in plugin_memory.
"""

import base64
import re
from urllib.parse import urlsplit, quote, unquote

from componentize_py_types import Err, Ok, Some
from wit_world import exports
from wit_world.imports import outgoing_handler, streams
from wit_world.imports import wasi_http_types as http
from wit_world.imports.offsite_plugin_types import (
    Error_Config, Error_NotFound, Error_Other, Error_Rejected, Error_Transient,
    Error_Unsupported, Fetched_Streamed, ObjectInfo, PluginInfo, PluginKind,
    Setting, SettingRole,
)

NAME = "template-python"
CHUNK = 1 << 20


def fail(kind, message):
    raise Err(kind(f"{NAME}: {message}"))


def status_error(method, path, status):
    """An HTTP status as the error offsite acts on."""
    what = f"{method} {path}: HTTP {status}"
    if status == 404:
        fail(Error_NotFound, what)
    if status in (401, 403):
        fail(Error_Config, f"{what}: check user and password")
    if status in (408, 425, 429) or status >= 500 and status != 507:
        fail(Error_Transient, what)
    if status == 507:
        fail(Error_Rejected, f"{what}: the server is out of space")
    fail(Error_Other, what)


class Url:
    def __init__(self, url):
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            fail(Error_Config, f"`url` = {url!r}: write http(s)://host[:port]/path/")
        self.https = u.scheme == "https"
        self.authority = u.netloc.rsplit("@", 1)[-1]
        self.base = u.path if u.path.endswith("/") else u.path + "/"


# componentize-py makes a new DestinationApi for every call: what
# `configure` keeps lives in the module.
STATE = {}


class DestinationApi(exports.DestinationApi):
    @property
    def url(self):
        return STATE["url"]

    @property
    def auth(self):
        return STATE["auth"]

    def describe(self):
        def s(key, desc, required=False, secret=False, default=None, role=SettingRole.PLAIN):
            return Setting(key, desc, required, secret, default, role)
        return PluginInfo(NAME, "0.1.0", PluginKind.DESTINATION,
                          "Keeps copies in a WebDAV collection (Python)", [
            s("url", "the collection, e.g. https://nas:8443/dav/backups/", True, role=SettingRole.HTTP_URL),
            s("user", "user for basic auth", default=""),
            s("password", "password for basic auth", secret=True, default=""),
            s("tls_ca", "PEM CA (text or file path) the server's certificate is checked against", default=""),
            s("tls_insecure", "true: do not check the server's certificate", default="false"),
        ])

    def configure(self, settings):
        cfg = dict(settings)
        STATE["url"] = Url(cfg["url"])
        STATE["auth"] = None
        if cfg.get("user"):
            token = base64.b64encode(f"{cfg['user']}:{cfg.get('password', '')}".encode())
            STATE["auth"] = b"Basic " + token

    # --- one HTTP exchange -------------------------------------------------
    def path(self, name):
        return self.url.base + quote(name)

    def send(self, method, path, headers=(), body=None, size=0):
        """Send a request; `body` an input stream spliced into it (`size`
        bytes, sent with Content-Length, never chunked). Returns the
        incoming response."""
        fields = [(k, v) for k, v in headers]
        if self.auth:
            fields.append(("authorization", self.auth))
        if body is not None:
            fields.append(("content-length", str(size).encode()))
        req = http.OutgoingRequest(http.Fields.from_list(fields))
        req.set_method(method)
        req.set_scheme(http.Scheme_Https() if self.url.https else http.Scheme_Http())
        req.set_authority(self.url.authority)
        req.set_path_with_query(path)
        out_body = req.body() if body is not None else None
        future = outgoing_handler.handle(req, None)
        if out_body is not None:
            out = out_body.write()
            moved = 0
            try:
                while moved < size:
                    n = out.blocking_splice(body, min(CHUNK, size - moved))
                    moved += n
            except Err as e:
                out.__exit__(None, None, None)
                out_body.__exit__(None, None, None)
                future.__exit__(None, None, None)
                fail(Error_Transient, f"{path}: the upload stream failed after {moved} of {size} bytes")
            try:
                out.blocking_flush()
            except Err:
                pass  # the server may close after exactly Content-Length bytes
            out.__exit__(None, None, None)
            http.OutgoingBody.finish(out_body, None)
        return self.wait(future, path)

    def wait(self, future, path):
        while True:
            got = future.get()
            if got is not None:
                break
            future.subscribe().block()
        # Optional[Result[Result[IncomingResponse, ErrorCode], None]]
        if isinstance(got, Err):
            fail(Error_Transient, f"{path}: the answer was taken already")
        r = got.value
        if isinstance(r, Err):
            fail(Error_Transient, f"{path}: {r.value}")
        return r.value

    def drain(self, resp):
        """Read and drop a small answer's body; returns it (capped)."""
        body = resp.consume()
        stream = body.stream()
        data = b""
        try:
            while len(data) < (16 << 20):
                data += stream.blocking_read(65536)
        except Err:
            pass
        stream.__exit__(None, None, None)
        http.IncomingBody.finish(body)
        return data

    def call(self, method, name, ok, headers=(), label=None):
        path = self.path(name)
        resp = self.send(method, path, headers)
        status = resp.status()
        data = self.drain(resp)
        if status not in ok:
            status_error(label or type(method).__name__[7:].upper(), path, status)
        return status, data

    # --- the contract --------------------------------------------------------
    def upload(self, req, data):
        tmp = f".{req.name}.part"
        path = self.path(tmp)
        try:
            resp = self.send(http.Method_Put(), path, body=data, size=req.size)
        except Err:
            self.call(http.Method_Delete(), tmp, (200, 204, 404))
            raise
        status = resp.status()
        self.drain(resp)
        if status not in (200, 201, 204):
            self.call(http.Method_Delete(), tmp, (200, 204, 404))
            status_error("PUT", path, status)
        dest = ("http" + ("s" if self.url.https else "") + "://"
                + self.url.authority + self.path(req.name))
        self.call(http.Method_Other("MOVE"), tmp, (201, 204),
                  headers=[("destination", dest.encode()), ("overwrite", b"T")], label="MOVE")

    def remove(self, req):
        self.call(http.Method_Delete(), req.name, (200, 204))

    def fetch(self, req, sink):
        path = self.path(req.name)
        resp = self.send(http.Method_Get(), path)
        status = resp.status()
        if status != 200:
            self.drain(resp)
            status_error("GET", path, status)
        body = resp.consume()
        stream = body.stream()
        moved = 0
        while True:
            try:
                moved += sink.blocking_splice(stream, CHUNK)
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    break
                fail(Error_Transient, f"GET {path}: the answer broke off after {moved} bytes")
        stream.__exit__(None, None, None)
        http.IncomingBody.finish(body)
        sink.blocking_flush()
        return Fetched_Streamed(moved)

    def fetch_range(self, req, sink):
        fail(Error_Unsupported, "ranged reads are not written yet; the runner fetches the whole object")

    def list(self, name_prefix):
        _, xml = self.call(http.Method_Other("PROPFIND"), "", (207,),
                           headers=[("depth", b"1")], label="PROPFIND")
        out = []
        for resp in re.findall(rb"<(?:[\w.-]+:)?response\b.*?</(?:[\w.-]+:)?response>", xml, re.S):
            href = re.search(rb"<(?:[\w.-]+:)?href>([^<]*)</", resp)
            if not href:
                continue
            name = unquote(href.group(1).decode()).rstrip("/").rsplit("/", 1)[-1]
            if re.search(rb"<(?:[\w.-]+:)?collection\s*/>", resp) or name.startswith("."):
                continue
            if not name.startswith(name_prefix):
                continue
            size = re.search(rb"getcontentlength>(\d+)</", resp)
            out.append(ObjectInfo(name, int(size.group(1)) if size else None, None))
        return out
