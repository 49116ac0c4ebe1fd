"""The Attic admin token never follows a redirect to another host, nor from https to http.
Two (three) real HTTP servers on loopback ports: the first redirects, the others record what
they were sent."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from forge_provision.attic import AtticClient
from forgegen.errors import ProvisionError
from tests.ports import free_port

TOKEN = "attic-admin-token-PLANTED"


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]]
    location: str | None = None

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.seen.append(dict(self.headers))
        if self.location and not self.path.startswith("/moved"):
            self.send_response(302)
            self.send_header("Location", self.location + "/moved" + self.path)
            self.end_headers()
            return
        body = b'{"is_public": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(location: str | None = None, tls: ssl.SSLContext | None = None) -> tuple[str, list[dict[str, str]], http.server.HTTPServer]:
    seen: list[dict[str, str]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen, "location": location})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scheme = "https" if tls else "http"
    return f"{scheme}://127.0.0.1:{server.server_address[1]}", seen, server


@pytest.fixture
def servers() -> Iterator[list[http.server.HTTPServer]]:
    started: list[http.server.HTTPServer] = []
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def test_a_redirect_to_another_host_drops_the_token(servers: list) -> None:
    other, other_seen, s1 = _serve()
    first, first_seen, s2 = _serve(location=other)
    servers += [s1, s2]
    assert AtticClient(first + "/", TOKEN).get("shop") == {"is_public": True}
    assert first_seen[0].get("Authorization") == f"Bearer {TOKEN}"
    assert other_seen and "Authorization" not in other_seen[0]


def test_a_redirect_on_the_same_host_keeps_the_token(servers: list) -> None:
    target, seen, s1 = _serve()
    servers.append(s1)
    s1.RequestHandlerClass.location = target  # redirects to itself, under /moved
    assert AtticClient(target + "/", TOKEN).get("shop") == {"is_public": True}
    assert len(seen) == 2 and all(h.get("Authorization") == f"Bearer {TOKEN}" for h in seen)


def test_a_redirect_from_https_to_http_is_refused(servers: list, tmp_path: Path, monkeypatch) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    plain, plain_seen, s1 = _serve()
    secure, secure_seen, s2 = _serve(location=plain, tls=tls)
    servers += [s1, s2]
    with pytest.raises(ProvisionError) as info:
        AtticClient(secure + "/", TOKEN).get("shop")
    assert "https" in str(info.value) and "http:" in str(info.value)
    assert secure_seen and not plain_seen
    assert TOKEN not in str(info.value)
