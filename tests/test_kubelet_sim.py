"""The kubelet simulation against the real control plane: what a kubelet writes, as a kubelet does.

Nodes (registration, Ready, Lease heartbeats, the log endpoint), pod status (phase, conditions,
container states, imageID, podIP), Events (source kubelet, aggregated counts), logs through the
API server's ``pods/log`` proxy, graceful deletion, and run-to-completion pods under the real Job
controller. Images are scripted from this process through the ConfigMap the simulation reads.
"""

from __future__ import annotations

import re

import pytest

from tests.controlplane.launch import KUBELET_TIMINGS
from tests.fixtures.kube import wait_until
from tests.fixtures.realkube import RealKube
from tests.kube_standin import ImageScript, Settings, completes, crash, image_pull_error, ready, unschedulable
from tests.kubelet_sim import KubeletSim
from tests.kubelet_sim.scripts import decode, encode, entry_key

pytestmark = pytest.mark.kube
LONG = 90.0  # a deadline for the real controllers on a loaded 2-core machine


def conditions(pod: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or []}


def events_of(kube: RealKube, name: str) -> list[dict]:
    return [e for e in kube.events() if e["involvedObject"]["name"] == name]


def test_scripts_round_trip_through_valid_configmap_keys() -> None:
    script = crash(exit_code=3, logs=("a", "b"), exit_logs=("boom",))
    key, value = encode("registry.test:5000/team/api:v1.2@sha256:" + "a" * 64, script)
    assert re.fullmatch(r"[-._a-zA-Z0-9]+", key) and len(key) <= 253
    assert decode(value) == ("registry.test:5000/team/api:v1.2@sha256:" + "a" * 64, script)
    assert entry_key("a/b:1") != entry_key("a_b_1")
    assert decode(encode("*", ImageScript())[1]) == ("*", ImageScript())


def test_nodes_are_registered_ready_and_kept_alive(real_kube: RealKube) -> None:
    nodes = real_kube.rest("GET", "/api/v1/nodes")["items"]
    assert len(nodes) == 1
    node = nodes[0]
    st = node["status"]
    assert conditions(node)["Ready"] == "True" and st["allocatable"]["pods"] == "500"
    assert st["addresses"] == [{"type": "InternalIP", "address": "127.0.0.1"}]
    assert st["daemonEndpoints"]["kubeletEndpoint"]["Port"] > 0
    name = node["metadata"]["name"]
    lease = real_kube.rest("GET", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}")
    assert lease["spec"]["holderIdentity"] == name
    assert lease["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]
    first = lease["spec"]["renewTime"]
    wait_until(lambda: real_kube.rest("GET", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}")
               ["spec"]["renewTime"] != first, timeout=LONG, interval=0.5)


def test_a_running_pod_has_the_status_and_events_of_a_kubelet(real_kube: RealKube) -> None:
    real_kube.deployment("web", "registry.test/app:1")
    pod = real_kube.pods("web")[0]
    st, name = pod["status"], pod["metadata"]["name"]
    assert st["phase"] == "Running" and st["hostIP"] == "127.0.0.1" and st["podIP"] and st["startTime"]
    assert st["podIPs"] == [{"ip": st["podIP"]}]
    assert conditions(pod) == {"PodReadyToStartContainers": "True", "PodScheduled": "True", "Initialized": "True",
                               "ContainersReady": "True", "Ready": "True"}
    cs = st["containerStatuses"][0]
    assert cs["image"] == "registry.test/app:1" and cs["ready"] and cs["started"] and cs["restartCount"] == 0
    # not pulled from a registry here: the runtime's local image id (see kubelet.image_id)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", cs["imageID"]), cs["imageID"]
    assert cs["containerID"].startswith("containerd://") and "running" in cs["state"]
    reasons = {e["reason"]: e for e in events_of(real_kube, name)}
    assert {"Scheduled", "Pulling", "Pulled", "Created", "Started"} <= set(reasons)
    scheduled = reasons["Scheduled"]  # kube-scheduler records through events.k8s.io/v1
    assert scheduled["reportingComponent"] == "default-scheduler" and scheduled["action"] == "Binding"
    started = reasons["Started"]
    assert started["source"] == {"component": "kubelet", "host": pod["spec"]["nodeName"]}
    assert started["involvedObject"]["fieldPath"] == "spec.containers{web}"


def test_a_crash_loop_is_written_and_logged_as_a_kubelet_does(real_kube: RealKube) -> None:
    real_kube.script("app:crash", crash(after=0.05, exit_code=3, logs=("booting",), exit_logs=("fatal: no config",)))
    real_kube.deployment("web", "app:crash", wait=False)

    def looping() -> dict | None:
        for p in real_kube.pods("web"):
            cs = real_kube.pod_state(p)
            if cs.get("restartCount", 0) >= 2 and cs["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff":
                return p
        return None
    pod = wait_until(looping, timeout=LONG, interval=0.1)
    cs, name = real_kube.pod_state(pod), pod["metadata"]["name"]
    assert cs["lastState"]["terminated"]["exitCode"] == 3 and cs["lastState"]["terminated"]["reason"] == "Error"
    assert pod["status"]["phase"] == "Running" and conditions(pod)["Ready"] == "False"
    assert "back-off" in cs["state"]["waiting"]["message"]
    backoff = wait_until(lambda: [e for e in events_of(real_kube, name) if e["reason"] == "BackOff" and e["count"] >= 2],
                         timeout=LONG, interval=0.2)
    assert backoff[0]["type"] == "Warning"
    previous = real_kube.kubectl("logs", name, "--previous", "-c", "web").stdout  # through the API server's proxy
    assert previous.splitlines() == ["booting", "fatal: no config"]
    stamped = real_kube.kubectl("logs", name, "--previous", "--timestamps", "--tail=1").stdout
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\S+Z fatal: no config\n", stamped), stamped


def test_logs_of_a_container_waiting_to_start_are_refused_as_by_a_kubelet(real_kube: RealKube) -> None:
    real_kube.script("app:nopull", image_pull_error("not found"))
    real_kube.deployment("web", "app:nopull", wait=False)
    pod = wait_until(lambda: next((p for p in real_kube.pods("web") if real_kube.pod_state(p).get("state", {})
                                   .get("waiting", {}).get("reason") in ("ErrImagePull", "ImagePullBackOff")), None),
                     timeout=LONG, interval=0.1)
    assert pod["status"]["phase"] == "Pending"
    out = real_kube.kubectl("logs", pod["metadata"]["name"], check=False)
    assert out.returncode != 0 and "is waiting to start" in out.stderr, out.stderr


def test_a_deleted_pod_is_stopped_then_removed(real_kube: RealKube) -> None:
    real_kube.deployment("web", "app:1")
    pod = real_kube.pods("web")[0]
    name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    real_kube.kubectl("delete", "pod", name, "--wait=true", "--timeout=60s", timeout=90)
    assert not [p for p in real_kube.pods("web") if p["metadata"]["uid"] == uid]
    assert any(e["reason"] == "Killing" for e in events_of(real_kube, name))
    real_kube.wait_settled("Deployment", "web")  # the ReplicaSet replaced it, the kubelet runs the new one


@pytest.mark.parametrize(("code", "condition"), [(0, "Complete"), (4, "Failed")])
def test_jobs_run_to_completion_under_the_real_job_controller(real_kube: RealKube, code: int, condition: str) -> None:
    real_kube.script("app:migrate", completes(after=0.1, exit_code=code, exit_logs=("migrated",)))
    real_kube.create("jobs", {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
                              "spec": {"backoffLimit": 0, "template": {"spec": {
                                  "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                                  "containers": [{"name": "migrate", "image": "app:migrate"}]}}}})

    def finished() -> dict | None:
        job = real_kube.get("jobs", "migrate")
        return job if any(c["type"] == condition and c["status"] == "True"
                          for c in (job.get("status") or {}).get("conditions") or []) else None
    wait_until(finished, timeout=LONG, interval=0.2)
    pod = real_kube.list("pods", label_selector="job-name=migrate")[0]
    cs = real_kube.pod_state(pod)
    assert pod["status"]["phase"] == ("Succeeded" if code == 0 else "Failed")
    assert cs["state"]["terminated"]["exitCode"] == code
    assert cs["state"]["terminated"]["reason"] == ("Completed" if code == 0 else "Error")
    assert real_kube.kubectl("logs", pod["metadata"]["name"]).stdout == "migrated\n"


def test_unknown_images_become_ready_at_once_and_scripts_apply_to_new_pods(real_kube: RealKube) -> None:
    real_kube.deployment("web", "app:unknown")
    real_kube.script("app:unknown", ready(0.0, logs=("scripted now",)))
    real_kube.kubectl("rollout", "restart", "deployment/web")
    wait_until(lambda: [p for p in real_kube.pods("web") if not p["metadata"].get("deletionTimestamp")
                        and "scripted now" in (real_kube.kubectl("logs", p["metadata"]["name"], check=False).stdout)],
               timeout=LONG, interval=0.3)


def test_without_a_scheduler_the_simulation_binds_pods_itself(real_kube: RealKube) -> None:
    """``--bind``: pods for the simulation's scheduler name are bound through ``pods/binding``;
    an image scripted unschedulable stays Pending with FailedScheduling, as from kube-scheduler."""
    node = f"binder-{real_kube.namespace}"
    sim = KubeletSim(real_kube.kubeconfig, [node], settings=Settings(**KUBELET_TIMINGS), bind="sim-binder").start()
    try:
        real_kube.script("app:nofit", unschedulable("0/1 nodes are available: 1 Insufficient cpu."))
        for name, image in (("fits", "app:1"), ("nofit", "app:nofit")):
            real_kube.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
                "schedulerName": "sim-binder", "terminationGracePeriodSeconds": 0,
                "nodeSelector": {"kubernetes.io/hostname": node},
                "containers": [{"name": "c", "image": image, "resources": {}}]}})
        fits = wait_until(lambda: (p := real_kube.get("pods", "fits")) and conditions(p).get("Ready") == "True" and p,
                          timeout=LONG, interval=0.1)
        assert fits["spec"]["nodeName"] == node
        failed = wait_until(lambda: [e for e in events_of(real_kube, "nofit") if e["reason"] == "FailedScheduling"],
                            timeout=LONG, interval=0.1)
        assert failed[0]["message"] == "0/1 nodes are available: 1 Insufficient cpu." and failed[0]["action"] == "Scheduling"
        nofit = real_kube.get("pods", "nofit")
        assert not nofit["spec"].get("nodeName") and conditions(nofit)["PodScheduled"] == "False"
        for name in ("fits", "nofit"):
            real_kube.delete("pods", name)
        wait_until(lambda: not real_kube.pods(), timeout=LONG, interval=0.1)
    finally:
        sim.stop()
        real_kube.rest("DELETE", f"/api/v1/nodes/{node}")
