"""The Kubernetes API as plain HTTP (forgegen.runtime.kubeapi) and how kube.client_for picks it.

Forge's own calls read kubeconfigs with a token, a token file, client certificates and CAs
(files or ``-data``) themselves and speak JSON over urllib3; anything else (an exec plugin here)
goes through the ``kubernetes`` loader, whose ApiClient the same calls then use.
"""

from __future__ import annotations

import base64
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from forgegen.runtime import health, kubeapi
from forgegen.runtime import kube as kubemod
from forgegen.runtime.kube import api_error
from forgegen.runtime.kubeapi import ApiException
from tests.fixtures.kube import Kube
from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_a_status_read_through_the_kubeconfig_imports_no_kubernetes(kube: Kube, tmp_path: Path) -> None:
    kube.deployment("api", "registry.test/shop/api:v1")
    code = ("import json, sys\n"
            "from forgegen.plan import WorkloadPlan\n"
            "from forgegen.runtime import health, kube\n"
            f"api = kube.client_for(kube.resolve({str(kube.kubeconfig)!r}, None))\n"
            "snap = health.snapshot_now(api, 'default', WorkloadPlan(kind='Deployment', name='api', container='api'))\n"
            "print(json.dumps([type(api).__module__, 'kubernetes' in sys.modules, snap.workload['metadata']['name'],"
            " len(snap.pods)]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout) == ["forgegen.runtime.kubeapi", False, "api", 1]


def test_an_exec_plugin_goes_through_the_kubernetes_loader(kube: Kube, tmp_path: Path) -> None:
    marker = tmp_path / "plugin-ran"
    plugin = tmp_path / "credential-plugin"
    plugin.write_text("#!/bin/sh\n"
                      f"touch {marker}\n"
                      "echo '{\"apiVersion\": \"client.authentication.k8s.io/v1\", \"kind\": \"ExecCredential\","
                      " \"status\": {\"token\": \"standin-token\"}}'\n")
    plugin.chmod(0o755)
    doc = yaml.safe_load(kube.kubeconfig.read_text())
    doc["users"] = [{"name": "tester", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                                          "command": str(plugin), "interactiveMode": "Never"}}}]
    config = tmp_path / "exec.kubeconfig"
    config.write_text(yaml.safe_dump(doc))
    kube.deployment("api", "registry.test/shop/api:v1")
    api = kube_client(config)
    assert isinstance(api, kubeapi.Client)
    assert api.pool is not None and marker.exists()
    from forgegen.plan import WorkloadPlan

    snap = health.snapshot_now(api, "default", WorkloadPlan(kind="Deployment", name="api", container="api"))
    assert snap.workload is not None and snap.workload["metadata"]["name"] == "api"


def kube_client(config: Path, context: str | None = None) -> Any:
    return kubemod.client_for(kubemod.resolve(str(config), context))


def test_an_api_error_carries_status_reason_and_body(kube: Kube) -> None:
    co = kubeapi.CustomObjectsApi(kube_client(kube.kubeconfig))
    with pytest.raises(ApiException) as err:
        co.get_namespaced_custom_object("kustomize.toolkit.fluxcd.io", "v1", "flux-system", "kustomizations", "nope",
                                        _request_timeout=(5, 15))
    status, message, _ = api_error(err.value)
    assert status == 404 and err.value.reason == "Not Found"
    assert "nope" in message
    assert str(err.value).startswith("(404)\nReason: Not Found\n")


def test_a_kubernetes_api_client_is_used_as_it_is(kube: Kube) -> None:
    """Tests (and the fallback) hand over a kubernetes ApiClient: the calls run on its pool."""
    api = kube.api()
    client = kubeapi.of(api)
    assert client.pool is api.rest_client.pool_manager and kubeapi.of(api) is client
    assert kubeapi.VersionApi(api).get_code(_request_timeout=(5, 10))["minor"] == "32"


def test_kubeconfig_files_merge_first_one_wins(kube: Kube, tmp_path: Path) -> None:
    doc = yaml.safe_load(kube.kubeconfig.read_text())
    first = {"apiVersion": "v1", "kind": "Config", "current-context": "elsewhere",
             "clusters": [{"name": "elsewhere", "cluster": {"server": kube.standin.url}}],
             "contexts": [c for c in doc["contexts"] if c["name"] == "elsewhere"], "users": []}
    (tmp_path / "a").write_text(yaml.safe_dump(first))
    (tmp_path / "b").write_text(kube.kubeconfig.read_text())
    listed = lambda *names: {"KUBECONFIG": ":".join(str(tmp_path / n) for n in names)}  # noqa: E731
    api = kubemod.client_for(kubemod.resolve(None, None, environ=listed("a", "b")))
    assert api.host == kube.standin.url  # the first file's "elsewhere" cluster, its current context
    assert kubeapi.VersionApi(api).get_code()["minor"] == "32"
    api = kubemod.client_for(kubemod.resolve(None, "elsewhere", environ=listed("b", "a")))
    assert api.host != kube.standin.url  # now b's "elsewhere" comes first


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append({"path": self.path, "authorization": self.headers.get("Authorization") or ""})
        body = json.dumps({"major": "1", "minor": "99"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[dict[str, str]]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Recorder)
    _Recorder.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("how", ["token", "tokenFile"])
def test_the_token_is_sent_as_a_bearer_header(recorder: tuple[str, list[dict[str, str]]], tmp_path: Path,
                                              how: str) -> None:
    url, seen = recorder
    (tmp_path / "sa").mkdir()
    (tmp_path / "sa" / "token").write_text("s3cret-token")
    user = {"token": "s3cret-token"} if how == "token" else {"tokenFile": "sa/token"}  # relative to the kubeconfig
    config = tmp_path / "config"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": url + "/"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    api = kube_client(config)
    assert type(api) is kubeapi.Client and api.host == url
    assert kubeapi.VersionApi(api).get_code()["minor"] == "99"
    assert seen == [{"path": "/version/", "authorization": "Bearer s3cret-token"}]


def test_list_arguments_become_the_api_s_query(recorder: tuple[str, list[dict[str, str]]], tmp_path: Path) -> None:
    url, seen = recorder
    client = kubeapi.Client(url, _pool())
    kubeapi.AppsV1Api(client).list_namespaced_deployment(
        "shop", field_selector="metadata.name=api", watch=True, resource_version="42", allow_watch_bookmarks=True,
        timeout_seconds=60, _preload_content=False, _request_timeout=(5, 75))
    kubeapi.CoreV1Api(client).read_namespaced_pod_log("api-1", "shop", container="api", previous=False, tail_lines=30)
    assert [s["path"] for s in seen] == [
        "/apis/apps/v1/namespaces/shop/deployments?fieldSelector=metadata.name%3Dapi&watch=true&resourceVersion=42"
        "&allowWatchBookmarks=true&timeoutSeconds=60",
        "/api/v1/namespaces/shop/pods/api-1/log?container=api&previous=false&tailLines=30"]
    with pytest.raises(TypeError, match="unexpected arguments"):
        kubeapi.AppsV1Api(client).list_namespaced_deployment("shop", label_selectr="app=api")


def _pool() -> Any:
    import urllib3

    return urllib3.PoolManager()


def test_watch_lines_are_split_across_chunks() -> None:
    class Resp:
        def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
            yield from (b'{"a":', b' 1}\n{"b"', b": 2}\n\n", b'{"c": "\xc3', b'\xa9"}\n')

    assert list(kubeapi.iter_resp_lines(Resp())) == ['{"a": 1}', '{"b": 2}', "", '{"c": "\u00e9"}']


@pytest.mark.realplane
def test_certificate_data_fields_reach_the_real_api_server(control_plane: Any, tmp_path: Path) -> None:
    """The real plane's kubeconfig (CA and client certificate as files), rewritten with ``-data``
    fields: the client verifies the server and authenticates with the certificate either way."""
    admin = Path(control_plane.kubeconfig)
    doc = yaml.safe_load(admin.read_text())
    api = kube_client(admin)
    assert type(api) is kubeapi.Client and api.host.startswith("https://")
    assert kubeapi.VersionApi(api).get_code()["major"] == "1"
    b64 = lambda p: base64.b64encode(Path(p).read_bytes()).decode()  # noqa: E731
    for c in doc["clusters"]:
        c["cluster"]["certificate-authority-data"] = b64(c["cluster"].pop("certificate-authority"))
    for u in doc["users"]:
        for key in ("client-certificate", "client-key"):
            u["user"][f"{key}-data"] = b64(u["user"].pop(key))
    inline = tmp_path / "inline.kubeconfig"
    inline.write_text(yaml.safe_dump(doc))
    api = kube_client(inline)
    assert type(api) is kubeapi.Client
    assert kubeapi.VersionApi(api).get_code()["major"] == "1"
    kubeapi.CoreV1Api(api).list_namespaced_pod("default", _preload_content=False, _request_timeout=(5, 15))


def test_a_kubeconfig_it_cannot_read_is_worded_by_the_kubernetes_loader(tmp_path: Path) -> None:
    from forgegen.errors import ConfigError

    config = tmp_path / "bad.kubeconfig"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": f"https://127.0.0.1:{free_port()}",
                                               "certificate-authority-data": "!!!not base64!!!"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    with pytest.raises(ConfigError) as err:
        kube_client(config)
    assert f"cannot read kubeconfig {config}" in str(err.value) and "base64" in str(err.value)
    assert "kubectl config view" in (err.value.hint or "")
