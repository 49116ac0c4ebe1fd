"""A git server on loopback: real ``git http-backend`` (smart HTTP) behind a tiny Python server.

Flux's source-controller fetches over http(s) or ssh only, never ``file://``; this serves every
bare repository under ``root`` at ``http://127.0.0.1:<port>/<path relative to root>``, read and
write (``http.receivepack`` is allowed via the environment), in a daemon thread. With
``basic_auth=(user, password)`` every request needs that Basic ``Authorization`` (401 otherwise),
and ``authorized`` counts the requests that had it.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

GIT = "/usr/bin/git"


class _Handler(BaseHTTPRequestHandler):
    root: Path
    owner: GitServer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _cgi(self) -> None:
        expected = self.owner.expected_auth
        if expected is not None:
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.owner.authorized += 1
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_PROJECT_ROOT": str(self.root),
               "GIT_HTTP_EXPORT_ALL": "1", "REQUEST_METHOD": self.command, "PATH_INFO": path,
               "QUERY_STRING": query, "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": self.client_address[0],
               "REMOTE_USER": "forge", "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.receivepack",
               "GIT_CONFIG_VALUE_0": "true"}
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        proc = subprocess.run([GIT, "http-backend"], input=body, env=env, capture_output=True, timeout=120)
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = proc.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _cgi


class GitServer:
    def __init__(self, root: Path, *, basic_auth: tuple[str, str] | None = None) -> None:
        self.expected_auth = None if basic_auth is None else (
            "Basic " + base64.b64encode(":".join(basic_auth).encode()).decode())
        self.authorized = 0
        handler = type("Handler", (_Handler,), {"root": root, "owner": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.root = root
        self.thread = threading.Thread(target=self.server.serve_forever, name="git-http", daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, bare: Path) -> str:
        """The URL of the bare repository at ``bare`` (which must lie under ``root``)."""
        return f"{self.base_url}/{bare.resolve().relative_to(self.root.resolve())}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
