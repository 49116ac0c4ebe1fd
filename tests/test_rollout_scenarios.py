"""Every rollout scenario, for Deployments, StatefulSets and DaemonSets, on both backends.

``kube_any`` is the stand-in (its own controllers and scripted kubelet) or the real control plane
(kube-apiserver, kube-controller-manager, kube-scheduler, etcd; ``tests/kubelet_sim`` runs the
pods with the same scripts). Forge's real watcher (``forgegen/runtime/rollout.py``) must give the
same verdict, reason, pod and evidence on both: where they differ, the stand-in is wrong. No test
asserts wall-clock time; every wait has a deadline well above the scripted timings.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import pytest

from forgegen.plan import RolloutPlan, WorkloadPlan
from forgegen.runtime.rollout import RolloutResult, watch_rollout
from tests.fixtures.kube import PLURAL, Kube, wait_until
from tests.kube_standin import (
    Settings,
    crash,
    create_container_error,
    image_pull_error,
    invalid_image_name,
    oom_killed,
    readiness_failing,
    ready,
    run_container_error,
    slow_start,
)
from tests.kubelet_sim import KubeletSim

pytestmark = pytest.mark.kube

SAFETY = 60.0  # a bound so a broken watcher fails the test instead of hanging it
SURGE_ONE = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
KINDS = ["Deployment", "StatefulSet", "DaemonSet"]
TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"


def policy(**kw: Any) -> RolloutPlan:
    base = dict(deadline=SAFETY, restarts_tolerated=0, readiness_grace=30.0, scheduling_grace=30.0,
                rollback_on_failure=False)
    base.update(kw)
    return RolloutPlan(**base)


def watch(kube: Kube, kind: str, *, image: str, pol: RolloutPlan | None = None,
          lines: list[str] | None = None) -> RolloutResult:
    return watch_rollout(kube.api(), namespace=kube.namespace, workload=WorkloadPlan(kind=kind, name="web", container="web"),
                         expected_image=kube.reference(image), policy=pol or policy(), deadline=SAFETY,
                         progress=None if lines is None else lines.append)


def build(kube: Kube, kind: str, image: str = "app:1") -> None:
    if kind == "Deployment":
        kube.deployment("web", image, replicas=2, strategy=SURGE_ONE)
    elif kind == "StatefulSet":
        kube.statefulset("web", image, replicas=2)
    else:
        kube.daemonset("web", image)


def set_image(kube: Kube, kind: str, image: str, *, memory: str | None = None, secret: str | None = None) -> None:
    """What Flux applies: a new image (and a memory request, an environment from a Secret)."""
    def edit(obj: dict) -> None:
        c = obj["spec"]["template"]["spec"]["containers"][0]
        c["image"] = image
        if memory:
            c["resources"] = {"requests": {"memory": memory}}
        if secret:
            c["env"] = [{"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": secret, "key": "url"}}}]
    kube.edit(PLURAL[kind], "web", edit)


def live(kube: Kube, image: str | None = None) -> list[dict]:
    return [p for p in kube.pods("web") if not p["metadata"].get("deletionTimestamp")
            and (image is None or kube.image_of(p) == image)]


def is_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions") or [])


# -- success ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_success_waits_for_every_new_pod(kube_any: Kube, kind: str) -> None:
    build(kube_any, kind)
    kube_any.script("app:2", slow_start(0.3))
    kube_any.set_image(kind, "web", "app:2")
    lines: list[str] = []
    result = watch(kube_any, kind, image="app:2", pol=policy(readiness_grace=SAFETY), lines=lines)
    assert result.outcome == "success", result.to_json()
    assert "successfully rolled out" in result.message or "complete" in result.message
    pods = live(kube_any)
    assert pods and all(kube_any.image_of(p) == "app:2" and is_ready(p) for p in pods), pods
    assert set(result.pods) == {p["metadata"]["name"] for p in pods}


@pytest.mark.parametrize("kind", KINDS)
def test_restarts_within_the_tolerance_succeed(kube_any: Kube, kind: str) -> None:
    build(kube_any, kind)
    kube_any.script("app:2", crash(after=0.1, exits=1, ready_after=0.1))
    kube_any.set_image(kind, "web", "app:2")
    result = watch(kube_any, kind, image="app:2", pol=policy(restarts_tolerated=1))
    assert result.outcome == "success", result.to_json()


# -- failures ---------------------------------------------------------------------------------


SCENARIOS = {
    "crash": (crash(after=0.1, exit_code=3, logs=("starting api",), exit_logs=("panic: no DATABASE_URL",)),
              {"ContainerExited", "CrashLoopBackOff"}),
    "image-pull": (image_pull_error("not found"), {"ErrImagePull", "ImagePullBackOff"}),
    "invalid-name": (invalid_image_name(), {"InvalidImageName"}),
    "missing-secret": (None, {"CreateContainerConfigError"}),  # the environment names Secret "db", absent
    "create-error": (create_container_error(), {"CreateContainerError"}),  # sim_only: see SIM_ONLY
    "run-error": (run_container_error(), {"RunContainerError"}),
    # OOMKilled, or CrashLoopBackOff when the watcher's first look at the pod comes after the
    # restart (a real kubelet's status writes coalesce too): the evidence says OOMKilled either way
    "oom": (oom_killed(after=0.1), {"OOMKilled", "CrashLoopBackOff"}),
    "unschedulable": (None, {"Unschedulable"}),  # a memory request no node has: the scheduler refuses it
    "readiness": (readiness_failing(), {"ReadinessProbeFailed"}),
}


# what a real kubelet cannot be made to do on demand: not run on an external cluster
SIM_ONLY = {"create-error", "run-error"}


@pytest.mark.parametrize("scenario", [pytest.param(s, marks=pytest.mark.sim_only) if s in SIM_ONLY else s
                                      for s in sorted(SCENARIOS)])
@pytest.mark.parametrize("kind", KINDS)
def test_failure_is_reported_with_reason_pod_and_evidence(kube_any: Kube, kind: str, scenario: str) -> None:
    script, reasons = SCENARIOS[scenario]
    build(kube_any, kind)
    if script is not None:
        kube_any.script("app:bad", script)
    set_image(kube_any, kind, "app:bad", memory="1Ti" if scenario == "unschedulable" else None,
              secret="db" if scenario == "missing-secret" else None)
    # short graces only where they are the point: a loaded machine may delay a status write by a second
    # (readiness: 2 s, as startedAt has whole seconds only and the grace counts from it)
    graces = dict(readiness_grace=2.0 if scenario == "readiness" else 20.0,
                  scheduling_grace=1.0 if scenario == "unschedulable" else 20.0)
    result = watch(kube_any, kind, image="app:bad", pol=policy(**graces))
    doc = result.to_json()
    assert doc["outcome"] == "failed" and doc["reason"] in reasons, doc
    assert doc["pod"] in {p["metadata"]["name"] for p in live(kube_any, "app:bad")} and doc["container"] == "web"
    assert doc["workload"]["kind"] == kind and doc["workload"]["namespace"] == kube_any.namespace
    if kind == "Deployment":
        assert doc["workload"]["revision"] == "2"
    if scenario == "crash":
        assert doc["exit_code"] == 3 and doc["restart_count"] is not None
        assert "panic: no DATABASE_URL" in doc["logs"]["previous"] + doc["logs"]["current"]
    if scenario == "oom":
        assert doc["exit_code"] == 137 and "OOMKilled" in doc["message"]
    if scenario in ("image-pull", "missing-secret"):
        assert "waiting to start" in doc["logs"]["errors"]["current"]
        assert any(e["reason"] == "Failed" for e in doc["events"])
    if scenario == "unschedulable":
        assert "Insufficient memory" in doc["message"]
    if scenario == "missing-secret":
        assert doc["message"] == 'secret "db" not found'

    if scenario == "readiness":
        assert doc["message"].startswith("Readiness probe failed")


@pytest.mark.parametrize("kind", KINDS)
def test_a_missing_secret_created_later_lets_the_rollout_finish(kube_any: Kube, kind: str) -> None:
    """The kubelet retries CreateContainerConfigError: once the Secret (with the key) exists the
    container starts, as a real kubelet's does."""
    build(kube_any, kind)
    set_image(kube_any, kind, "app:2", secret="db")
    wait_until(lambda: [p for p in live(kube_any, "app:2") if kube_any.pod_state(p).get("state", {}).get("waiting", {})
                        .get("reason") == "CreateContainerConfigError"], timeout=SAFETY, interval=0.05)
    kube_any.create("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": kube_any.namespace},
                                "data": {"other": "eA=="}})
    wait_until(lambda: [e for e in kube_any.list("events") if "couldn't find key url in Secret" in e.get("message", "")],
               timeout=SAFETY, interval=0.05)
    kube_any.edit("secrets", "db", lambda s: s.update(data={"url": "eA=="}))
    kube_any.wait_settled(kind, "web", timeout=SAFETY)  # Forge fails fast on what it sees: look once it ran
    result = watch(kube_any, kind, image="app:2")
    assert result.outcome == "success", result.to_json()


def test_progress_deadline_exceeded_is_reported(kube_any: Kube) -> None:
    kube_any.deployment("web", "app:1", progress_deadline=1)
    kube_any.script("app:stuck", readiness_failing())
    kube_any.set_image("Deployment", "web", "app:stuck")
    result = watch(kube_any, "Deployment", image="app:stuck", pol=policy(readiness_grace=SAFETY))
    assert (result.outcome, result.reason) == ("failed", "ProgressDeadlineExceeded"), result.to_json()
    assert result.pod is None or result.pod.startswith("web-")


# -- pods deleted mid-rollout -----------------------------------------------------------------


def test_a_pod_deleted_and_replaced_mid_rollout_is_waited_for(kube_any: Kube) -> None:
    build(kube_any, "Deployment")
    kube_any.script("app:2", slow_start(1.0))
    kube_any.set_image("Deployment", "web", "app:2")
    first = wait_until(lambda: [p for p in live(kube_any, "app:2") if is_ready(p)], timeout=SAFETY, interval=0.05)[0]
    kube_any.delete("pods", first["metadata"]["name"])
    result = watch(kube_any, "Deployment", image="app:2", pol=policy(readiness_grace=SAFETY))
    assert result.outcome == "success", result.to_json()
    assert first["metadata"]["name"] not in result.pods and len(result.pods) == 2
    assert {p["metadata"]["name"] for p in live(kube_any, "app:2") if is_ready(p)} == set(result.pods)


def test_a_crashing_pod_deleted_and_replaced_still_fails(kube_any: Kube) -> None:
    kube_any.deployment("web", "app:1", strategy=SURGE_ONE)
    kube_any.script("app:2", crash(after=0.5, exit_code=6))
    kube_any.set_image("Deployment", "web", "app:2")
    victim = wait_until(lambda: live(kube_any, "app:2"), timeout=SAFETY, interval=0.02)[0]
    kube_any.delete("pods", victim["metadata"]["name"])
    result = watch(kube_any, "Deployment", image="app:2")
    assert (result.outcome, result.exit_code) == ("failed", 6), result.to_json()
    assert result.pod != victim["metadata"]["name"]


# -- a DaemonSet whose generation and template generation differ -----------------------------


def skewed_daemonset(kube: Kube, *, nodes: int = 1) -> dict:
    """A DaemonSet after a spec change that is not a template change: ``metadata.generation``
    moves, the template generation (and the pods' ``pod-template-generation``) does not."""
    kube.daemonset("web", "app:1")
    kube.edit("daemonsets", "web", lambda d: d["spec"].update(revisionHistoryLimit=5, minReadySeconds=0))
    kube.wait_settled("DaemonSet", "web")
    ds = kube.get("daemonsets", "web")
    assert ds is not None and ds["status"]["desiredNumberScheduled"] == nodes
    assert ds is not None and ds["metadata"]["generation"] == 2
    assert ds["metadata"]["annotations"][TEMPLATE_GENERATION] == "1"
    assert {p["metadata"]["labels"]["pod-template-generation"] for p in live(kube)} == {"1"}
    return ds


@contextlib.contextmanager
def second_node(kube: Kube) -> Iterator[str]:
    """One more node for the test: on the stand-in a Node object (its kubelet runs every node), on
    the real control plane one more simulated kubelet, removed afterwards with what ran there."""
    if kube.backend == "standin":
        node = copy.deepcopy(kube.standin.get("nodes", None, "node-1"))
        node["metadata"] = {"name": "node-2", "labels": {**node["metadata"]["labels"], "kubernetes.io/hostname": "node-2"}}
        kube.standin.create("nodes", node)
        yield "node-2"
        return
    from tests.controlplane.launch import KUBELET_TIMINGS

    name = f"extra-{kube.namespace}"
    sim = KubeletSim(kube.kubeconfig, [name], settings=Settings(**KUBELET_TIMINGS), heartbeat=5).start()
    try:
        yield name
    finally:
        for ds in kube.list("daemonsets"):  # what runs on the node goes before its kubelet does
            kube.delete("daemonsets", ds["metadata"]["name"])
        wait_until(lambda: not [p for p in kube.list("pods") if p["spec"].get("nodeName") == name], timeout=90, interval=0.2)
        sim.stop()
        kube.rest("DELETE", f"/api/v1/nodes/{name}")


@pytest.mark.sim_only  # adds a node
def test_daemonset_crash_after_a_non_template_change_is_caught(kube_any: Kube) -> None:
    """Two nodes, so the controller replaces one pod at a time and ``updatedNumberScheduled``
    stays below ``desiredNumberScheduled`` while the first new pod crash-loops: the new pods must
    be found by template generation (or revision hash), not by ``metadata.generation``."""
    with second_node(kube_any):
        skewed_daemonset(kube_any, nodes=2)
        kube_any.script("app:bad", crash(after=0.1, exit_code=7))
        kube_any.set_image("DaemonSet", "web", "app:bad")
        result = watch(kube_any, "DaemonSet", image="app:bad")
        assert (result.outcome, result.exit_code) == ("failed", 7), result.to_json()
        ds = kube_any.get("daemonsets", "web")
        assert ds["metadata"]["generation"] == 3 and ds["metadata"]["annotations"][TEMPLATE_GENERATION] == "2"
        assert ds["status"]["desiredNumberScheduled"] == 2 and ds["status"]["updatedNumberScheduled"] == 1
        new = live(kube_any, "app:bad")
        assert result.pod in {p["metadata"]["name"] for p in new}
        assert {p["metadata"]["labels"]["pod-template-generation"] for p in new} == {"2"}


@pytest.mark.sim_only  # counts on exactly one node
def test_daemonset_success_after_a_non_template_change(kube_any: Kube) -> None:
    skewed_daemonset(kube_any)
    kube_any.script("app:2", ready(0.2))
    kube_any.set_image("DaemonSet", "web", "app:2")
    result = watch(kube_any, "DaemonSet", image="app:2")
    assert result.outcome == "success", result.to_json()
    assert all(p["spec"]["containers"][0]["image"] == "app:2" for p in live(kube_any))
