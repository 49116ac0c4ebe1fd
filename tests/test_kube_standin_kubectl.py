"""kubectl 1.32 works against the stand-in: get, get -w, annotate, patch, logs, rollout status.

This is the stand-in's conformance check (STYLE.md point 37): a real client, unmodified, over
real HTTP. Each test runs on both backends (``kube_any``): the stand-in and the real control plane
with the kubelet simulation, so what passes here is what a real API server does. Each kubectl
call has a timeout; ``get -w`` is read line by line with a bound.
"""

from __future__ import annotations

import json
import queue
import threading

import pytest

from tests.fixtures.kube import Kube, wait_until
from tests.kube_standin import crash, readiness_failing

pytestmark = pytest.mark.kube


def test_kubectl_version_and_get(kube_any: Kube) -> None:
    kube_any.deployment("web", "app:1", replicas=2)
    version = json.loads(kube_any.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["major"] == "1" and int(version["serverVersion"]["minor"]) >= 32
    pods = kube_any.kubectl("get", "pods", "-o", "name").stdout.split()
    assert len(pods) == 2 and all(p.startswith("pod/web-") for p in pods)
    doc = json.loads(kube_any.kubectl("get", "deployment", "web", "-o", "json").stdout)
    assert doc["kind"] == "Deployment" and doc["status"]["availableReplicas"] == 2
    listing = json.loads(kube_any.kubectl("get", "pods", "-l", "app=web", "-o", "json").stdout)
    assert len(listing["items"]) == 2
    assert "web" in kube_any.kubectl("get", "deploy").stdout
    nodes = kube_any.kubectl("get", "nodes", "-o", "name").stdout.split()
    assert (len(nodes) == 1 or kube_any.backend == "external") and all(n.startswith("node/") for n in nodes)
    names = kube_any.kubectl("get", "pods", "--field-selector", f"metadata.name={pods[0][4:]}", "-o", "name").stdout.split()
    assert names == [pods[0]]


def test_kubectl_get_watch_streams_changes(kube_any: Kube) -> None:
    kube_any.deployment("web", "app:1")
    proc = kube_any.kubectl_popen("get", "deployment", "web", "-w", "-o", "jsonpath={.metadata.annotations.note}{\"\\n\"}")
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in proc.stdout], daemon=True).start()
    try:
        first = lines.get(timeout=15)
        assert first == ""  # the initial state, no annotation yet
        kube_any.kubectl("annotate", "deployment/web", "note=hello")
        seen = []
        while "hello" not in seen:
            seen.append(lines.get(timeout=15))
    finally:
        proc.kill()
        proc.wait(10)


def test_kubectl_annotate_and_patch(kube_any: Kube) -> None:
    kube_any.deployment("web", "app:1")
    kube_any.kubectl("annotate", "deployment/web", "forge.dev/by=test")
    kube_any.kubectl("annotate", "--overwrite", "deployment/web", "forge.dev/by=again")
    assert kube_any.get("deployments", "web")["metadata"]["annotations"]["forge.dev/by"] == "again"
    kube_any.kubectl("patch", "deployment/web", "--type=json", "-p", '[{"op":"replace","path":"/spec/replicas","value":2}]')
    kube_any.kubectl("patch", "deployment/web", "--type=merge", "-p", '{"metadata":{"labels":{"team":"a"}}}')
    kube_any.kubectl("patch", "deployment/web", "-p", '{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"app:2"}]}}}}')
    d = kube_any.get("deployments", "web")
    assert d["spec"]["replicas"] == 2 and d["metadata"]["labels"]["team"] == "a"
    assert [c["image"] for c in d["spec"]["template"]["spec"]["containers"]] == ["app:2"]


def test_kubectl_annotates_flux_objects_to_request_a_reconcile(kube_any: Kube) -> None:
    kube_any.create("kustomizations", {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "apps", "namespace": kube_any.namespace},
        "spec": {"interval": "10m", "path": "./apps", "prune": True, "suspend": True,
                 "sourceRef": {"kind": "GitRepository", "name": "none"}}})
    kube_any.kubectl("annotate", "--overwrite", "kustomization/apps",
                     "reconcile.fluxcd.io/requestedAt=2024-01-01T00:00:00.000000000Z")
    ks = kube_any.get("kustomizations", "apps")
    assert ks["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"] == "2024-01-01T00:00:00.000000000Z"
    out = kube_any.kubectl("get", "kustomizations.kustomize.toolkit.fluxcd.io", "-o", "name").stdout.split()
    assert out == ["kustomization.kustomize.toolkit.fluxcd.io/apps"]


def test_kubectl_logs_current_and_previous(kube_any: Kube) -> None:
    kube_any.script("app:crash", crash(after=0.05, exit_code=1, logs=("booting",), exit_logs=("fatal: no config",)))
    kube_any.deployment("web", "app:crash", wait=False)
    pod = wait_until(lambda: next((p for p in kube_any.pods("web") if kube_any.pod_state(p).get("restartCount", 0) >= 1), None),
                     timeout=60)
    name = pod["metadata"]["name"]
    previous = kube_any.kubectl("logs", name, "--previous", "-c", "web").stdout
    assert previous.splitlines() == ["booting", "fatal: no config"]
    assert "booting" in kube_any.kubectl("logs", f"pod/{name}", "--tail=5").stdout
    missing = kube_any.kubectl("logs", name, "-c", "nope", check=False)
    assert missing.returncode != 0 and "not valid for pod" in missing.stderr


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet"])
def test_kubectl_rollout_status_succeeds(kube_any: Kube, kind: str) -> None:
    build = {"Deployment": lambda: kube_any.deployment("app", "app:1", replicas=2),
             "StatefulSet": lambda: kube_any.statefulset("app", "app:1", replicas=2),
             "DaemonSet": lambda: kube_any.daemonset("app", "app:1")}[kind]
    build()
    kube_any.set_image(kind, "app", "app:2")
    proc = kube_any.kubectl("rollout", "status", f"{kind.lower()}/app", "--timeout=20s", timeout=30)
    assert proc.returncode == 0
    assert ("successfully rolled out" in proc.stdout or "rolling update complete" in proc.stdout
            or "roll out complete" in proc.stdout)


def test_kubectl_rollout_status_fails_only_at_the_progress_deadline(kube_any: Kube) -> None:
    kube_any.deployment("web", "app:1", progress_deadline=1)
    kube_any.script("app:sick", readiness_failing())
    kube_any.set_image("Deployment", "web", "app:sick")
    proc = kube_any.kubectl("rollout", "status", "deployment/web", "--timeout=20s", check=False, timeout=30)
    assert proc.returncode != 0 and "exceeded its progress deadline" in proc.stderr
