"""Migrations: run ``services.S.migrations[]`` as Kubernetes Jobs before the GitOps commit.

One ``batch/v1`` Job per migration, environment and image tag, in the environment's namespace:
``image`` is the migration's own image or the service's new image, ``command`` the migration's
argv, ``backoffLimit: 0`` (a migration is not retried behind your back), ``restartPolicy:
Never``, ``activeDeadlineSeconds`` the migration's timeout plus a minute (Forge's own timeout
comes first and says so; the cluster's deadline only ends a Job Forge stopped watching). The name is deterministic
(:func:`job_name`, ``<service>-migrate-<name>-<tag>``, at most 63 characters), which makes a
re-run of the same release idempotent:

* the Job exists and succeeded → nothing runs again (``already_done`` in the result);
* it exists and failed → it is deleted and created afresh (the retry you asked for by re-running);
* it exists and is still running → it is watched, not duplicated.

Two pieces, as for rollouts (STYLE.md point 31): :func:`assess` is pure (the Job and its pods →
``running`` / ``succeeded`` / ``failed`` with the reason, the pod and the exit code), and
:func:`run_migration` is the loop: it watches the Job and its pods (``controller-uid`` label)
with :func:`~forgegen.runtime.watch.watch_until` and stops at the verdict or the timeout. A pod that
cannot start (image pull, missing secret) fails the migration at once rather than at the
deadline. On failure the result carries the pod's last log lines.

The API is reached through :mod:`forgegen.runtime.kubeapi`; objects are read as the typed views of
:mod:`forgegen.runtime.k8stypes`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from forgegen.errors import MigrationFailed
from forgegen.plan import MigrationPlan
from forgegen.runtime import k8stypes as k8s
from forgegen.runtime.k8stypes import Condition, Job, Pod
from forgegen.runtime.rollout import FATAL_WAITING
from forgegen.runtime.watch import Fatal, Streams, watch_until

log = logging.getLogger(__name__)

CONTAINER = "migrate"
LOG_LINES = 50
MAX_NAME = 63
COMPONENT = "forge-migration"
API_LOST_AFTER = 30.0  # seconds of nothing but connection trouble before the API counts as gone
_API_HINT = ("check that the cluster answers (`kubectl get --raw /readyz`), then release again: a migration "
             "Job that succeeded is not run twice, one that is still running is watched, not duplicated")


def job_name(service: str, migration: str, tag: str) -> str:
    """``<service>-migrate-<name>-<tag>`` as a DNS-1123 label; a long one keeps a hash suffix."""
    raw = re.sub(r"[^a-z0-9-]+", "-", f"{service}-migrate-{migration}-{tag}".lower()).strip("-")
    if len(raw) <= MAX_NAME:
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{raw[:MAX_NAME - 9].rstrip('-')}-{digest}"


CLUSTER_DEADLINE_MARGIN = 60  # seconds past Forge's own timeout before the cluster ends the Job


def job_manifest(*, name: str, namespace: str, service: str, migration: MigrationPlan, image: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": service, "app.kubernetes.io/component": "migration",
              "app.kubernetes.io/managed-by": "forge", "forge.dev/migration": migration.name}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels,
                     "annotations": {"forge.dev/image": image}},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": math.ceil(migration.timeout) + CLUSTER_DEADLINE_MARGIN,
            "template": {
                "metadata": {"labels": labels},
                "spec": {"restartPolicy": "Never",
                         "containers": [{"name": CONTAINER, "image": image, "command": list(migration.command)}]},
            },
        },
    }


# ---------------------------------------------------------------------------------------------
# The pure part


@dataclass(frozen=True)
class Verdict:
    state: str  # "running" | "succeeded" | "failed"
    reason: str | None = None
    message: str = ""
    pod: str | None = None
    exit_code: int | None = None


def _condition(job: Job, type_: str) -> Condition | None:
    return next((c for c in k8s.conditions(job) if c.get("type") == type_ and c.get("status") == "True"), None)


def assess(job: Job | None, pods: Iterable[Pod]) -> Verdict:
    """Where a migration Job stands, from the Job and its pods."""
    if job is None:
        return Verdict("running", message="waiting for the Job to exist")
    pods = sorted(pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
    last = pods[-1]["metadata"]["name"] if pods else None
    code = _exit_code(pods[-1]) if pods else None
    if _condition(job, "Complete") is not None:
        return Verdict("succeeded", "Complete", "the Job completed", last, code)
    failed = _condition(job, "Failed")
    if failed is not None:
        return Verdict("failed", failed.get("reason") or "Failed", failed.get("message") or "the Job failed", last, code)
    for pod in reversed(pods):  # a container that cannot start never fails the Job by itself
        for cs in k8s.container_statuses(pod):
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in FATAL_WAITING:
                return Verdict("failed", reason, waiting.get("message") or reason, pod["metadata"]["name"])
    active = (job.get("status") or {}).get("active") or 0
    return Verdict("running", message=f"{active} pod(s) active" if active else "waiting for a pod", pod=last)


def _exit_code(pod: Pod) -> int | None:
    for cs in k8s.container_statuses(pod):
        term = k8s.terminated(cs)
        if term and term.get("exitCode") is not None:
            return int(term["exitCode"])
    return None


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class MigrationResult:
    name: str
    job: str
    namespace: str
    image: str
    command: tuple[str, ...]
    outcome: str = "running"  # "success" | "failed" | "timeout"
    already_done: bool = False  # the Job had already succeeded: nothing ran
    reason: str | None = None
    message: str = ""
    pod: str | None = None
    exit_code: int | None = None
    logs: list[str] = field(default_factory=list)
    log_error: str | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == "success"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "job": f"{self.namespace}/Job/{self.job}", "image": self.image,
                "command": list(self.command), "outcome": self.outcome, "already_done": self.already_done,
                "reason": self.reason, "message": self.message, "pod": self.pod, "exit_code": self.exit_code,
                "logs": list(self.logs), "log_error": self.log_error, "elapsed_seconds": round(self.elapsed, 3)}


def run_migration(api: Any, *, service: str, migration: MigrationPlan, namespace: str, image: str, tag: str,
                  progress: Callable[[str], None] | None = None, watch_seconds: int = 60,
                  api_lost_after: float = API_LOST_AFTER) -> MigrationResult:
    """Run one migration Job (or find it already done) and wait for its verdict.

    Returns a :class:`MigrationResult` for success, failure and timeout; raises
    :class:`MigrationFailed` only when the Job cannot be created or watched at all, or when
    the API answered nothing but connection errors for ``api_lost_after`` seconds.
    """
    import urllib3

    from forgegen.runtime import kubeapi
    from forgegen.runtime.kubeapi import ApiException

    batch, core = kubeapi.BatchV1Api(api), kubeapi.CoreV1Api(api)
    name = job_name(service, migration.name, tag)
    where = f"{namespace}/Job/{name}"
    result = MigrationResult(migration.name, name, namespace, image, tuple(migration.command))
    say = progress or (lambda _m: None)
    t0 = time.monotonic()
    try:
        existing = _read_job(batch, name, namespace)
        verdict = assess(existing, []) if existing is not None else None
        if verdict is not None and verdict.state == "succeeded":
            result.outcome, result.already_done = "success", True
            result.reason, result.message = "AlreadySucceeded", f"{where} already succeeded for this tag; not run again"
            say(f"migration {migration.name}: {where} already succeeded; skipped")
            return result
        if verdict is not None and verdict.state == "failed":
            say(f"migration {migration.name}: {where} failed before; deleting it to run it again")
            batch.delete_namespaced_job(name, namespace, propagation_policy="Background", _request_timeout=(5, 15))
            existing = None
        if existing is None:
            job = _create_job(batch, job_manifest(name=name, namespace=namespace, service=service,
                                                  migration=migration, image=image), namespace, where)
            say(f"migration {migration.name}: created {where} ({' '.join(migration.command)} in {image})")
        else:
            job = existing
            say(f"migration {migration.name}: {where} is already running; waiting for it")
    except ApiException as err:
        raise MigrationFailed(f"cannot create the migration Job {where}: HTTP {err.status} {err.reason}",
                              hint="check the Kubernetes credentials and RBAC (create/get/delete on jobs)") from err
    except (OSError, urllib3.exceptions.HTTPError) as err:  # refused, reset, timed out, TLS
        raise MigrationFailed(f"cannot create the migration Job {where}: the Kubernetes API does not answer "
                              f"({type(err).__name__})", hint=_API_HINT) from err
    uid = job["metadata"]["uid"]
    verdict = _watch(batch, core, name, namespace, uid, migration.timeout, say, watch_seconds, api_lost_after)
    if verdict.state in ("failed", "succeeded") and verdict.exit_code is None and verdict.reason != "Timeout":
        verdict = _with_pod_evidence(core, namespace, uid, verdict)
    result.elapsed = time.monotonic() - t0
    result.pod, result.exit_code, result.reason, result.message = verdict.pod, verdict.exit_code, verdict.reason, verdict.message
    if verdict.state == "succeeded":
        result.outcome = "success"
        say(f"migration {migration.name}: {where} succeeded")
        return result
    result.outcome = "timeout" if verdict.reason == "Timeout" else "failed"
    if result.pod is not None:
        try:
            resp: Any = core.read_namespaced_pod_log(result.pod, namespace, container=CONTAINER, tail_lines=LOG_LINES,
                                                _preload_content=False, _request_timeout=(5, 10))
            result.logs = resp.data.decode("utf-8", errors="replace").splitlines()[-LOG_LINES:]
        except Exception as err:  # noqa: BLE001 - the evidence is best effort
            result.log_error = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
    return result


def _with_pod_evidence(core: Any, namespace: str, uid: str, verdict: Verdict) -> Verdict:
    """The Job's Complete or Failed condition can arrive before the watch delivered its pod's final
    status: read the pods once more for the pod name and exit code (best effort)."""
    try:
        resp = core.list_namespaced_pod(namespace, label_selector=f"controller-uid={uid}", _preload_content=False,
                                        _request_timeout=(5, 15))
        pods = json.loads(resp.data).get("items") or []
    except Exception:  # noqa: BLE001 - keep the verdict we have
        return verdict
    pods.sort(key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
    if not pods:
        return verdict
    return Verdict(verdict.state, verdict.reason, verdict.message, pods[-1]["metadata"]["name"], _exit_code(pods[-1]))


def _read_job(batch: Any, name: str, namespace: str) -> Job | None:
    from forgegen.runtime.kubeapi import ApiException

    try:
        resp = batch.read_namespaced_job(name, namespace, _preload_content=False, _request_timeout=(5, 15))
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    return cast(Job, json.loads(resp.data))


def _create_job(batch: Any, body: dict[str, Any], namespace: str, where: str) -> Job:
    """Create the Job; a deleted predecessor may still be going away (409): retry briefly."""
    from forgegen.runtime.kubeapi import ApiException

    end = time.monotonic() + 30
    pause = 0.05
    while True:
        try:
            resp = batch.create_namespaced_job(namespace, body, _preload_content=False, _request_timeout=(5, 15))
            return cast(Job, json.loads(resp.data))
        except ApiException as err:
            if err.status != 409 or time.monotonic() > end:
                raise
            log.debug("%s still exists (being deleted); retrying the create", where)
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


class _JobWatch:
    """The sink :func:`watch_until` feeds for one migration Job: the Job (by uid) and its pods."""

    def __init__(self, uid: str) -> None:
        self.uid = uid
        self.job: Job | None = None
        self.pods: dict[str, Pod] = {}

    def replace(self, resource: str, items: Iterable[dict[str, Any]]) -> None:
        if resource == "job":
            self.job = next((cast(Job, o) for o in items if o["metadata"].get("uid") == self.uid), None)
        else:
            self.pods = {p["metadata"]["uid"]: cast(Pod, p) for p in items}

    def apply(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        if resource == "job":
            if obj["metadata"].get("uid") == self.uid:
                self.job = None if kind == "DELETED" else cast(Job, obj)
        elif kind == "DELETED":
            self.pods.pop(obj["metadata"]["uid"], None)
        else:
            self.pods[obj["metadata"]["uid"]] = cast(Pod, obj)


def _watch(batch: Any, core: Any, name: str, namespace: str, uid: str, timeout: float,
           say: Callable[[str], None], watch_seconds: int, api_lost_after: float) -> Verdict:
    where = f"{namespace}/Job/{name}"
    seen = _JobWatch(uid)
    last_message = ""
    end = time.monotonic() + timeout

    def judge() -> Verdict | None:
        nonlocal last_message
        if streams.trouble_since is not None and time.monotonic() - streams.trouble_since > api_lost_after:
            raise MigrationFailed(
                f"lost the Kubernetes API while watching the migration Job {where}: nothing but "
                f"connection errors for {api_lost_after:g}s ({streams.trouble})", hint=_API_HINT)
        if streams.listed("job") and seen.job is None:
            return Verdict("failed", "JobDeleted", f"the Job {where} was deleted while it ran")
        if not streams.listed("job", "pods"):
            return None
        verdict = assess(seen.job, seen.pods.values())
        if verdict.state != "running":
            return verdict
        if verdict.message != last_message:
            last_message = verdict.message
            say(f"job {name}: {verdict.message}")
        return None

    def fatal(event: Fatal) -> MigrationFailed:
        err = event.error
        return MigrationFailed(f"cannot watch the migration Job {where}: {err.status} {err.reason}",
                               hint="check the Kubernetes credentials and RBAC (list/watch on jobs and pods, "
                                    "get on pods/log)")

    with Streams(watch_seconds) as streams:
        streams.open("job", batch.list_namespaced_job, namespace=namespace, field_selector=f"metadata.name={name}")
        streams.open("pods", core.list_namespaced_pod, namespace=namespace, label_selector=f"controller-uid={uid}")
        # judge again at least every api_lost_after seconds, so a lost API is noticed
        verdict = watch_until(streams, seen, judge, lambda: end, on_fatal=fatal,
                              wake=lambda: time.monotonic() + api_lost_after)
    if verdict is not None:
        return verdict
    current = assess(seen.job, seen.pods.values())
    return Verdict("failed", "Timeout", f"the Job did not finish within {timeout:g}s ({current.message})",
                   current.pod, current.exit_code)
