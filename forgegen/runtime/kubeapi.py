"""The Kubernetes API as plain HTTP: JSON in, dicts (or the raw urllib3 response) out.

The ``kubernetes`` package costs ~0.5–1.5 s of CPU to import with the API classes a deploy
uses (its models and pydantic), more than the rest of a deploy's own work. Forge reads every
object as JSON anyway (see :mod:`forgegen.runtime.k8stypes`), so this module speaks the REST API
directly on urllib3, the way ``kubernetes.client`` does underneath:

- :class:`Client`: a base URL, a ``urllib3.PoolManager`` configured for the cluster's TLS, and
  the authentication header. :func:`from_kubeconfig` builds one from a kubeconfig for the common
  cases (token or token file, client certificate, CA, ``insecure-skip-tls-verify``,
  ``tls-server-name``); anything else (exec and auth-provider plugins, basic auth, proxies,
  in-cluster) returns ``None`` and :mod:`forgegen.runtime.kube` uses the ``kubernetes`` loader,
  whose ``ApiClient`` :func:`of` wraps (its pool and its refreshed credentials).
- The API classes (:class:`AppsV1Api`, :class:`CoreV1Api`, :class:`BatchV1Api`,
  :class:`CustomObjectsApi`, :class:`VersionApi`) have the ``kubernetes`` client's method names
  and keyword arguments for the calls Forge makes, and :class:`ApiException` its ``status``,
  ``reason``, ``body`` and ``headers``: with ``_preload_content=False`` a call returns the urllib3
  response (``.data``, :func:`iter_resp_lines`), otherwise the decoded JSON.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import ssl
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from forgegen import __version__

USER_AGENT = f"forge/{__version__}"


class ApiException(Exception):
    """An HTTP error from the API server (the attributes of ``kubernetes``' ``ApiException``)."""

    def __init__(self, status: int | None = None, reason: str | None = None, body: str | None = None,
                 headers: Any = None) -> None:
        super().__init__(status, reason)
        self.status, self.reason, self.body, self.headers = status, reason, body, headers

    def __str__(self) -> str:  # kubernetes' wording, which messages may quote
        text = f"({self.status})\nReason: {self.reason}\n"
        if self.headers:
            text += f"HTTP response headers: {self.headers}\n"
        if self.body:
            text += f"HTTP response body: {self.body}\n"
        return text


class Client:
    """One cluster: ``host`` (the server URL), a pool manager, and the request headers
    (``auth()`` gives the Authorization header, refreshed per request when it can change)."""

    def __init__(self, host: str, pool: Any, auth: Callable[[], Mapping[str, str]] = dict,
                 headers: Mapping[str, str] | None = None) -> None:
        self.host = host.rstrip("/")
        self.pool, self.auth = pool, auth
        self.headers = {"User-Agent": USER_AGENT, **(headers or {})}

    @property
    def configuration(self) -> Client:  # ``api.configuration.host``, as on a kubernetes ApiClient
        return self

    def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None, body: Any = None,
                content_type: str = "application/json", preload: bool = True,
                timeout: tuple[float, float] | float | None = None, accept: str = "application/json") -> Any:
        """``method path?query`` with ``body`` as JSON; raises :class:`ApiException` on a non-2xx."""
        import urllib3

        url = self.host + path
        params = {k: _query_value(v) for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urlencode(params)
        headers = {**self.headers, **self.auth(), "Accept": accept}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        if isinstance(timeout, tuple):
            timeout_arg: Any = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        else:
            timeout_arg = urllib3.Timeout(total=timeout) if timeout else None
        try:
            resp = self.pool.request(method, url, body=data, headers=headers, timeout=timeout_arg,
                                     preload_content=False)
        except urllib3.exceptions.SSLError as err:
            raise ApiException(status=0, reason=f"{type(err).__name__}\n{err}") from err
        if not 200 <= resp.status <= 299:
            raw = resp.data
            text = raw.decode("utf-8", errors="replace") if raw else None
            raise ApiException(resp.status, resp.reason, text, resp.headers)
        if not preload:
            return resp
        raw = resp.data
        return json.loads(raw) if raw else None


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def of(api: Any) -> Client:
    """A :class:`Client` for ``api``: itself, or one on a ``kubernetes`` ``ApiClient``'s pool and
    credentials (tests and the kubeconfig fallback build those)."""
    if isinstance(api, Client):
        return api
    cached = getattr(api, "_forge_client", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    configuration = api.configuration

    def auth() -> dict[str, str]:
        headers: dict[str, str] = {}
        for setting in configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"]] = setting["value"]
        return headers

    client = Client(configuration.host, api.rest_client.pool_manager, auth, headers=dict(api.default_headers))
    api._forge_client = client
    return client


# ---------------------------------------------------------------------------------------------
# The calls Forge makes, with kubernetes.client's names and keyword arguments

_LIST_QUERY = {"label_selector": "labelSelector", "field_selector": "fieldSelector", "watch": "watch",
               "resource_version": "resourceVersion", "allow_watch_bookmarks": "allowWatchBookmarks",
               "timeout_seconds": "timeoutSeconds", "limit": "limit", "_continue": "continue"}


def _call(client: Client, method: str, path: str, kw: Mapping[str, Any], names: Mapping[str, str] = _LIST_QUERY,
          body: Any = None) -> Any:
    unknown = set(kw) - set(names) - {"_preload_content", "_request_timeout", "_content_type"}
    if unknown:
        raise TypeError(f"{method} {path}: unexpected arguments {sorted(unknown)}")
    query = {names[k]: v for k, v in kw.items() if k in names}
    watching = bool(kw.get("watch"))
    return client.request(method, path, query=query, body=body, preload=kw.get("_preload_content", True),
                          timeout=kw.get("_request_timeout"),
                          content_type=kw.get("_content_type") or "application/json",
                          accept="application/json;stream=watch" if watching else "application/json")


class _Api:
    def __init__(self, api: Any) -> None:
        self.client = of(api)

    def _list(self, prefix: str, namespace: str, plural: str, kw: Mapping[str, Any]) -> Any:
        return _call(self.client, "GET", f"{prefix}/namespaces/{quote(namespace)}/{plural}", kw)


class AppsV1Api(_Api):
    def list_namespaced_deployment(self, namespace: str, **kw: Any) -> Any:
        return self._list("/apis/apps/v1", namespace, "deployments", kw)

    def list_namespaced_stateful_set(self, namespace: str, **kw: Any) -> Any:
        return self._list("/apis/apps/v1", namespace, "statefulsets", kw)

    def list_namespaced_daemon_set(self, namespace: str, **kw: Any) -> Any:
        return self._list("/apis/apps/v1", namespace, "daemonsets", kw)

    def list_namespaced_replica_set(self, namespace: str, **kw: Any) -> Any:
        return self._list("/apis/apps/v1", namespace, "replicasets", kw)

    def list_namespaced_controller_revision(self, namespace: str, **kw: Any) -> Any:
        return self._list("/apis/apps/v1", namespace, "controllerrevisions", kw)


_LOG_QUERY = {"container": "container", "previous": "previous", "tail_lines": "tailLines"}


class CoreV1Api(_Api):
    def list_namespaced_pod(self, namespace: str, **kw: Any) -> Any:
        return self._list("/api/v1", namespace, "pods", kw)

    def list_namespaced_event(self, namespace: str, **kw: Any) -> Any:
        return self._list("/api/v1", namespace, "events", kw)

    def read_namespaced_pod_log(self, name: str, namespace: str, **kw: Any) -> Any:
        kw = {"_preload_content": False, **kw}  # text, not JSON
        return _call(self.client, "GET", f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}/log", kw,
                     _LOG_QUERY)


class BatchV1Api(_Api):
    def _job(self, namespace: str, name: str = "") -> str:
        return f"/apis/batch/v1/namespaces/{quote(namespace)}/jobs" + (f"/{quote(name)}" if name else "")

    def list_namespaced_job(self, namespace: str, **kw: Any) -> Any:
        return self._list("/apis/batch/v1", namespace, "jobs", kw)

    def read_namespaced_job(self, name: str, namespace: str, **kw: Any) -> Any:
        return _call(self.client, "GET", self._job(namespace, name), kw, {})

    def create_namespaced_job(self, namespace: str, body: Any, **kw: Any) -> Any:
        return _call(self.client, "POST", self._job(namespace), kw, {}, body=body)

    def delete_namespaced_job(self, name: str, namespace: str, **kw: Any) -> Any:
        return _call(self.client, "DELETE", self._job(namespace, name), kw, {"propagation_policy": "propagationPolicy"})


class CustomObjectsApi(_Api):
    @staticmethod
    def _path(group: str, version: str, namespace: str, plural: str, name: str = "") -> str:
        return f"/apis/{group}/{version}/namespaces/{quote(namespace)}/{plural}" + (f"/{quote(name)}" if name else "")

    def list_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, **kw: Any) -> Any:
        return _call(self.client, "GET", self._path(group, version, namespace, plural), kw)

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                     **kw: Any) -> Any:
        return _call(self.client, "GET", self._path(group, version, namespace, plural, name), kw, {})

    def create_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, body: Any,
                                        **kw: Any) -> Any:
        return _call(self.client, "POST", self._path(group, version, namespace, plural), kw, {}, body=body)

    def replace_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                         body: Any, **kw: Any) -> Any:
        return _call(self.client, "PUT", self._path(group, version, namespace, plural, name), kw, {}, body=body)

    def patch_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                       body: Any, **kw: Any) -> Any:
        kw = {"_content_type": "application/merge-patch+json", **kw}
        return _call(self.client, "PATCH", self._path(group, version, namespace, plural, name), kw, {}, body=body)


class VersionApi(_Api):
    def get_code(self, **kw: Any) -> Any:
        return _call(self.client, "GET", "/version/", kw, {})


def iter_resp_lines(resp: Any) -> Iterator[str]:
    """The lines of a streamed response (a watch), as ``kubernetes.watch`` splits them."""
    buffer = bytearray()
    for segment in resp.stream(amt=None, decode_content=False):
        buffer.extend(segment if isinstance(segment, bytes) else str(segment).encode("utf-8"))
        start = 0
        while (end := buffer.find(b"\n", start)) != -1:
            yield buffer[start:end].decode("utf-8", errors="replace")
            start = end + 1
        del buffer[:start]


# ---------------------------------------------------------------------------------------------
# A kubeconfig, for the cases this module handles itself


def from_kubeconfig(paths: str, context: str | None) -> Client | None:
    """The :class:`Client` for ``context`` (else the current one) of the ``:``-separated
    kubeconfig files ``paths``, merged as kubectl does; ``None`` when the kubeconfig needs more
    than this module does (the caller then uses the ``kubernetes`` loader, which also words any
    error in the file)."""
    from urllib.request import getproxies

    if getproxies():
        return None
    merged = _merge(paths)
    if merged is None:
        return None
    contexts, clusters, users, current = merged
    name = context or current
    if not name or name not in contexts:
        return None
    ctx = contexts[name][0]
    if not isinstance(ctx, dict) or ctx.get("cluster") not in clusters:
        return None
    cluster, cluster_dir = clusters[ctx["cluster"]]
    user: Any = {}
    user_dir = cluster_dir
    if ctx.get("user"):
        if ctx["user"] not in users:
            return None
        user, user_dir = users[ctx["user"]]
        user = user or {}
    if not isinstance(cluster, dict) or not cluster.get("server") or not isinstance(user, dict):
        return None
    if set(user) - {"token", "tokenFile", "client-certificate", "client-certificate-data", "client-key",
                    "client-key-data"} or set(cluster) - _CLUSTER_KEYS or ("token" in user and "tokenFile" in user):
        return None
    return _client(cluster, cluster_dir, user, user_dir)


_CLUSTER_KEYS = {"server", "certificate-authority", "certificate-authority-data", "insecure-skip-tls-verify",
                 "tls-server-name", "extensions"}


_Named = dict[str, tuple[Any, Path]]  # name -> (the entry's body, the directory of its kubeconfig)


def _merge(paths: str) -> tuple[_Named, _Named, _Named, str | None] | None:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    contexts: _Named = {}
    clusters: _Named = {}
    users: _Named = {}
    current: str | None = None
    first = True
    for p in (p for p in paths.split(os.pathsep) if p):
        path = Path(p).expanduser()
        if not path.is_file():
            continue
        try:
            doc = yaml.load(path.read_text(encoding="utf-8"), Loader=loader) or {}  # noqa: S506 - a safe loader
        except (OSError, UnicodeError, yaml.YAMLError):
            return None
        if not isinstance(doc, dict):
            return None
        if first:  # kubernetes' merger takes current-context from the first file
            current, first = doc.get("current-context") or None, False
        for key, into in (("contexts", contexts), ("clusters", clusters), ("users", users)):
            for entry in doc.get(key) or []:
                if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                    return None
                into.setdefault(entry["name"], (entry.get(key[:-1]), path.parent))
    return contexts, clusters, users, current


def _client(cluster: dict[str, Any], cluster_dir: Path, user: dict[str, Any], user_dir: Path) -> Client:
    import urllib3

    host = str(cluster["server"]).rstrip("/")
    args: dict[str, Any] = {"maxsize": (os.cpu_count() or 1) * 5}
    verify = not cluster.get("insecure-skip-tls-verify")
    args["cert_reqs"] = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
    if host.startswith("https"):
        args["ca_certs"] = _file(cluster, "certificate-authority", cluster_dir)
        args["cert_file"] = _file(user, "client-certificate", user_dir)
        args["key_file"] = _file(user, "client-key", user_dir)
    if cluster.get("tls-server-name"):
        args["server_hostname"] = cluster["tls-server-name"]
    token = user.get("token")
    if "tokenFile" in user:
        token = (user_dir / Path(user["tokenFile"]).expanduser()).read_text(encoding="utf-8")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return Client(host, urllib3.PoolManager(**{k: v for k, v in args.items() if v is not None}),
                  lambda: headers)


def _file(section: dict[str, Any], key: str, base: Path) -> str | None:
    """The path of ``key`` (relative to the kubeconfig's directory), or of a private temporary
    file holding ``key-data`` (base64), as the kubernetes loader does."""
    import base64

    if section.get(f"{key}-data"):
        directory = _temp_dir()
        fd, name = tempfile.mkstemp(dir=directory)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.standard_b64decode(section[f"{key}-data"]))
        return name
    if section.get(key):
        return str(base / Path(section[key]).expanduser())
    return None


_TEMP: list[str] = []


def _temp_dir() -> str:
    if not _TEMP:
        _TEMP.append(tempfile.mkdtemp(prefix="forge-kube-"))  # mode 0700
        atexit.register(shutil.rmtree, _TEMP[0], ignore_errors=True)
    return _TEMP[0]
