"""A webhook sink for the tests: python3 http_sink.py PORT LOG [STATUS ...]

Listens on 127.0.0.1:PORT and answers every request with the next STATUS of
the list (the last one repeats; 200 when none is given). Each request is
appended to LOG as one JSON line, before the answer is sent:
{"method", "path", "headers": [[name, value], ...], "body", "status"}.
Standard library only.
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

port, log_path, statuses = int(sys.argv[1]), sys.argv[2], [int(s) for s in sys.argv[3:]] or [200]
served = 0


class Sink(BaseHTTPRequestHandler):
    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size + 2)[:size]
                if size == 0:
                    return body
                body += chunk
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def answer(self):
        global served
        status = statuses[min(served, len(statuses) - 1)]
        served += 1
        body = self.read_body()
        record = {
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("utf-8", "replace"),
            "status": status,
        }
        with open(log_path, "a") as log:
            log.write(json.dumps(record) + "\n")
        reply = f"sink answered {status}".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_POST = do_GET = do_PUT = answer

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", port), Sink).serve_forever()
