"""The Kubernetes API stand-in speaks the real protocol: checked with the real ``kubernetes`` client.

Protocol (discovery, CRUD, the three patch types, resourceVersion, watch from a version, 410
Gone, selectors, status subresource, logs, events, leases, custom resources) and the simulated
controllers and kubelet. kubectl itself is checked in test_kube_standin_kubectl.py.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.fixtures.kube import Kube, wait_until
from tests.kube_standin import (
    FLUX_GITREPOSITORY,
    Controller,
    crash,
    image_pull_error,
    invalid_image_name,
    missing_secret,
    oom_killed,
    readiness_failing,
    slow_start,
    unschedulable,
)

pytestmark = pytest.mark.kube


def http(kube: Kube, method: str, path: str, body: object = None, content_type: str = "application/json") -> tuple[int, str, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(kube.standin.url + path, data=data, method=method,
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def watch_lines(kube: Kube, path: str, *, stop_after: int, timeout: float = 10) -> list[dict]:
    out = []
    with urllib.request.urlopen(kube.standin.url + path, timeout=timeout) as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        for raw in resp:
            if raw.strip():
                out.append(json.loads(raw))
            if len(out) >= stop_after:
                break
    return out


def cm(name: str, labels: dict[str, str] | None = None, **data: str) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": dict(data)}


# -- discovery --------------------------------------------------------------------------------


def test_discovery_lists_core_apps_and_flux_groups(kube: Kube) -> None:
    from kubernetes import client

    api = kube.api()
    assert client.VersionApi(api).get_code().minor == "32"
    groups = {g.name: g for g in client.ApisApi(api).get_api_versions().groups}
    assert {"apps", "coordination.k8s.io", "source.toolkit.fluxcd.io", "kustomize.toolkit.fluxcd.io"} <= set(groups)
    core = client.CoreV1Api(api).get_api_resources()
    names = {r.name for r in core.resources}
    assert core.group_version == "v1"
    assert {"pods", "pods/log", "pods/status", "events", "namespaces"} <= names
    status, _, body = http(kube, "GET", "/apis/source.toolkit.fluxcd.io/v1")
    doc = json.loads(body)
    assert status == 200 and doc["groupVersion"] == "source.toolkit.fluxcd.io/v1"
    assert {r["name"] for r in doc["resources"]} == {"gitrepositories", "gitrepositories/status"}


def test_unknown_path_is_a_404_status_document(kube: Kube) -> None:
    status, ctype, body = http(kube, "GET", "/apis/nope.example/v1/things")
    assert status == 404 and ctype.startswith("application/json")
    assert json.loads(body)["kind"] == "Status"


# -- CRUD, resourceVersion, conflicts ---------------------------------------------------------


def test_create_get_update_delete_with_monotonic_resource_versions(kube: Kube) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(kube.api())
    a = core.create_namespaced_config_map("default", cm("a", x="1"))
    b = core.create_namespaced_config_map("default", cm("b", x="1"))
    assert int(b.metadata.resource_version) > int(a.metadata.resource_version)
    assert a.metadata.uid and a.metadata.creation_timestamp
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", cm("a"))
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "AlreadyExists"
    a.data = {"x": "2"}
    a2 = core.replace_namespaced_config_map("a", "default", a)
    assert int(a2.metadata.resource_version) > int(b.metadata.resource_version)
    a.data = {"x": "3"}  # stale resourceVersion: optimistic concurrency refuses it
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("a", "default", a)
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "Conflict"
    core.delete_namespaced_config_map("a", "default")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("a", "default")
    assert err.value.status == 404


def test_generate_name_and_list_kind(kube: Kube) -> None:
    status, _, body = http(kube, "POST", "/api/v1/namespaces/default/configmaps",
                           {"metadata": {"generateName": "gen-"}, "data": {}})
    assert status == 201 and json.loads(body)["metadata"]["name"].startswith("gen-")
    _, _, body = http(kube, "GET", "/api/v1/namespaces/default/configmaps")
    doc = json.loads(body)
    assert doc["kind"] == "ConfigMapList" and doc["apiVersion"] == "v1" and doc["metadata"]["resourceVersion"]


# -- patches ----------------------------------------------------------------------------------


def test_merge_strategic_and_json_patches(kube: Kube) -> None:
    from kubernetes import client

    kube.deployment("web", "app:1", wait=False)
    apps = client.AppsV1Api(kube.api())
    # strategic merge: containers merge by name (the sidecar is added, web keeps its image)
    d = apps.patch_namespaced_deployment("web", "default", {"spec": {"template": {"spec": {"containers": [
        {"name": "sidecar", "image": "side:1"}]}}}})
    assert [(c.name, c.image) for c in d.spec.template.spec.containers] == [("web", "app:1"), ("sidecar", "side:1")]
    # JSON merge patch: lists are replaced; null deletes a key
    status, _, body = http(kube, "PATCH", "/apis/apps/v1/namespaces/default/deployments/web",
                           {"metadata": {"labels": {"team": "a"}},
                            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "app:2"}]}}}},
                           "application/merge-patch+json")
    doc = json.loads(body)
    assert status == 200 and [c["name"] for c in doc["spec"]["template"]["spec"]["containers"]] == ["web"]
    status, _, body = http(kube, "PATCH", "/apis/apps/v1/namespaces/default/deployments/web",
                           {"metadata": {"labels": {"team": None}}}, "application/merge-patch+json")
    assert "team" not in json.loads(body)["metadata"].get("labels", {})
    # JSON patch (RFC 6902), including a failing test op
    status, _, body = http(kube, "PATCH", "/apis/apps/v1/namespaces/default/deployments/web",
                           [{"op": "replace", "path": "/spec/replicas", "value": 3},
                            {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}],
                           "application/json-patch+json")
    doc = json.loads(body)
    assert doc["spec"]["replicas"] == 3 and doc["metadata"]["annotations"]["a"] == "b"
    status, _, _ = http(kube, "PATCH", "/apis/apps/v1/namespaces/default/deployments/web",
                        [{"op": "test", "path": "/spec/replicas", "value": 7}], "application/json-patch+json")
    assert status == 422


def test_spec_changes_bump_generation_and_status_is_a_subresource(kube: Kube) -> None:
    d = kube.deployment("web", "app:1")
    assert d["metadata"]["generation"] == 1
    _, _, body = http(kube, "PATCH", "/apis/apps/v1/namespaces/default/deployments/web",
                      {"metadata": {"annotations": {"x": "y"}}, "status": {"replicas": 99}},
                      "application/merge-patch+json")
    doc = json.loads(body)
    assert doc["metadata"]["generation"] == 1 and doc["status"]["replicas"] != 99  # status ignored here
    _, _, body = http(kube, "PATCH", "/apis/apps/v1/namespaces/default/deployments/web",
                      {"spec": {"replicas": 2}}, "application/merge-patch+json")
    assert json.loads(body)["metadata"]["generation"] == 2
    _, _, body = http(kube, "PATCH", "/apis/apps/v1/namespaces/default/deployments/web/status",
                      {"status": {"observedGeneration": 42}, "spec": {"replicas": 9}}, "application/merge-patch+json")
    doc = json.loads(body)
    assert doc["status"]["observedGeneration"] == 42 and doc["spec"]["replicas"] == 2


# -- selectors and watches --------------------------------------------------------------------


def test_label_and_field_selectors(kube: Kube) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube.api())
    core.create_namespaced_config_map("default", cm("one", {"app": "a", "tier": "web"}))
    core.create_namespaced_config_map("default", cm("two", {"app": "b", "tier": "web"}))
    core.create_namespaced_config_map("default", cm("three", {"app": "c"}))
    names = lambda **kw: sorted(i.metadata.name for i in core.list_namespaced_config_map("default", **kw).items)  # noqa: E731
    assert names(label_selector="app=a") == ["one"]
    assert names(label_selector="tier=web,app!=a") == ["two"]
    assert names(label_selector="app in (a,c)") == ["one", "three"]
    assert names(label_selector="!tier") == ["three"]
    assert names(field_selector="metadata.name=two") == ["two"]
    assert names(field_selector="metadata.name!=two", label_selector="tier") == ["one"]


def test_watch_from_resource_version_replays_later_changes_only(kube: Kube) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube.api())
    core.create_namespaced_config_map("default", cm("early"))
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", cm("late", {"pick": "yes"}))
    core.patch_namespaced_config_map("late", "default", {"data": {"k": "v"}})
    core.delete_namespaced_config_map("late", "default")
    events = watch_lines(kube, f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"
                               "&labelSelector=pick%3Dyes", stop_after=3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "late"), ("MODIFIED", "late"), ("DELETED", "late")]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)


def test_watch_without_version_starts_with_current_objects_and_field_selector(kube: Kube) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube.api())
    core.create_namespaced_config_map("default", cm("a"))
    core.create_namespaced_config_map("default", cm("b"))
    events = watch_lines(kube, "/api/v1/namespaces/default/configmaps?watch=1&fieldSelector=metadata.name%3Db"
                               "&timeoutSeconds=1", stop_after=5)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b")]


def test_watch_from_a_compacted_version_gets_410_gone(kube: Kube) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(kube.api())
    core.create_namespaced_config_map("default", cm("a"))
    old = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", cm("b"))
    kube.standin.compact()
    events = watch_lines(kube, f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={old}", stop_after=1)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
    # ... and the official client's Watch raises it as ApiException(410) when it cannot retry
    from kubernetes import watch

    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=old,
                                      timeout_seconds=2):
            pass
    assert err.value.status == 410


def test_watch_bookmarks_carry_the_current_version(kube: Kube) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube.api())
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_secret("default", {"metadata": {"name": "elsewhere"}})
    events = watch_lines(kube, f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"
                               "&allowWatchBookmarks=true&timeoutSeconds=5", stop_after=1)
    assert events[0]["type"] == "BOOKMARK"
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) > int(rv)


def test_dropped_watch_connection_is_seen_by_the_client(kube: Kube) -> None:
    import threading

    from kubernetes import client, watch

    core = client.CoreV1Api(kube.api())
    seen: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for ev in watch.Watch().stream(core.list_namespaced_config_map, "default", timeout_seconds=30):
                seen.append(ev["type"])
        except BaseException as err:  # the client sees the stream break
            errors.append(err)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_until(lambda: kube.standin.call(lambda: len(kube.standin.api.active_watches)))
    assert kube.standin.drop_watches() == 1
    t.join(10)
    assert not t.is_alive()


# -- logs, events, leases, custom resources ---------------------------------------------------


def test_pod_logs_current_and_previous_as_text(kube: Kube) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    kube.script("app:crash", crash(after=0.05, exit_code=2, logs=("hello",), exit_logs=("bye",)))
    kube.deployment("web", "app:crash", wait=False)
    pod = wait_until(lambda: [p for p in kube.pods("web") if kube.pod_state(p).get("restartCount", 0) >= 1])[0]
    name = pod["metadata"]["name"]
    status, ctype, body = http(kube, "GET", f"/api/v1/namespaces/default/pods/{name}/log?previous=true")
    assert status == 200 and ctype.startswith("text/plain") and body.decode().splitlines() == ["hello", "bye"]
    core = client.CoreV1Api(kube.api())
    assert core.read_namespaced_pod_log(name, "default", tail_lines=1, previous=True) == "bye\n"
    kube.script("app:pull", image_pull_error())
    kube.deployment("other", "app:pull", wait=False)
    other = wait_until(lambda: [p for p in kube.pods("other") if kube.pod_state(p)])[0]["metadata"]["name"]
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log(other, "default")
    assert err.value.status == 400 and "is waiting to start" in json.loads(err.value.body)["message"]


def test_leases_and_events_are_plain_resources(kube: Kube) -> None:
    from kubernetes import client

    coord = client.CoordinationV1Api(kube.api())
    lease = coord.create_namespaced_lease("default", {"metadata": {"name": "forge-lock"},
                                                      "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}})
    assert lease.spec.holder_identity == "me"
    coord.patch_namespaced_lease("forge-lock", "default", {"spec": {"holderIdentity": "you"}})
    assert coord.read_namespaced_lease("forge-lock", "default").spec.holder_identity == "you"
    kube.deployment("web", "app:1")
    events = client.CoreV1Api(kube.api()).list_namespaced_event("default").items
    assert {"ScalingReplicaSet", "SuccessfulCreate", "Scheduled", "Pulling", "Started"} <= {e.reason for e in events}


def test_flux_custom_resources_with_status_and_crd_registration(kube: Kube) -> None:
    from kubernetes import client

    custom = client.CustomObjectsApi(kube.api())
    repo = {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "gitops", "namespace": "flux-system"},
            "spec": {"url": "ssh://git@example/gitops", "interval": "1m", "ref": {"branch": "main"}}}
    created = custom.create_namespaced_custom_object("source.toolkit.fluxcd.io", "v1", "flux-system", "gitrepositories", repo)
    assert created["metadata"]["generation"] == 1
    custom.patch_namespaced_custom_object("source.toolkit.fluxcd.io", "v1", "flux-system", "gitrepositories", "gitops",
                                          {"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "now"}}})
    custom.patch_namespaced_custom_object_status("source.toolkit.fluxcd.io", "v1", "flux-system", "gitrepositories",
                                                 "gitops", {"status": {"lastHandledReconcileAt": "now"}})
    got = custom.get_namespaced_custom_object("source.toolkit.fluxcd.io", "v1", "flux-system", "gitrepositories", "gitops")
    assert got["status"]["lastHandledReconcileAt"] == "now" and got["metadata"]["generation"] == 1
    # a CRD created through the API is served at once
    ext = client.ApiextensionsV1Api(kube.api())
    ext.create_custom_resource_definition({
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
    custom.create_namespaced_custom_object("example.com", "v1", "default", "widgets",
                                           {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    assert [w["metadata"]["name"] for w in custom.list_namespaced_custom_object("example.com", "v1", "default", "widgets")["items"]] == ["w"]


def test_controller_hook_api_reacts_to_an_annotation(kube: Kube) -> None:
    """The hook API a Flux simulation uses: subscribe, reconcile, write status."""

    class Sim(Controller):
        name = "source-controller"

        def setup(self) -> None:
            self.cluster.on("gitrepositories", lambda ch: self.enqueue(
                (ch.obj["metadata"]["namespace"], ch.obj["metadata"]["name"])))

        def reconcile(self, key: tuple[str, str]) -> None:
            ns, name = key
            repo = self.cluster.store.find(FLUX_GITREPOSITORY, ns, name)
            asked = (repo["metadata"].get("annotations") or {}).get("reconcile.fluxcd.io/requestedAt")
            if asked and asked != repo["status"].get("lastHandledReconcileAt"):
                self.cluster.store.mutate(FLUX_GITREPOSITORY, ns, name, lambda o: o["status"].update(
                    lastHandledReconcileAt=asked, artifact={"revision": "main@sha1:abc"}), subresource="status")

    kube.standin.add(Sim())
    kube.standin.create("gitrepositories", {"metadata": {"name": "r", "namespace": "flux-system"}, "spec": {}})
    kube.standin.mutate("gitrepositories", "flux-system", "r",
                        lambda o: o["metadata"].setdefault("annotations", {}).update({"reconcile.fluxcd.io/requestedAt": "t1"}))
    got = wait_until(lambda: (kube.standin.get("gitrepositories", "flux-system", "r")["status"] or {}).get("lastHandledReconcileAt"))
    assert got == "t1"


# -- controllers ------------------------------------------------------------------------------


def test_deployment_rollout_makes_a_new_replicaset_and_retires_the_old(kube: Kube) -> None:
    kube.deployment("web", "app:1", replicas=3)
    first = kube.standin.list("replicasets", "default")
    assert len(first) == 1 and first[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    h1 = first[0]["metadata"]["labels"]["pod-template-hash"]
    assert first[0]["metadata"]["name"] == f"web-{h1}"
    kube.set_image("Deployment", "web", "app:2")
    kube.wait_settled("Deployment", "web")
    rss = {r["metadata"]["name"]: r for r in kube.standin.list("replicasets", "default")}
    new = next(r for r in rss.values() if r["metadata"]["labels"]["pod-template-hash"] != h1)
    assert new["spec"]["replicas"] == 3 and rss[f"web-{h1}"]["spec"]["replicas"] == 0
    assert new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    d = kube.standin.get("deployments", "default", "web")
    assert d["status"]["observedGeneration"] == d["metadata"]["generation"] == 2
    conds = {c["type"]: c for c in d["status"]["conditions"]}
    assert conds["Available"]["status"] == "True" and conds["Progressing"]["reason"] == "NewReplicaSetAvailable"
    pods = wait_until(lambda: len(kube.pods("web")) == 3 and kube.pods("web"))  # old ones terminate
    assert all(p["metadata"]["labels"]["pod-template-hash"] == new["metadata"]["labels"]["pod-template-hash"] for p in pods)
    scaled = [e["message"] for e in kube.standin.list("events", "default") if e["reason"] == "ScalingReplicaSet"]
    assert any("Scaled down replica set" in m for m in scaled)


def test_rolling_update_respects_max_surge_and_max_unavailable(kube: Kube) -> None:
    kube.deployment("web", "app:1", replicas=4,
                    strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    kube.script("app:slow", slow_start(0.3))
    seen: list[tuple[int, int]] = []

    def observe(cluster: object) -> bool:
        pods = [p for p in cluster.store.list("pods", "default", label_selector="app=web")
                if not p["metadata"].get("deletionTimestamp")]
        ready = sum(1 for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                           for c in p.get("status", {}).get("conditions", [])))
        seen.append((len(pods), ready))
        d = cluster.store.find("deployments", "default", "web")
        return d["status"].get("updatedReplicas") == 4 and d["status"].get("availableReplicas") == 4 \
            and d["status"].get("replicas") == 4
    kube.set_image("Deployment", "web", "app:slow")
    kube.wait_for(observe, timeout=20)
    assert max(total for total, _ in seen) <= 5  # never more than replicas + maxSurge
    assert min(ready for _, ready in seen) >= 4 - 0 - 1 + 1  # maxUnavailable 0: 4 always ready


def test_progress_deadline_exceeded_condition(kube: Kube) -> None:
    kube.deployment("web", "app:1", progress_deadline=1)
    kube.script("app:never", readiness_failing())
    kube.set_image("Deployment", "web", "app:never")

    def timed_out(cluster: object) -> dict | None:
        d = cluster.store.find("deployments", "default", "web")
        return next((c for c in d["status"].get("conditions", []) if c["type"] == "Progressing"
                     and c["reason"] == "ProgressDeadlineExceeded"), None)
    cond = kube.wait_for(timed_out, timeout=10)
    assert cond["status"] == "False" and "has timed out progressing" in cond["message"]


def test_statefulset_creates_in_order_and_updates_from_the_top(kube: Kube) -> None:
    kube.statefulset("db", "db:1", replicas=3)
    assert sorted(p["metadata"]["name"] for p in kube.pods("db")) == ["db-0", "db-1", "db-2"]
    created = sorted(kube.pods("db"), key=lambda p: p["metadata"]["creationTimestamp"])
    assert [p["metadata"]["name"] for p in created] == ["db-0", "db-1", "db-2"]
    kube.set_image("StatefulSet", "db", "db:2")
    deletions: list[str] = []
    kube.standin.call(lambda: kube.standin.cluster.on("pods", lambda ch: deletions.append(ch.obj["metadata"]["name"])
                                                      if ch.type == "DELETED" else None))
    kube.wait_settled("StatefulSet", "db")
    sts = kube.standin.get("statefulsets", "default", "db")
    assert sts["status"]["currentRevision"] == sts["status"]["updateRevision"]
    assert deletions == ["db-2", "db-1", "db-0"]
    assert {p["spec"]["containers"][0]["image"] for p in kube.pods("db")} == {"db:2"}


def test_statefulset_partition_leaves_lower_ordinals(kube: Kube) -> None:
    kube.statefulset("db", "db:1", replicas=3, partition=2)
    kube.set_image("StatefulSet", "db", "db:2")
    kube.wait_for(lambda c: c.store.find("statefulsets", "default", "db")["status"].get("updatedReplicas") == 1
                  and c.store.find("statefulsets", "default", "db")["status"].get("readyReplicas") == 3)
    images = {p["metadata"]["name"]: p["spec"]["containers"][0]["image"] for p in kube.pods("db")}
    assert images == {"db-0": "db:1", "db-1": "db:1", "db-2": "db:2"}


def test_daemonset_runs_one_pod_per_node_and_rolls(kube_standin, tmp_path) -> None:
    from tests.fixtures.kube import Kube, write_kubeconfig

    kube = Kube(kube_standin, write_kubeconfig(tmp_path / "kc", kube_standin.url), tmp_path)
    kube.standin.create("nodes", {"metadata": {"name": "node-2", "labels": {"kubernetes.io/hostname": "node-2"}}})
    kube.daemonset("agent", "agent:1")
    pods = kube.pods("agent")
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["node-1", "node-2"]
    kube.set_image("DaemonSet", "agent", "agent:2")
    kube.wait_settled("DaemonSet", "agent")
    wait_until(lambda: {p["spec"]["containers"][0]["image"] for p in kube.pods("agent")} == {"agent:2"}
               and len(kube.pods("agent")) == 2)
    ds = kube.standin.get("daemonsets", "default", "agent")
    assert ds["status"]["desiredNumberScheduled"] == 2 and ds["status"]["updatedNumberScheduled"] == 2


# -- the scripted kubelet ---------------------------------------------------------------------


def _waiting(kube: Kube, app: str, reason: str) -> dict:
    return wait_until(lambda: next((kube.pod_state(p) for p in kube.pods(app)
                                    if (kube.pod_state(p).get("state") or {}).get("waiting", {}).get("reason") == reason), None))


def test_kubelet_crash_loop_with_backoff(kube: Kube) -> None:
    kube.script("app:crash", crash(after=0.02, exit_code=7))
    kube.deployment("web", "app:crash", wait=False)
    cs = _waiting(kube, "web", "CrashLoopBackOff")
    assert cs["restartCount"] >= 1 and cs["lastState"]["terminated"]["exitCode"] == 7
    assert "back-off" in cs["state"]["waiting"]["message"]
    reasons = {e["reason"] for e in kube.standin.list("events", "default") if e["type"] == "Warning"}
    assert "BackOff" in reasons


@pytest.mark.parametrize(("script", "reason"), [
    (image_pull_error(), "ErrImagePull"),
    (invalid_image_name(), "InvalidImageName"),
    (missing_secret("db"), "CreateContainerConfigError"),
])
def test_kubelet_waiting_reasons(kube: Kube, script, reason: str) -> None:
    kube.script("app:x", script)
    kube.deployment("web", "app:x", wait=False)
    cs = _waiting(kube, "web", reason)
    assert cs["ready"] is False and cs["state"]["waiting"]["message"]


def test_kubelet_image_pull_backoff_follows_err_image_pull(kube: Kube) -> None:
    kube.script("app:x", image_pull_error())
    kube.deployment("web", "app:x", wait=False)
    _waiting(kube, "web", "ImagePullBackOff")


def test_kubelet_oom_killed(kube: Kube) -> None:
    kube.script("app:oom", oom_killed(after=0.02))
    kube.deployment("web", "app:oom", wait=False)
    cs = wait_until(lambda: next((kube.pod_state(p) for p in kube.pods("web")
                                  if kube.pod_state(p).get("lastState", {}).get("terminated")), None))
    assert cs["lastState"]["terminated"]["reason"] == "OOMKilled" and cs["lastState"]["terminated"]["exitCode"] == 137


def test_scheduler_unschedulable_then_schedules(kube: Kube) -> None:
    kube.script("app:big", unschedulable(until=0.5))
    kube.deployment("web", "app:big", wait=False)
    pod = wait_until(lambda: next((p for p in kube.pods("web") if any(
        c["type"] == "PodScheduled" and c["status"] == "False" for c in p.get("status", {}).get("conditions", []))), None))
    assert not pod["spec"].get("nodeName")
    assert any(e["reason"] == "FailedScheduling" for e in kube.standin.list("events", "default"))
    kube.wait_settled("Deployment", "web")


def test_readiness_failing_emits_unhealthy_events(kube: Kube) -> None:
    kube.script("app:sick", readiness_failing("Readiness probe failed: connection refused"))
    kube.deployment("web", "app:sick", wait=False)
    ev = wait_until(lambda: next((e for e in kube.standin.list("events", "default") if e["reason"] == "Unhealthy"
                                  and e.get("count", 1) >= 2), None))
    assert ev["message"] == "Readiness probe failed: connection refused"
    assert ev["involvedObject"]["fieldPath"] == "spec.containers{web}"


def test_restart_keeps_state_and_compacts_history(kube: Kube) -> None:
    from kubernetes import client

    kube.deployment("web", "app:1")
    core = client.CoreV1Api(kube.api())
    rv = core.list_namespaced_pod("default").metadata.resource_version
    kube.standin.create("configmaps", cm("later"), "default")
    kube.standin.restart(down_for=0.05)
    assert [p.metadata.name for p in core.list_namespaced_pod("default").items] == [p["metadata"]["name"] for p in kube.pods()]
    events = watch_lines(kube, f"/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}", stop_after=1)
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410
