"""Start a real Kubernetes control plane and real Flux as plain processes on loopback.

What :func:`start_control_plane` starts, each from the binaries ``.ci/build-controlplane`` built
(versions pinned in ``.ci/controlplane-versions``), logging to ``<dir>/logs/<name>.log``:

* ``etcd`` (client and peer URLs on free loopback ports, ``--unsafe-no-fsync``);
* ``kube-apiserver`` with self-made certificates (tests/controlplane/certs.py), service-account
  keys, ``--authorization-mode=RBAC``; an admin kubeconfig (group ``system:masters``);
* ``kube-controller-manager`` (user ``system:kube-controller-manager``, per-controller
  service-account credentials, leader election off) and ``kube-scheduler``;
* Flux's ``source-controller`` and ``kustomize-controller`` out of cluster (``KUBECONFIG``,
  leader election off, artifact storage on a loopback port), their CRDs applied, namespace
  ``flux-system``;
* a git server on loopback (tests/controlplane/gitserver.py) serving bare repositories under
  ``git_root`` — source-controller fetches over http, not ``file://``;
* the simulated kubelet (``python -m tests.kubelet_sim``) when that package exists.

:meth:`ControlPlane.stop` stops every process by PID (SIGTERM, then SIGKILL after a grace).
``started_in`` is the wall time from the first process to everything ready.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.controlplane.certs import Authority, kubeconfig, service_account_keys
from tests.controlplane.gitserver import GitServer
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / ".ci" / "build-controlplane"
VERSIONS = ROOT / ".ci" / "controlplane-versions"
KUBECTL = "/usr/bin/kubectl"
READY_TIMEOUT = 180.0


class NotBuilt(RuntimeError):
    pass


def built_bin_dir() -> Path | None:
    """The bin directory of the built control plane for the pinned versions, or None
    (``FORGE_CONTROLPLANE_BIN`` names another directory with the same binaries)."""
    if os.environ.get("FORGE_CONTROLPLANE_BIN"):
        return Path(os.environ["FORGE_CONTROLPLANE_BIN"])
    proc = subprocess.run(["bash", str(BUILD), "--print"], capture_output=True, text=True, timeout=60)
    return Path(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() else None


def pinned_versions() -> dict[str, str]:
    out = {}
    for line in VERSIONS.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and not line.startswith("#"):
            out[parts[0]] = parts[2]
    return out


@dataclass
class ControlPlane:
    dir: Path
    bin_dir: Path
    server: str
    kubeconfig: Path
    authority: Authority
    git: GitServer | None = None
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    started_in: float = 0.0
    versions: dict[str, str] = field(default_factory=pinned_versions)

    @property
    def ca(self) -> Path:
        return self.authority.cert

    @property
    def crds_dir(self) -> Path:
        return self.bin_dir.parent / "crds"

    def describe(self) -> str:
        v = self.versions
        return (f"real control plane: kube-apiserver/controller-manager/scheduler {v.get('kubernetes')}, "
                f"etcd {v.get('etcd')}, Flux source-controller {v.get('source-controller')}, "
                f"kustomize-controller {v.get('kustomize-controller')} at {self.server}")

    # -- clients ------------------------------------------------------------------------------

    def kubectl(self, *args: str, kubeconfig: Path | None = None, input: str | None = None,
                check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KUBECONFIG=str(kubeconfig or self.kubeconfig), HOME=str(self.dir / "home"))
        proc = subprocess.run([KUBECTL, *args], env=env, input=input, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def apply(self, manifest: str | dict | list, **kw: Any) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": manifest} if isinstance(manifest, list) else manifest)
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=text, **kw)

    def get(self, path: str) -> dict | None:
        """GET an API path with the admin credentials; None for 404."""
        try:
            return json.loads(self._request(path))
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def _request(self, path: str, timeout: float = 10) -> bytes:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.authority.dir / "admin.crt"), str(self.authority.dir / "admin.key"))
        with urllib.request.urlopen(self.server + path, context=ctx, timeout=timeout) as resp:
            return resp.read()

    def create_namespace(self, name: str) -> str:
        """Create namespace ``name`` and wait until its ``default`` service account exists (pods
        cannot be created before the controller-manager made it)."""
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        wait(lambda: self.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
             f"service account {name}/default")
        return name

    def user_kubeconfig(self, user: str, groups: tuple[str, ...] = (), *, namespace: str = "default") -> Path:
        """A kubeconfig for ``user`` (client certificate signed by the cluster CA), no rights
        beyond what RBAC binds to that user or its ``groups``."""
        safe = user.replace(":", "_")
        cert, key = self.authority.issue(f"user-{safe}", user, groups)
        return kubeconfig(self.dir / "users" / f"{safe}.kubeconfig", self.server, self.ca, cert, key,
                          user=user, namespace=namespace)

    def git_url(self, bare: Path) -> str:
        assert self.git is not None
        return self.git.url(bare)

    # -- lifecycle ----------------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        logs = self.dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **(env or {})}, cwd=self.dir)
        self.procs.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.dir / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} (pid {proc.pid}) exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs.clear()
        if self.git is not None:
            self.git.stop()


def wait(predicate: Any, what: str, timeout: float = READY_TIMEOUT, plane: ControlPlane | None = None) -> Any:
    """Poll ``predicate`` (exceptions count as not yet) until truthy; fail after ``timeout``."""
    end = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        if plane is not None:
            plane.check_alive()
        try:
            value = predicate()
            if value:
                return value
        except (OSError, urllib.error.URLError, json.JSONDecodeError, AssertionError) as e:
            last = e
        if time.monotonic() > end:
            raise TimeoutError(f"{what} not ready within {timeout:.0f} s (last error: {last})")
        time.sleep(0.1)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _start_etcd(plane: ControlPlane) -> str:
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    plane.spawn("etcd", [str(plane.bin_dir / "etcd"), "--name", "default", "--data-dir", str(plane.dir / "etcd"),
                         "--listen-client-urls", url, "--advertise-client-urls", url,
                         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                         "--initial-cluster", f"default=http://127.0.0.1:{peer}",
                         "--unsafe-no-fsync", "--log-level", "warn"])
    wait(lambda: _http_ok(url + "/health"), "etcd", plane=plane)
    return url


def _start_apiserver(plane: ControlPlane, etcd: str, port: int) -> None:
    a = plane.authority
    serving, serving_key = a.issue("apiserver", "kube-apiserver", server_names=(
        "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local"), server_ips=("127.0.0.1", "10.0.0.1"))
    kcert, kkey = a.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",))
    sa_key, sa_pub = service_account_keys(a.dir)
    plane.spawn("kube-apiserver", [
        str(plane.bin_dir / "kube-apiserver"), f"--etcd-servers={etcd}", "--bind-address=127.0.0.1",
        f"--secure-port={port}", "--advertise-address=127.0.0.1", f"--tls-cert-file={serving}",
        f"--tls-private-key-file={serving_key}", f"--client-ca-file={a.cert}",
        f"--service-account-key-file={sa_pub}", f"--service-account-signing-key-file={sa_key}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        "--service-cluster-ip-range=10.0.0.0/24", "--authorization-mode=RBAC",
        f"--kubelet-client-certificate={kcert}", f"--kubelet-client-key={kkey}",
        "--kubelet-preferred-address-types=InternalIP,Hostname", "--profiling=false",
        "--endpoint-reconciler-type=none", "--v=1"])
    wait(lambda: plane._request("/readyz") == b"ok", "kube-apiserver", plane=plane)


def _start_controllers(plane: ControlPlane) -> None:
    a = plane.authority
    cert, key = a.issue("controller-manager", "system:kube-controller-manager")
    cm_kc = kubeconfig(plane.dir / "controller-manager.kubeconfig", plane.server, a.cert, cert, key)
    plane.spawn("kube-controller-manager", [
        str(plane.bin_dir / "kube-controller-manager"), f"--kubeconfig={cm_kc}",
        f"--authentication-kubeconfig={cm_kc}", f"--authorization-kubeconfig={cm_kc}",
        "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false",
        "--use-service-account-credentials=true", f"--service-account-private-key-file={a.dir / 'sa.key'}",
        f"--root-ca-file={a.cert}", "--cluster-name=forge-test", "--v=1"])
    cert, key = a.issue("scheduler", "system:kube-scheduler")
    sch_kc = kubeconfig(plane.dir / "scheduler.kubeconfig", plane.server, a.cert, cert, key)
    plane.spawn("kube-scheduler", [
        str(plane.bin_dir / "kube-scheduler"), f"--kubeconfig={sch_kc}", f"--authentication-kubeconfig={sch_kc}",
        f"--authorization-kubeconfig={sch_kc}", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
        "--leader-elect=false", "--v=1"])
    wait(lambda: plane.get("/api/v1/namespaces/default/serviceaccounts/default"),
         "kube-controller-manager (service account default/default)", plane=plane)


def _start_flux(plane: ControlPlane) -> None:
    plane.kubectl("apply", "--server-side", "-f", str(plane.crds_dir))
    plane.kubectl("wait", "--for=condition=established", "--timeout=120s", "crd", "--all")
    plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system"}})
    env = {"KUBECONFIG": str(plane.kubeconfig), "RUNTIME_NAMESPACE": "flux-system"}
    storage = free_port()
    health: dict[str, int] = {}
    for name in ("source-controller", "kustomize-controller"):
        health[name] = free_port()
        argv = [str(plane.bin_dir / name), "--enable-leader-election=false",
                f"--metrics-addr=127.0.0.1:{free_port()}", f"--health-addr=127.0.0.1:{health[name]}",
                "--events-addr=", "--log-level=info", "--requeue-dependency=1s"]
        if name == "source-controller":
            (plane.dir / "flux-storage").mkdir(exist_ok=True)
            argv += [f"--storage-path={plane.dir / 'flux-storage'}", f"--storage-addr=127.0.0.1:{storage}",
                     f"--storage-adv-addr=127.0.0.1:{storage}"]
        plane.spawn(name, argv, env)
    for name, port in health.items():
        wait(lambda: _http_ok(f"http://127.0.0.1:{port}/readyz"), name, plane=plane)


# The kubelet's own time scales (crash-loop back-off, probe period, ...), as the stand-in's tests
# use them (tests/fixtures/kube.py FAST); the real controllers keep theirs.
KUBELET_TIMINGS = dict(backoff_base=0.1, backoff_cap=2.0, probe_period=0.1, scheduling_retry=0.2,
                       pod_termination=0.05, container_start=0.02)


def _start_kubelet(plane: ControlPlane, nodes: int) -> None:
    timings = [f"--{k.replace('_', '-')}={v}" for k, v in KUBELET_TIMINGS.items()]
    plane.spawn("kubelet-sim", [sys.executable, "-m", "tests.kubelet_sim", "--kubeconfig", str(plane.kubeconfig),
                                "--node", "sim", "--nodes", str(nodes), "--heartbeat", "5", *timings],
                {"PYTHONPATH": str(ROOT)})

    def ready() -> bool:
        items = (plane.get("/api/v1/nodes") or {}).get("items") or []
        ok = [n for n in items if any(c["type"] == "Ready" and c["status"] == "True"
                                      for c in (n.get("status") or {}).get("conditions") or [])]
        return len(ok) >= nodes
    wait(ready, f"{nodes} simulated node(s)", plane=plane)


def kubelet_available() -> bool:
    return importlib.util.find_spec("tests.kubelet_sim") is not None and \
        (ROOT / "tests" / "kubelet_sim" / "__main__.py").exists()


def start_control_plane(dir: Path, *, bin_dir: Path | None = None, flux: bool = True, kubelet: bool | None = None,
                        nodes: int = 1, git_root: Path | None = None) -> ControlPlane:
    """Start everything under ``dir`` (state, certificates, logs); see the module docstring.
    Raises :class:`NotBuilt` when ``.ci/build-controlplane`` has not built the pinned versions."""
    bin_dir = bin_dir or built_bin_dir()
    if bin_dir is None:
        raise NotBuilt("the real control plane is not built for the pinned versions: run `bash .ci/setup` "
                       "(it runs .ci/build-controlplane; the first build takes a while)")
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "home").mkdir(exist_ok=True)
    began = time.monotonic()
    port = free_port()
    server = f"https://127.0.0.1:{port}"
    authority = Authority(dir / "pki")
    cert, key = authority.issue("admin", "forge-admin", ("system:masters",))
    plane = ControlPlane(dir, bin_dir, server, kubeconfig(dir / "admin.kubeconfig", server, authority.cert, cert, key,
                                                          user="forge-admin"), authority)
    try:
        etcd = _start_etcd(plane)
        _start_apiserver(plane, etcd, port)
        _start_controllers(plane)
        if flux:
            plane.git = GitServer(git_root or Path("/"))
            _start_flux(plane)
        if kubelet if kubelet is not None else kubelet_available():
            _start_kubelet(plane, nodes)
        plane.started_in = time.monotonic() - began
        return plane
    except BaseException:
        plane.stop()
        raise
