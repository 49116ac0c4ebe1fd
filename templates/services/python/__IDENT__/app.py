"""The __NAME__ service: a small HTTP server on the standard library, on $PORT (default 8080).

``__NAME__ migrate`` applies the schema (nothing yet) and exits; anything else serves."""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def respond(method: str, path: str) -> tuple[int, str, bytes]:
    """The answer to one request: status, content type, body."""
    if method != "GET":
        return 405, "text/plain", b"method not allowed\n"
    if path == "/healthz":
        return 200, "text/plain", b"ok\n"
    if path == "/":
        return 200, "application/json", json.dumps({"service": "__NAME__"}).encode() + b"\n"
    return 404, "text/plain", b"not found\n"


class Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        status, content_type, body = respond(self.command, self.path)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        sys.stderr.write("__NAME__: " + format % args + "\n")


def make_server(host: str = "0.0.0.0", port: int = 8080) -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["migrate"]:
        print("__NAME__: schema is up to date")
        return 0
    server = make_server(port=int(os.environ.get("PORT") or 8080))
    print(f"__NAME__: listening on port {server.server_address[1]}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0
