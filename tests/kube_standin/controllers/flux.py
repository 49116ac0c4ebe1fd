"""A Flux simulation: source-controller and kustomize-controller, driven by real git and real kustomize.

:class:`FluxSim` reconciles the stand-in's ``GitRepository`` (``source.toolkit.fluxcd.io/v1``)
and ``Kustomization`` (``kustomize.toolkit.fluxcd.io/v1``) objects the way Flux does, in the
same order of status writes, so a client watching them sees what it would see on a cluster:

GitRepository — triggered by a new ``reconcile.fluxcd.io/requestedAt`` token, a spec change,
or its ``spec.interval``: marks ``Reconciling``, resolves ``spec.ref.branch`` on the remote at
``spec.url`` (a bare repository: a path or ``file://`` URL — a known divergence: the real
GitRepository CRD only admits ``^(http|https|ssh)://``, so on the real control plane the tests serve
the same bare repository over tests/controlplane/gitserver.py) with ``git ls-remote``, stores the
commit's tree as the artifact (``git archive``), then writes ``status.artifact.revision =
"<branch>@sha1:<sha>"``, ``Ready=True Succeeded``, ``observedGeneration`` and
``lastHandledReconcileAt``. An unreachable remote gives ``Ready=False GitOperationFailed``
with git's message. A new artifact revision triggers the Kustomizations that use the source.

Kustomization — triggered the same way and by its source's new revision: checks the source
and ``spec.dependsOn`` (``Ready=False DependencyNotReady``, retried), writes ``Ready=Unknown
Progressing`` and ``lastAttemptedRevision``, unpacks the artifact into a temp directory, runs
the real ``kubectl kustomize <spec.path>``, applies every object to the store (create, or update
spec/data and labels: an updated Deployment gets a new ``metadata.generation`` and the
stand-in's Deployment controller rolls it out), then writes ``lastAppliedRevision``,
``Ready=True ReconciliationSucceeded``, ``observedGeneration`` and ``lastHandledReconcileAt``
(in one final write, as Flux's ``finalizeStatus`` does). A kustomize error gives
``Ready=False BuildFailed`` with kustomize's message.

Git and kustomize run in worker threads; every store access happens on the stand-in's loop.
A key is never reconciled twice at once (a change that arrives meanwhile runs it again after).

Scripting for tests (:class:`FluxScript`, change it through ``FluxSim.set_script`` or the
``flux`` fixture): a delay before the source fetches, a source that serves the previously
served commit for the next N fetches (a push racing Flux's fetch), a time the apply takes,
Kustomizations forced to ``Ready=False`` with a reason and message, and objects that never
handle requests.
"""

from __future__ import annotations

import concurrent.futures
import copy
import hashlib
import io
import re
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..cluster import Controller
from ..store import ApiError, Change, timestamp

REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
GIT = "/usr/bin/git"
KUBECTL = "/usr/bin/kubectl"
SOURCE = "gitrepositories"
KUSTOMIZATION = "kustomizations"


@dataclass
class FluxScript:
    """How the simulated controllers misbehave (all off by default)."""

    fetch_delay: float = 0.0  # seconds between picking up a source request and fetching
    stale_fetches: int = 0  # the next N fetches serve the previously served commit (then count down)
    apply_delay: float = 0.0  # seconds a Kustomization takes between building and its final status
    failures: dict[str, tuple[str, str]] = field(default_factory=dict)  # Kustomization name -> (reason, message)
    ignore: set[str] = field(default_factory=set)  # "GitRepository/<name>", "Kustomization/<name>" or "*"
    retry_interval: float = 0.1  # DependencyNotReady / ArtifactFailed retry (30 s+ in Flux)


@dataclass
class Fetch:
    """One fetch the source controller made (for tests and benchmarks)."""

    at: float  # time.monotonic()
    name: str
    revision: str
    token: str | None


@dataclass
class Applied:
    """One finished Kustomization reconcile (for tests and benchmarks)."""

    at: float  # time.monotonic() of the final status write
    name: str
    revision: str | None
    ready: bool
    reason: str
    token: str | None
    objects: list[str] = field(default_factory=list)


def parse_duration(text: str | None) -> float | None:
    """A Go duration (``10m``, ``1m30s``, ``500ms``) in seconds, or None."""
    if not text:
        return None
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text):
        return None
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


def _repo_path(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


def _run(argv: list[str], *, cwd: str | None = None, timeout: float = 20, binary: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, timeout=timeout, text=not binary)


def _cond(status: dict, type_: str) -> dict | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


def _set_cond(status: dict, type_: str, value: str, reason: str, message: str, generation: int) -> None:
    conds = status.setdefault("conditions", [])
    now = timestamp()
    for c in conds:
        if c.get("type") == type_:
            if c.get("status") != value:
                c["lastTransitionTime"] = now
            c.update(status=value, reason=reason, message=message, observedGeneration=generation)
            return
    conds.append({"type": type_, "status": value, "reason": reason, "message": message,
                  "observedGeneration": generation, "lastTransitionTime": now})


def _drop_cond(status: dict, type_: str) -> None:
    status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != type_]


class FluxSim(Controller):
    """source-controller + kustomize-controller for GitRepository and Kustomization objects."""

    name = "flux"

    def __init__(self, script: FluxScript | None = None, *, workers: int = 4) -> None:
        self.script = script or FluxScript()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flux-sim")
        self.artifacts: dict[tuple[str, str, str], bytes] = {}  # (namespace, name, revision) -> tar
        self.served: dict[tuple[str, str], str] = {}  # (namespace, name) -> last sha served
        self.fetches: list[Fetch] = []
        self.applied: list[Applied] = []
        self._busy: set[Hashable] = set()
        self._again: set[Hashable] = set()
        self._due: set[Hashable] = set()  # interval, source revision, retry: reconcile even if nothing changed
        self._timers: dict[Hashable, Any] = {}

    # -- wiring -------------------------------------------------------------------------------

    def setup(self) -> None:
        self.cluster.on(SOURCE, lambda ch: self._changed("GitRepository", ch))
        self.cluster.on(KUSTOMIZATION, lambda ch: self._changed("Kustomization", ch))
        for kind, res in (("GitRepository", SOURCE), ("Kustomization", KUSTOMIZATION)):
            for obj in self.cluster.store.list(res):
                self.enqueue((kind, obj["metadata"]["namespace"], obj["metadata"]["name"]))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def set_script(self, **changes: Any) -> None:
        """Change the script (call on the loop: ``standin.call(sim.set_script, ...)``)."""
        for k, v in changes.items():
            if not hasattr(self.script, k):
                raise AttributeError(f"FluxScript has no {k!r}")
            setattr(self.script, k, v)

    def lose_artifacts(self) -> None:
        """source-controller restarted with its storage emptied (an emptyDir, the default): every
        artifact is gone while the sources' status still names it, until a source is reconciled
        again (call on the loop)."""
        self.artifacts.clear()

    def settled(self, keys: list[Hashable]) -> bool:
        """No reconcile of ``keys`` running, queued, due or retrying soon (call on the loop):
        what a test waits for before it reads a status that a retry would flip to Unknown."""
        now = self.cluster.loop.time()
        for key in keys:
            if key in self._busy or key in self._again or key in self._due or key in self._queued:
                return False
            timer = self._timers.get(key)
            if timer is not None and timer.when() - now < 5.0:  # a retry, not the interval
                return False
        return True

    def _ignored(self, kind: str, name: str) -> bool:
        return "*" in self.script.ignore or f"{kind}/{name}" in self.script.ignore

    def _changed(self, kind: str, ch: Change) -> None:
        if ch.type == "DELETED":
            return
        key = (kind, ch.obj["metadata"]["namespace"], ch.obj["metadata"]["name"])
        if self._needs_work(ch.obj):
            if key in self._busy:
                self._again.add(key)
            else:
                self.enqueue(key)

    @staticmethod
    def _needs_work(obj: dict) -> bool:
        st = obj.get("status") or {}
        asked = (obj["metadata"].get("annotations") or {}).get(REQUESTED_AT)
        if asked and asked != st.get("lastHandledReconcileAt"):
            return True
        return st.get("observedGeneration") != obj["metadata"].get("generation")

    def _schedule(self, key: Hashable, delay: float) -> None:
        """Reconcile ``key`` after ``delay`` even if nothing changed (interval, retry)."""
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            self._due.add(key)
            if key in self._busy:
                self._again.add(key)
            else:
                self.enqueue(key)
        self._timers[key] = self.cluster.call_later(delay, fire)

    def reconcile(self, key: Hashable) -> None:
        kind, ns, name = key  # type: ignore[misc]
        if key in self._busy:
            self._again.add(key)
            return
        res = SOURCE if kind == "GitRepository" else KUSTOMIZATION
        obj = self.cluster.store.find(res, ns, name)
        if obj is None or (obj.get("spec") or {}).get("suspend") or self._ignored(kind, name):
            return
        if not (self._needs_work(obj) or key in self._due):
            return
        self._due.discard(key)
        self._busy.add(key)
        token = (obj["metadata"].get("annotations") or {}).get(REQUESTED_AT)
        generation = obj["metadata"].get("generation", 1)
        try:
            if kind == "GitRepository":
                self._source_start(key, obj, token, generation)
            else:
                self._kustomization_start(key, obj, token, generation)
        except Exception:
            self._busy.discard(key)
            raise

    def _done(self, key: Hashable, obj: dict | None) -> None:
        self._busy.discard(key)
        interval = parse_duration(((obj or {}).get("spec") or {}).get("interval"))
        if interval:
            self._schedule(key, interval)
        if key in self._again:
            self._again.discard(key)
            self.enqueue(key)

    def _in_worker(self, key: Hashable, work: Any, then: Any) -> None:
        """Run ``work()`` in a worker thread, then ``then(result_or_exception)`` on the loop."""
        loop = self.cluster.loop

        def run() -> None:
            try:
                out: Any = work()
            except Exception as err:  # handed to ``then``
                out = err
            if not self.cluster.stopped and not loop.is_closed():
                loop.call_soon_threadsafe(self._finish_safely, key, then, out)
        self.pool.submit(run)

    def _finish_safely(self, key: Hashable, then: Any, out: Any) -> None:
        if self.cluster.stopped:
            return
        try:
            then(out)
        except ApiError:
            self._busy.discard(key)
            self.enqueue(key, 0.05)

    def _write_status(self, res: str, ns: str, name: str, fn: Any) -> dict | None:
        return self.cluster.store.mutate(res, ns, name, lambda o: fn(o.setdefault("status", {})), subresource="status")

    # -- source-controller --------------------------------------------------------------------

    def _source_start(self, key: Hashable, obj: dict, token: str | None, generation: int) -> None:
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        spec = obj.get("spec") or {}
        url = spec.get("url") or ""
        branch = ((spec.get("ref") or {}).get("branch")) or "master"

        def progressing(st: dict) -> None:
            _set_cond(st, "Reconciling", "True", "Progressing", f"building artifact: fetching branch {branch}", generation)
            if not _cond(st, "Ready"):
                _set_cond(st, "Ready", "Unknown", "Progressing", "reconciliation in progress", generation)
        self._write_status(SOURCE, ns, name, progressing)
        stale = self.script.stale_fetches > 0 and (ns, name) in self.served
        if stale:
            self.script.stale_fetches -= 1
        previous = self.served.get((ns, name))

        def work() -> tuple[str, bytes]:
            path = _repo_path(url)
            proc = _run([GIT, "ls-remote", "--exit-code", path, f"refs/heads/{branch}"])
            if proc.returncode != 0 or not proc.stdout.strip():
                detail = (proc.stderr or "").strip() or f"couldn't find remote ref refs/heads/{branch}"
                raise RuntimeError(f"failed to checkout and determine revision: unable to clone '{url}': {detail}")
            sha = proc.stdout.split()[0]
            if stale and previous:
                sha = previous  # the push raced the fetch: Flux saw the commit before ours
            tar = _run([GIT, f"--git-dir={path}", "archive", "--format=tar", sha], binary=True)
            if tar.returncode != 0:
                raise RuntimeError(f"failed to archive {sha}: {tar.stderr.decode(errors='replace').strip()}")
            return sha, tar.stdout

        def finish(out: Any) -> None:
            current = self.cluster.store.find(SOURCE, ns, name)
            if current is None:
                self._done(key, None)
                return
            old_rev = ((current.get("status") or {}).get("artifact") or {}).get("revision")
            if isinstance(out, Exception):
                def failed(st: dict) -> None:
                    _set_cond(st, "Ready", "False", "GitOperationFailed", str(out), generation)
                    _set_cond(st, "FetchFailed", "True", "GitOperationFailed", str(out), generation)
                    _drop_cond(st, "Reconciling")
                    st["observedGeneration"] = generation
                    if token:
                        st["lastHandledReconcileAt"] = token
                self._write_status(SOURCE, ns, name, failed)
                self._done(key, current)
                self._schedule(key, max(self.script.retry_interval, 0.05))
                return
            sha, tar = out
            revision = f"{branch}@sha1:{sha}"
            self.artifacts[(ns, name, revision)] = tar
            self.served[(ns, name)] = sha
            self.fetches.append(Fetch(time.monotonic(), name, revision, token))
            digest = "sha256:" + hashlib.sha256(tar).hexdigest()

            def succeeded(st: dict) -> None:
                st["artifact"] = {
                    "revision": revision, "digest": digest, "size": len(tar),
                    "path": f"gitrepository/{ns}/{name}/{sha}.tar.gz",
                    "url": f"http://source-controller.flux-system.svc.cluster.local./gitrepository/{ns}/{name}/{sha}.tar.gz",
                    "lastUpdateTime": timestamp(),
                }
                _set_cond(st, "Ready", "True", "Succeeded", f"stored artifact for revision '{revision}'", generation)
                _set_cond(st, "ArtifactInStorage", "True", "Succeeded", f"stored artifact for revision '{revision}'",
                          generation)
                _drop_cond(st, "Reconciling")
                _drop_cond(st, "FetchFailed")
                st["observedGeneration"] = generation
                if token:
                    st["lastHandledReconcileAt"] = token
            self._write_status(SOURCE, ns, name, succeeded)
            self._done(key, current)
            if revision != old_rev:  # kustomize-controller watches its sources' revisions
                for ks in self.cluster.store.list(KUSTOMIZATION):
                    ref = (ks.get("spec") or {}).get("sourceRef") or {}
                    if ref.get("name") == name and (ref.get("namespace") or ks["metadata"]["namespace"]) == ns:
                        k = ("Kustomization", ks["metadata"]["namespace"], ks["metadata"]["name"])
                        self._due.add(k)
                        if k in self._busy:
                            self._again.add(k)
                        else:
                            self.enqueue(k)

        if self.script.fetch_delay > 0:
            self.cluster.call_later(self.script.fetch_delay, self._in_worker, key, work, finish)
        else:
            self._in_worker(key, work, finish)

    # -- kustomize-controller -----------------------------------------------------------------

    def _kustomization_start(self, key: Hashable, obj: dict, token: str | None, generation: int) -> None:
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        spec = obj.get("spec") or {}
        ref = spec.get("sourceRef") or {}
        src_ns = ref.get("namespace") or ns

        def final(st: dict, ready: str, reason: str, message: str) -> None:
            _set_cond(st, "Ready", ready, reason, message, generation)
            _drop_cond(st, "Reconciling")
            st["observedGeneration"] = generation
            if token:
                st["lastHandledReconcileAt"] = token

        def early_failure(reason: str, message: str, retry: bool = True) -> None:
            self._write_status(KUSTOMIZATION, ns, name, lambda st: final(st, "False", reason, message))
            self.applied.append(Applied(time.monotonic(), name, None, False, reason, token))
            self._done(key, obj)
            if retry:
                self._schedule(key, max(self.script.retry_interval, 0.05))

        src = self.cluster.store.find(SOURCE, src_ns, ref.get("name") or "") if ref.get("kind", "GitRepository") == "GitRepository" else None
        if src is None:
            early_failure("ArtifactFailed", f"Source '{ref.get('kind', 'GitRepository')}/{src_ns}/{ref.get('name')}' not found")
            return
        artifact = (src.get("status") or {}).get("artifact") or {}
        revision = artifact.get("revision")
        if not revision:
            early_failure("ArtifactFailed", f"Source artifact not found, retrying in {self.script.retry_interval}s")
            return
        for dep in spec.get("dependsOn") or []:
            dep_ns = dep.get("namespace") or ns
            d = self.cluster.store.find(KUSTOMIZATION, dep_ns, dep["name"])
            dst = (d or {}).get("status") or {}
            ready = _cond(dst, "Ready")
            if (d is None or not ready or ready.get("status") != "True"
                    or dst.get("observedGeneration") != d["metadata"].get("generation")
                    or ((d.get("spec") or {}).get("sourceRef") or {}).get("name") == ref.get("name")
                    and dst.get("lastAppliedRevision") != revision):
                early_failure("DependencyNotReady", f"dependency '{dep_ns}/{dep['name']}' is not ready")
                return
        tar = self.artifacts.get((src_ns, ref.get("name"), revision))
        if tar is None:
            # kustomize-controller's words for a 404 on the artifact URL (fetch.ErrFileNotFound)
            early_failure("ArtifactFailed", f"Source is not ready, artifact not found, retrying in {self.script.retry_interval}s")
            return

        def progressing(st: dict) -> None:
            _set_cond(st, "Ready", "Unknown", "Progressing", "Reconciliation in progress", generation)
            _set_cond(st, "Reconciling", "True", "Progressing",
                      f"Building manifests for revision {revision} with a timeout of {spec.get('timeout', '5m0s')}",
                      generation)
            st["lastAttemptedRevision"] = revision
        self._write_status(KUSTOMIZATION, ns, name, progressing)
        path = spec.get("path") or "./"
        forced = self.script.failures.get(name)

        def work() -> list[dict]:
            with tempfile.TemporaryDirectory(prefix="flux-sim-") as tmp:
                with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
                    tf.extractall(tmp, filter="data")
                target = (Path(tmp) / path).resolve()
                if not str(target).startswith(str(Path(tmp).resolve())) or not target.is_dir():
                    raise LookupError(f"kustomization path not found: stat {target}: no such file or directory")
                proc = _run([KUBECTL, "kustomize", str(target)], cwd=tmp)
                if proc.returncode != 0:
                    raise ValueError(proc.stderr.strip().replace(tmp, "") or f"kubectl kustomize exited {proc.returncode}")
                return [d for d in yaml.safe_load_all(proc.stdout) if isinstance(d, dict)]

        def finish(out: Any) -> None:
            if isinstance(out, LookupError):
                early_failure("ArtifactFailed", str(out))
                return
            if isinstance(out, ValueError):
                early_failure("BuildFailed", str(out))
                return
            if isinstance(out, Exception):
                early_failure("ReconciliationFailed", str(out))
                return
            if forced and forced[0] in ("BuildFailed", "ArtifactFailed"):
                early_failure(*forced)
                return
            try:
                applied = [self._apply(o, ns, name, spec) for o in out]
            except ApiError as err:
                early_failure("ReconciliationFailed", err.message)
                return
            inventory = {"entries": [{"id": i, "v": v} for i, v in applied]}
            if forced:
                def failed(st: dict) -> None:
                    st["inventory"] = inventory
                    final(st, "False", forced[0], forced[1])
                self._write_status(KUSTOMIZATION, ns, name, failed)
                self.applied.append(Applied(time.monotonic(), name, revision, False, forced[0], token,
                                            [i for i, _ in applied]))
                self._done(key, obj)
                return

            def succeeded(st: dict) -> None:
                st["inventory"] = inventory
                st["lastAppliedRevision"] = revision
                if spec.get("wait"):
                    _set_cond(st, "Healthy", "True", "Succeeded", "Health check passed", generation)
                final(st, "True", "ReconciliationSucceeded", f"Applied revision: {revision}")

            def end(ok: bool, reason: str = "ReconciliationSucceeded", message: str = "") -> None:
                if ok:
                    self._write_status(KUSTOMIZATION, ns, name, succeeded)
                else:
                    def unhealthy(st: dict) -> None:
                        st["inventory"] = inventory
                        _set_cond(st, "Healthy", "False", reason, message, generation)
                        final(st, "False", reason, message)
                    self._write_status(KUSTOMIZATION, ns, name, unhealthy)
                self.applied.append(Applied(time.monotonic(), name, revision, ok, reason, token, [i for i, _ in applied]))
                self._done(key, obj)
            if spec.get("wait"):
                self._check_health(ns, name, spec, revision, generation, out, end)
            else:
                end(True)

        def then(out: Any) -> None:
            if self.script.apply_delay > 0:
                self.cluster.call_later(self.script.apply_delay, self._finish_safely, key, finish, out)
            else:
                finish(out)
        self._in_worker(key, work, then)

    def _check_health(self, ns: str, name: str, spec: dict, revision: str, generation: int, out: list[dict],
                      end: Any) -> None:
        """spec.wait, as kustomize-controller's checkHealth does it: the Reconciling and Healthy
        conditions say "Running health checks for revision R with a timeout of T" (Ready stays
        Unknown, lastAppliedRevision and lastHandledReconcileAt unwritten), then the applied
        Deployments are polled until each is Current (kstatus), or spec.timeout (default: the
        interval) passes: Ready=False HealthCheckFailed. Requests meanwhile wait (the key is busy:
        the CancelHealthCheckOnNewRevision gate is off by default)."""
        timeout_text = spec.get("timeout") or spec.get("interval") or "5m0s"
        message = f"Running health checks for revision {revision} with a timeout of {timeout_text}"

        def checking(st: dict) -> None:
            _set_cond(st, "Reconciling", "True", "Progressing", message, generation)
            _set_cond(st, "Healthy", "Unknown", "Progressing", message, generation)
        self._write_status(KUSTOMIZATION, ns, name, checking)
        targets = [((spec.get("targetNamespace") or (o.get("metadata") or {}).get("namespace") or "default"),
                    (o.get("metadata") or {}).get("name", "")) for o in out if o.get("kind") == "Deployment"]
        deadline = self.cluster.loop.time() + (parse_duration(timeout_text) or 300.0)

        def current(d: dict | None) -> bool:
            st, want = (d or {}).get("status") or {}, ((d or {}).get("spec") or {}).get("replicas", 1)
            return d is not None and st.get("observedGeneration", 0) >= d["metadata"].get("generation", 1) and all(
                st.get(k, 0) == want for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"))

        def poll() -> None:
            if self.cluster.stopped:
                return
            pending = [f"Deployment/{dns}/{dname}" for dns, dname in targets
                       if not current(self.cluster.store.find("deployments", dns, dname))]
            if not pending:
                end(True)
            elif self.cluster.loop.time() >= deadline:
                end(False, "HealthCheckFailed",
                    "timeout waiting for: [" + ", ".join(f"{p} status: 'InProgress'" for p in pending) + "]")
            else:
                self.cluster.call_later(0.1, poll)
        poll()

    def _apply(self, manifest: dict, ks_ns: str, ks_name: str, spec: dict) -> tuple[str, str]:
        """Create or update one object from the build (what server-side apply does, roughly)."""
        api_version, kind = manifest.get("apiVersion", ""), manifest.get("kind", "")
        store = self.cluster.store
        rt = store.registry.by_kind(api_version, kind)
        if rt is None:
            raise ApiError(400, "BadRequest", f"{kind}/{(manifest.get('metadata') or {}).get('name')} dry-run failed: "
                           f"no matches for kind \"{kind}\" in version \"{api_version}\"")
        obj = copy.deepcopy(manifest)
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            meta["namespace"] = spec.get("targetNamespace") or meta.get("namespace") or "default"
        labels = meta.setdefault("labels", {})
        labels["kustomize.toolkit.fluxcd.io/name"] = ks_name
        labels["kustomize.toolkit.fluxcd.io/namespace"] = ks_ns
        ns = meta.get("namespace")
        if store.find(rt, ns, meta["name"]) is None:
            store.create(rt, obj, ns)
        else:
            def update(current: dict) -> None:
                for k, v in obj.items():
                    if k in ("apiVersion", "kind", "status"):
                        continue
                    if k == "metadata":
                        for mk in ("labels", "annotations"):
                            if v.get(mk):
                                current["metadata"].setdefault(mk, {}).update(v[mk])
                        continue
                    current[k] = copy.deepcopy(v)
            store.mutate(rt, ns, meta["name"], update)
        group = rt.group
        return f"{ns or ''}_{meta['name']}_{group}_{kind}", rt.version
