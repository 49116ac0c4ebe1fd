"""Forge's registry client against registries that behave like hosted ones: blob requests
redirected to a storage host (that refuses any Authorization header, as S3 does), 429 with
Retry-After, and pooled connections. Real docker-registry, real skopeo, real Nix images."""

from __future__ import annotations

import email.utils
import random
import time
from pathlib import Path

import pytest

from forgegen import transport
from forgegen.errors import PushError
from forgegen.runtime import registry as forge_registry
from forgegen.runtime.tags import SourceRevision
from tests.fixtures.registry import FaultProxy, ImageFlake, Registry, StorageHost, forge_plan

pytestmark = pytest.mark.registry

FAST = forge_registry.RetryPolicy(attempts=5, initial_delay=0.01, max_delay=0.05, rng=random.Random(7))


def _push(plan, image_flake: ImageFlake, tmp_path: Path, sha: str, env: dict[str, str]) -> forge_registry.PushResult:
    return forge_registry.run_push(plan, "api", revision=SourceRevision(sha, "GIT_SHA"), flake=image_flake.ref,
                                   policy=FAST, cache_dir=tmp_path / "oci", env=env)


def _creds_env(reg: Registry) -> dict[str, str]:
    import os

    return {**os.environ, "FORGE_REGISTRY_USER": reg.username or "", "FORGE_REGISTRY_PASSWORD": reg.password or ""}


@pytest.mark.parametrize("push_with", ["forge", "skopeo"])
def test_push_and_verify_through_a_registry_that_redirects_blobs_to_storage(
        push_with: str, redirecting_registry: tuple[FaultProxy, StorageHost], auth_registry: Registry,
        image_flake: ImageFlake, unique_repo: str, tmp_path: Path) -> None:
    front, storage = redirecting_registry
    env = _creds_env(auth_registry)
    org = unique_repo.replace("/", "-")
    plan = forge_plan(front.host, organization=org, architectures=("x86_64-linux", "aarch64-linux"),
                      push_with=push_with)
    first = _push(plan, image_flake, tmp_path, "1111111", env)
    assert len(first.verified) == 6
    # The same image again: every blob check is a redirect to storage, which must be followed
    # (without the credentials) to learn that nothing needs uploading.
    front.redirects = 0
    second = _push(plan, image_flake, tmp_path, "2222222", env)
    assert [i.bytes_uploaded for i in second.images] == [0, 0]
    assert front.redirects >= 4 and len(second.verified) == 6
    # One changed layer: it is sent (by skopeo, which follows the redirects of its own blob checks,
    # or by Forge's client), and the storage host never sees the credentials.
    image_flake.set_payload("two")
    third = _push(plan, image_flake, tmp_path, "3333333", env)
    assert [i.layers_uploaded for i in third.images] == [2, 2]  # the payload layer and the config
    assert storage.seen and storage.refused == 0
    assert not any(auth for _, auth in storage.seen)


def test_a_redirect_from_https_to_http_is_refused() -> None:
    import http.server
    import ssl
    import subprocess
    import tempfile
    import threading

    with tempfile.TemporaryDirectory() as tmp:
        key, cert = Path(tmp) / "key.pem", Path(tmp) / "cert.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=60)

        class Redirect(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:  # noqa: N802
                self.send_response(307)
                self.send_header("Location", "http://127.0.0.1:9/blobs/x")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            client = forge_registry.RegistryClient(f"127.0.0.1:{server.server_address[1]}", insecure=True,
                                                   policy=FAST)
            with pytest.raises(PushError, match=r"redirected to http://127\.0\.0\.1:9/blobs/x: refused"):
                client.blob_exists("org/api", "sha256:" + "0" * 64)
        finally:
            server.shutdown()
            server.server_close()


def test_429_with_retry_after_is_honoured_in_seconds_and_as_a_date(fault_proxy: FaultProxy, registry: Registry,
                                                                    unique_repo: str) -> None:
    client = forge_registry.RegistryClient(fault_proxy.host, insecure=True, policy=FAST)
    fault_proxy.inject("429;Retry-After=1")
    assert client.manifest_digest(unique_repo, "nope") is None
    assert fault_proxy.faults == 1 and client.waits and client.waits[-1] >= 1.0  # not FAST's 0.05 s
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    fault_proxy.inject(f"429;Retry-After={when}")  # faults come on new connections: a new client
    client = forge_registry.RegistryClient(fault_proxy.host, insecure=True, policy=FAST)
    assert client.manifest_digest(unique_repo, "nope") is None
    assert fault_proxy.faults == 2 and client.waits[-1] >= 0.5


def test_a_retry_after_beyond_the_limit_fails_at_once_saying_so(fault_proxy: FaultProxy, unique_repo: str) -> None:
    client = forge_registry.RegistryClient(fault_proxy.host, insecure=True, policy=FAST)
    fault_proxy.inject("429;Retry-After=3600", 5)
    with pytest.raises(PushError, match=r"asks to wait 3600 s"):
        client.manifest_digest(unique_repo, "nope")
    assert fault_proxy.faults == 1 and client.waits == []


def test_blob_checks_share_one_connection(fault_proxy: FaultProxy, registry: Registry, unique_repo: str) -> None:
    client = forge_registry.RegistryClient(fault_proxy.host, insecure=True, policy=FAST)
    for n in range(20):
        assert not client.blob_exists(unique_repo, f"sha256:{n:064x}")
    assert fault_proxy.requests == 1  # connections that sent a request: one, kept alive


def test_backoff_is_jittered_from_a_seeded_generator_and_retry_after_is_a_floor() -> None:
    a = transport.Backoff(0.25, 30.0, random.Random(1))
    b = transport.Backoff(0.25, 30.0, random.Random(1))
    delays = [a.delay(n) for n in range(1, 10)]
    assert delays == [b.delay(n) for n in range(1, 10)]  # reproducible
    bases = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert all(base / 2 <= d <= base for d, base in zip(delays, bases))
    assert len(set(round(d / base, 6) for d, base in zip(delays, bases))) > 1  # jittered, not a fixed factor
    assert a.delay(1, server_asked=5.0) == 5.0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = time.time()
    assert transport.retry_after({"retry-after": "7"}) == 7.0
    assert 9 <= transport.retry_after({"retry-after": email.utils.formatdate(now + 10, usegmt=True)}, now) <= 10
    assert transport.retry_after({"retry-after": email.utils.formatdate(now - 10, usegmt=True)}, now) == 0.0
    assert transport.retry_after({"retry-after": "soon"}) is None
    assert transport.retry_after({}) is None
