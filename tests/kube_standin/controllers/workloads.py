"""Deployment, ReplicaSet, StatefulSet and DaemonSet controllers, after kube-controller-manager.

Enough of the real algorithms for rollouts to look real from outside: a Deployment makes one
ReplicaSet per pod template (named ``<deployment>-<pod-template-hash>``, with the revision
annotation), scales it up and the old ones down within ``maxSurge``/``maxUnavailable`` (or all at
once for ``Recreate``), and keeps ``observedGeneration``, the replica counts and the
``Progressing``/``Available`` conditions, ``ProgressDeadlineExceeded`` included. A StatefulSet
creates ``<name>-<ordinal>`` in order and replaces pods from the highest ordinal down (respecting
``partition``); a DaemonSet runs one pod per node and replaces them ``maxUnavailable`` at a time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import uuid
from datetime import datetime

from ..cluster import Controller
from ..store import Change, Store, timestamp

REVISION = "deployment.kubernetes.io/revision"


# ---------------------------------------------------------------------------------------------
# helpers shared by the controllers


def template_hash(template: dict) -> str:
    raw = json.dumps(template, sort_keys=True).encode()
    digest = hashlib.sha256(raw).hexdigest()
    alphabet = "bcdfghjklmnpqrstvwxz2456789"  # the real controller's "safe" encoding alphabet
    n = int(digest[:16], 16)
    out = ""
    for _ in range(10):
        n, r = divmod(n, len(alphabet))
        out += alphabet[r]
    return out


def parse_time(ts: str | None) -> float | None:
    if not ts:
        return None
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def condition(obj: dict, type_: str) -> dict | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


def set_condition(status: dict, type_: str, value: str, reason: str, message: str, now: float,
                  *, update_time: bool = False) -> None:
    conds = status.setdefault("conditions", [])
    cur = next((c for c in conds if c["type"] == type_), None)
    stamp = timestamp(now)
    if cur is None:
        cur = {"type": type_, "lastTransitionTime": stamp}
        if update_time:
            cur["lastUpdateTime"] = stamp
        conds.append(cur)
    elif cur.get("status") != value:
        cur["lastTransitionTime"] = stamp
        if update_time:
            cur["lastUpdateTime"] = stamp
    elif update_time and (cur.get("reason") != reason or cur.get("message") != message):
        cur["lastUpdateTime"] = stamp
    cur.update(status=value, reason=reason, message=message)


def pod_ready(pod: dict) -> bool:
    c = condition(pod, "Ready")
    return bool(c and c.get("status") == "True")


def pod_available(pod: dict, min_ready: float, now: float) -> bool:
    c = condition(pod, "Ready")
    if not c or c.get("status") != "True":
        return False
    if not min_ready:
        return True
    since = parse_time(c.get("lastTransitionTime")) or now
    return since + min_ready <= now


def active(pods: list[dict]) -> list[dict]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]


def owner_ref(owner: dict) -> dict:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def controller_of(obj: dict, kind: str) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == kind:
            return ref["name"]
    return None


def resolve(value: int | str | None, total: int, *, round_up: bool, default: str) -> int:
    value = default if value is None else value
    if isinstance(value, str) and value.endswith("%"):
        raw = total * int(value[:-1]) / 100
        return math.ceil(raw) if round_up else math.floor(raw)
    return int(value)


def new_pod(template: dict, owner: dict, name: str | None = None, *, labels: dict[str, str] | None = None) -> dict:
    """A pod from ``template`` owned by ``owner``, named ``name`` (a StatefulSet's) or, as
    ReplicaSet, DaemonSet and Job pods are, generated from ``generateName: <owner>-``."""
    meta = copy.deepcopy(template.get("metadata") or {})
    if name is None:
        meta["generateName"] = f"{owner['metadata']['name']}-"
        name = f"{owner['metadata']['name']}-{uuid.uuid4().hex[:5]}"
    meta["name"] = name
    meta["namespace"] = owner["metadata"]["namespace"]
    meta["labels"] = {**(meta.get("labels") or {}), **(labels or {})}
    meta["ownerReferences"] = [owner_ref(owner)]
    return {"metadata": meta, "spec": copy.deepcopy(template.get("spec") or {})}


def default_pod_spec(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    for c in spec.get("containers") or []:
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        tag = c.get("image", "").rsplit("/", 1)[-1]
        c.setdefault("imagePullPolicy", "Always" if ":" not in tag or tag.endswith(":latest") else "IfNotPresent")


# Status fields the API serializes with ``omitempty``: a real server leaves them out when zero.
OMITEMPTY = {
    "ReplicaSet": ("fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration"),
    "Deployment": ("observedGeneration", "replicas", "updatedReplicas", "readyReplicas", "availableReplicas",
                   "unavailableReplicas"),
    "StatefulSet": ("observedGeneration", "readyReplicas", "currentReplicas", "updatedReplicas", "currentRevision",
                    "updateRevision"),
    "DaemonSet": ("observedGeneration", "updatedNumberScheduled", "numberAvailable", "numberUnavailable"),
}


def omit_empty(kind: str, status: dict) -> dict:
    return {k: v for k, v in status.items() if v or k not in OMITEMPTY[kind]}


def default_workload(kind: str):
    def fill(obj: dict) -> None:
        spec = obj.setdefault("spec", {})
        if kind != "DaemonSet":
            spec.setdefault("replicas", 1)
        if kind != "ReplicaSet":  # a ReplicaSet has no history
            spec.setdefault("revisionHistoryLimit", 10)
        if kind == "Deployment":
            spec.setdefault("progressDeadlineSeconds", 600)
            strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
            if strategy.get("type", "RollingUpdate") == "RollingUpdate":
                strategy["type"] = "RollingUpdate"
                ru = strategy.setdefault("rollingUpdate", {})
                ru.setdefault("maxSurge", "25%")
                ru.setdefault("maxUnavailable", "25%")
        elif kind == "StatefulSet":
            spec.setdefault("podManagementPolicy", "OrderedReady")
            us = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
            if us.get("type", "RollingUpdate") == "RollingUpdate":
                us["type"] = "RollingUpdate"
                us.setdefault("rollingUpdate", {}).setdefault("partition", 0)
        elif kind == "DaemonSet":
            us = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
            if us.get("type", "RollingUpdate") == "RollingUpdate":
                us["type"] = "RollingUpdate"
                ru = us.setdefault("rollingUpdate", {})
                ru.setdefault("maxUnavailable", 1)
                ru.setdefault("maxSurge", 0)
        template = spec.setdefault("template", {})
        default_pod_spec(template.setdefault("spec", {}))
    return fill


# ---------------------------------------------------------------------------------------------


class ReplicaSetController(Controller):
    name = "replicaset-controller"

    def setup(self) -> None:
        self.cluster.on("replicasets", lambda ch: self.enqueue((ch.obj["metadata"]["namespace"], ch.obj["metadata"]["name"])))
        self.cluster.on("pods", self._pod_changed)
        self.cluster.store.default("replicasets", default_workload("ReplicaSet"))

    def _pod_changed(self, ch: Change) -> None:
        owner = controller_of(ch.obj, "ReplicaSet")
        if owner:
            self.enqueue((ch.obj["metadata"]["namespace"], owner))

    def reconcile(self, key: tuple[str, str]) -> None:
        ns, name = key
        store, now = self.cluster.store, self.cluster.now()
        rs = store.find("replicasets", ns, name)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return
        want = rs["spec"].get("replicas", 1)
        pods = active(store.owned_by("pods", rs))
        template = rs["spec"]["template"]
        if len(pods) < want:
            for _ in range(want - len(pods)):
                pod = new_pod(template, rs)
                created = store.create("pods", pod, ns)
                self.cluster.record_event(rs, "Normal", "SuccessfulCreate",
                                          f"Created pod: {created['metadata']['name']}", component=self.name)
                pods.append(created)
        elif len(pods) > want:
            def rank(p: dict) -> tuple:
                return (bool(p["spec"].get("nodeName")), p.get("status", {}).get("phase") == "Running",
                        pod_ready(p), -(parse_time(p["metadata"].get("creationTimestamp")) or 0))
            for pod in sorted(pods, key=rank)[: len(pods) - want]:
                store.delete("pods", ns, pod["metadata"]["name"])
                self.cluster.record_event(rs, "Normal", "SuccessfulDelete",
                                          f"Deleted pod: {pod['metadata']['name']}", component=self.name)
            pods = active(store.owned_by("pods", rs))
        min_ready = rs["spec"].get("minReadySeconds", 0)
        ready = [p for p in pods if pod_ready(p)]
        available = [p for p in pods if pod_available(p, min_ready, now)]
        if len(available) < len(ready):
            self.enqueue(key, min_ready / 2 or 0.05)

        def write(obj: dict) -> None:
            obj["status"] = omit_empty("ReplicaSet", {
                **{k: v for k, v in (obj.get("status") or {}).items() if k == "conditions"},
                "replicas": len(pods), "fullyLabeledReplicas": len(pods), "readyReplicas": len(ready),
                "availableReplicas": len(available), "observedGeneration": obj["metadata"].get("generation", 1),
            })
        store.mutate("replicasets", ns, name, write, subresource="status")


class DeploymentController(Controller):
    name = "deployment-controller"

    def setup(self) -> None:
        self.cluster.on("deployments", lambda ch: self.enqueue((ch.obj["metadata"]["namespace"], ch.obj["metadata"]["name"])))
        self.cluster.on("replicasets", self._rs_changed)
        self.cluster.store.default("deployments", default_workload("Deployment"))

    def _rs_changed(self, ch: Change) -> None:
        owner = controller_of(ch.obj, "Deployment")
        if owner:
            self.enqueue((ch.obj["metadata"]["namespace"], owner))

    def reconcile(self, key: tuple[str, str]) -> None:
        ns, name = key
        store, now = self.cluster.store, self.cluster.now()
        d = store.find("deployments", ns, name)
        if d is None or d["metadata"].get("deletionTimestamp"):
            return
        spec = d["spec"]
        desired = spec.get("replicas", 1)
        template = spec["template"]
        h = template_hash(template)
        rss = sorted(store.owned_by("replicasets", d),
                     key=lambda r: (int(r["metadata"].get("annotations", {}).get(REVISION, "0")),
                                    r["metadata"]["creationTimestamp"]))
        new = next((r for r in rss if r["metadata"].get("labels", {}).get("pod-template-hash") == h), None)
        old = [r for r in rss if r is not new]
        max_rev = max((int(r["metadata"].get("annotations", {}).get(REVISION, "0")) for r in rss), default=0)
        progress_reason: tuple[str, str] | None = None
        surge = unavailable = 0
        strategy = spec.get("strategy") or {}
        if strategy.get("type") == "RollingUpdate":
            ru = strategy.get("rollingUpdate") or {}
            surge = resolve(ru.get("maxSurge"), desired, round_up=True, default="25%")
            unavailable = resolve(ru.get("maxUnavailable"), desired, round_up=False, default="25%")
            if surge == 0 and unavailable == 0:
                unavailable = 1
        if new is None:
            labels = {**(template.get("metadata", {}).get("labels") or {}), "pod-template-hash": h}
            rs_template = copy.deepcopy(template)
            rs_template.setdefault("metadata", {})["labels"] = labels
            selector = copy.deepcopy(spec.get("selector") or {})
            selector.setdefault("matchLabels", {})["pod-template-hash"] = h
            new = store.create("replicasets", {
                "metadata": {"name": f"{name}-{h}", "namespace": ns, "labels": labels,
                             "annotations": {REVISION: str(max_rev + 1), "deployment.kubernetes.io/desired-replicas": str(desired),
                                             "deployment.kubernetes.io/max-replicas": str(desired + surge)},
                             "ownerReferences": [owner_ref(d)]},
                "spec": {"replicas": 0, "minReadySeconds": spec.get("minReadySeconds", 0),
                         "selector": selector, "template": rs_template},
            }, ns)
            max_rev += 1
            progress_reason = ("NewReplicaSetCreated", f'Created new replica set "{new["metadata"]["name"]}"')
        elif int(new["metadata"].get("annotations", {}).get(REVISION, "0")) < max_rev:
            max_rev += 1  # a rollback to an older template: it becomes the newest revision
            store.mutate("replicasets", ns, new["metadata"]["name"],
                         lambda r: r["metadata"].setdefault("annotations", {}).__setitem__(REVISION, str(max_rev)))
            progress_reason = ("FoundNewReplicaSet", f'Found new replica set "{new["metadata"]["name"]}"')
        new_name = new["metadata"]["name"]
        if d["metadata"].get("annotations", {}).get(REVISION) != str(max_rev):
            store.mutate("deployments", ns, name,
                         lambda o: o["metadata"].setdefault("annotations", {}).__setitem__(REVISION, str(max_rev)))

        if not spec.get("paused"):
            self._scale(d, new, old, desired, surge, unavailable, strategy.get("type", "RollingUpdate"))

        # status, from the (refreshed) replica sets
        rss = store.owned_by("replicasets", d)
        new = next(r for r in rss if r["metadata"]["name"] == new_name)
        st = lambda r, f: (r.get("status") or {}).get(f, 0)  # noqa: E731
        status = dict(d.get("status") or {})
        before = copy.deepcopy(status)
        status.update(
            observedGeneration=d["metadata"].get("generation", 1),
            replicas=sum(st(r, "replicas") for r in rss),
            updatedReplicas=st(new, "replicas"),
            readyReplicas=sum(st(r, "readyReplicas") for r in rss),
            availableReplicas=sum(st(r, "availableReplicas") for r in rss),
        )
        # calculateStatus: every ReplicaSet's spec.replicas less the available ones
        total = sum((r.get("spec") or {}).get("replicas", 0) for r in rss)
        status["unavailableReplicas"] = max(total - status["availableReplicas"], 0)
        status["conditions"] = copy.deepcopy(status.get("conditions") or [])
        if status["availableReplicas"] >= desired - unavailable:
            set_condition(status, "Available", "True", "MinimumReplicasAvailable",
                          "Deployment has minimum availability.", now, update_time=True)
        else:
            set_condition(status, "Available", "False", "MinimumReplicasUnavailable",
                          "Deployment does not have minimum availability.", now, update_time=True)
        complete = (status["updatedReplicas"] == desired and status["replicas"] == desired
                    and status["availableReplicas"] == desired)
        progressed = (status["updatedReplicas"] > before.get("updatedReplicas", 0)
                      or status["readyReplicas"] > before.get("readyReplicas", 0)
                      or status["availableReplicas"] > before.get("availableReplicas", 0)
                      or status["replicas"] < before.get("replicas", 0)
                      or before.get("observedGeneration") != status["observedGeneration"])
        deadline = spec.get("progressDeadlineSeconds")
        cur = next((c for c in status["conditions"] if c["type"] == "Progressing"), None)
        if complete:
            set_condition(status, "Progressing", "True", "NewReplicaSetAvailable",
                          f'ReplicaSet "{new_name}" has successfully progressed.', now, update_time=True)
        elif progress_reason:
            set_condition(status, "Progressing", "True", *progress_reason, now, update_time=True)
            cur = next(c for c in status["conditions"] if c["type"] == "Progressing")
            cur["lastUpdateTime"] = timestamp(now)
        elif progressed or cur is None:
            set_condition(status, "Progressing", "True", "ReplicaSetUpdated",
                          f'ReplicaSet "{new_name}" is progressing.', now, update_time=True)
            cur = next(c for c in status["conditions"] if c["type"] == "Progressing")
            cur["lastUpdateTime"] = timestamp(now)
        elif deadline is not None and cur.get("reason") != "ProgressDeadlineExceeded":
            since = parse_time(cur.get("lastUpdateTime")) or now
            if since + deadline <= now:
                set_condition(status, "Progressing", "False", "ProgressDeadlineExceeded",
                              f'ReplicaSet "{new_name}" has timed out progressing.', now, update_time=True)
                self.cluster.record_event(d, "Warning", "ProgressDeadlineExceeded",
                                          f'ReplicaSet "{new_name}" has timed out progressing.', component=self.name)
            else:
                self.enqueue(key, since + deadline - now + 0.01)
        if not complete and deadline is not None:
            cur = next(c for c in status["conditions"] if c["type"] == "Progressing")
            if cur.get("reason") != "ProgressDeadlineExceeded":
                since = parse_time(cur.get("lastUpdateTime")) or now
                self.enqueue(key, since + deadline - now + 0.01)
        status["conditions"].sort(key=lambda c: {"Available": 0, "Progressing": 1}.get(c["type"], 2))
        status = omit_empty("Deployment", status)
        if status != before:
            store.mutate("deployments", ns, name, lambda o: o.__setitem__("status", status), subresource="status")

    def _scale(self, d: dict, new: dict, old: list[dict], desired: int, surge: int, unavailable: int,
               strategy: str) -> None:
        store, ns = self.cluster.store, d["metadata"]["namespace"]
        spec_n = lambda r: r["spec"].get("replicas", 0)  # noqa: E731
        avail = lambda r: (r.get("status") or {}).get("availableReplicas", 0)  # noqa: E731
        changes: dict[str, int] = {}
        if strategy == "Recreate":
            for r in old:
                if spec_n(r):
                    changes[r["metadata"]["name"]] = 0
            old_pods = [p for r in old for p in store.owned_by("pods", r)]
            if not old_pods and not changes and spec_n(new) != desired:
                changes[new["metadata"]["name"]] = desired
        else:
            total = spec_n(new) + sum(spec_n(r) for r in old)
            new_n = spec_n(new)
            if new_n < desired:
                up = min(desired + surge - total, desired - new_n)
                if up > 0:
                    new_n += up
            elif new_n > desired:
                new_n = desired
            if new_n != spec_n(new):
                changes[new["metadata"]["name"]] = new_n
            all_count = new_n + sum(spec_n(r) for r in old)
            min_available = desired - unavailable
            new_unavailable = new_n - avail(new)
            budget = all_count - min_available - new_unavailable
            olds = {r["metadata"]["name"]: spec_n(r) for r in old}
            if budget > 0:  # first the old replicas that are not available anyway
                for r in sorted(old, key=lambda r: r["metadata"]["creationTimestamp"]):
                    n = olds[r["metadata"]["name"]]
                    cut = min(budget, n - avail(r))
                    if cut > 0:
                        olds[r["metadata"]["name"]] = n - cut
                        budget -= cut
            total_available = avail(new) + sum(avail(r) for r in old)
            can = total_available - min_available
            for r in sorted(old, key=lambda r: r["metadata"]["creationTimestamp"]):
                n = olds[r["metadata"]["name"]]
                cut = min(n, max(can, 0))
                if cut > 0:
                    olds[r["metadata"]["name"]] = n - cut
                    can -= cut
            for r in old:
                if olds[r["metadata"]["name"]] != spec_n(r):
                    changes[r["metadata"]["name"]] = olds[r["metadata"]["name"]]
        for rs_name, n in changes.items():
            rs = store.find("replicasets", ns, rs_name)
            before = spec_n(rs)
            store.mutate("replicasets", ns, rs_name, lambda r, n=n: r["spec"].__setitem__("replicas", n))
            verb = "up" if n > before else "down"
            self.cluster.record_event(d, "Normal", "ScalingReplicaSet",
                                      f"Scaled {verb} replica set {rs_name} from {before} to {n}", component=self.name)


class StatefulSetController(Controller):
    name = "statefulset-controller"

    def setup(self) -> None:
        self.cluster.on("statefulsets", lambda ch: self.enqueue((ch.obj["metadata"]["namespace"], ch.obj["metadata"]["name"])))
        self.cluster.on("pods", self._pod_changed)
        self.cluster.store.default("statefulsets", default_workload("StatefulSet"))

    def _pod_changed(self, ch: Change) -> None:
        owner = controller_of(ch.obj, "StatefulSet")
        if owner:
            self.enqueue((ch.obj["metadata"]["namespace"], owner))

    def reconcile(self, key: tuple[str, str]) -> None:
        ns, name = key
        store, now = self.cluster.store, self.cluster.now()
        sts = store.find("statefulsets", ns, name)
        if sts is None or sts["metadata"].get("deletionTimestamp"):
            return
        spec = sts["spec"]
        want = spec.get("replicas", 1)
        update_rev = f"{name}-{template_hash(spec['template'])}"
        status = dict(sts.get("status") or {})
        current_rev = status.get("currentRevision") or update_rev
        partition = ((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition", 0)
        rolling = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"
        ordered = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        min_ready = spec.get("minReadySeconds", 0)
        if store.find("controllerrevisions", ns, update_rev) is None:
            # history.NewControllerRevision: the selector's labels plus the bare hash; revisions
            # are numbered 1, 2, ... per new template (not the StatefulSet's generation)
            top = max((cr.get("revision") or 0 for cr in store.owned_by("controllerrevisions", sts)), default=0)
            labels = {**((spec.get("selector") or {}).get("matchLabels") or {}),
                      "controller.kubernetes.io/hash": update_rev.removeprefix(f"{name}-")}
            store.create("controllerrevisions", {
                "metadata": {"name": update_rev, "namespace": ns, "ownerReferences": [owner_ref(sts)],
                             "labels": labels},
                "data": {"spec": {"template": spec["template"]}}, "revision": top + 1,
            }, ns)
        pods = {p["metadata"]["name"]: p for p in store.owned_by("pods", sts)}
        rev_of = lambda p: p["metadata"].get("labels", {}).get("controller-revision-hash")  # noqa: E731
        busy = False
        for i in range(want):
            pname = f"{name}-{i}"
            pod = pods.get(pname)
            if pod is None:
                rev = update_rev if i >= partition or current_rev == update_rev else current_rev
                cr = store.find("controllerrevisions", ns, rev)
                template = cr["data"]["spec"]["template"] if cr else spec["template"]
                labels = {"controller-revision-hash": rev, "statefulset.kubernetes.io/pod-name": pname,
                          "apps.kubernetes.io/pod-index": str(i)}
                p = new_pod(template, sts, pname, labels=labels)
                p["spec"]["hostname"] = pname
                store.create("pods", p, ns)
                self.cluster.record_event(sts, "Normal", "SuccessfulCreate",
                                          f"create Pod {pname} in StatefulSet {name} successful", component=self.name)
                busy = True
                if ordered:
                    break
            elif ordered and (pod["metadata"].get("deletionTimestamp") or not pod_ready(pod)):
                busy = True
                break
        for pname, pod in sorted(pods.items(), key=lambda kv: -int(kv[0].rsplit("-", 1)[1])):
            if int(pname.rsplit("-", 1)[1]) >= want and not pod["metadata"].get("deletionTimestamp"):
                store.delete("pods", ns, pname)
                busy = True
                if ordered:
                    break
        if rolling and not busy:
            for i in reversed(range(partition, want)):
                pod = pods.get(f"{name}-{i}")
                if pod is not None and rev_of(pod) != update_rev and not pod["metadata"].get("deletionTimestamp"):
                    store.delete("pods", ns, pod["metadata"]["name"])
                    self.cluster.record_event(sts, "Normal", "SuccessfulDelete",
                                              f"delete Pod {pod['metadata']['name']} in StatefulSet {name} successful",
                                              component=self.name)
                    break
        pods = {p["metadata"]["name"]: p for p in active(store.owned_by("pods", sts))}
        ready = [p for p in pods.values() if pod_ready(p)]
        available = [p for p in pods.values() if pod_available(p, min_ready, now)]
        if len(available) < len(ready):
            self.enqueue(key, 0.05)
        updated = [p for p in pods.values() if rev_of(p) == update_rev]
        if len(updated) == want and len(ready) == want and len(pods) == want:
            current_rev = update_rev
        current = [p for p in pods.values() if rev_of(p) == current_rev]

        def write(o: dict) -> None:
            o["status"] = omit_empty("StatefulSet", {
                "observedGeneration": o["metadata"].get("generation", 1), "replicas": len(pods),
                "readyReplicas": len(ready), "availableReplicas": len(available),
                "currentReplicas": len(current), "updatedReplicas": len(updated),
                "currentRevision": current_rev, "updateRevision": update_rev, "collisionCount": 0,
            })
        store.mutate("statefulsets", ns, name, write, subresource="status")


class DaemonSetController(Controller):
    name = "daemonset-controller"

    def setup(self) -> None:
        self.cluster.on("daemonsets", lambda ch: self.enqueue((ch.obj["metadata"]["namespace"], ch.obj["metadata"]["name"])))
        self.cluster.on("pods", self._pod_changed)
        self.cluster.on("nodes", lambda ch: [self.enqueue((d["metadata"]["namespace"], d["metadata"]["name"]))
                                             for d in self.cluster.store.list("daemonsets")])
        self.cluster.store.default("daemonsets", default_workload("DaemonSet"))
        self.cluster.store.strategy("daemonsets", _template_generation)

    def _pod_changed(self, ch: Change) -> None:
        owner = controller_of(ch.obj, "DaemonSet")
        if owner:
            self.enqueue((ch.obj["metadata"]["namespace"], owner))

    def reconcile(self, key: tuple[str, str]) -> None:
        ns, name = key
        store, now = self.cluster.store, self.cluster.now()
        ds = store.find("daemonsets", ns, name)
        if ds is None or ds["metadata"].get("deletionTimestamp"):
            return
        spec = ds["spec"]
        h = template_hash(spec["template"])
        gen = ds["metadata"].get("generation", 1)
        template_gen = (ds["metadata"].get("annotations") or {}).get(TEMPLATE_GENERATION, "1")
        _ensure_revision(store, ds, h)
        nodes = [n["metadata"]["name"] for n in store.list("nodes") if not n.get("spec", {}).get("unschedulable")]
        min_ready = spec.get("minReadySeconds", 0)
        max_unavailable = resolve(((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("maxUnavailable"),
                                  len(nodes), round_up=False, default="1") or 1
        all_pods = store.owned_by("pods", ds)
        by_node: dict[str, list[dict]] = {}
        for p in all_pods:
            by_node.setdefault(_target_node(p) or "", []).append(p)
        for node in nodes:
            if not active(by_node.get(node, [])) and not by_node.get(node):
                labels = {"controller-revision-hash": h, "pod-template-generation": template_gen}
                pod = new_pod(spec["template"], ds, labels=labels)
                pod["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}
                store.create("pods", pod, ns)
                self.cluster.record_event(ds, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}",
                                          component=self.name)
        if (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate":
            unavailable = sum(1 for n in nodes if not any(pod_available(p, min_ready, now) for p in active(by_node.get(n, []))))
            old = [p for p in active(all_pods) if p["metadata"].get("labels", {}).get("controller-revision-hash") != h]
            old.sort(key=lambda p: pod_available(p, min_ready, now))  # unavailable old pods first
            for p in old:
                if not pod_available(p, min_ready, now):
                    store.delete("pods", ns, p["metadata"]["name"])
                elif unavailable < max_unavailable:
                    store.delete("pods", ns, p["metadata"]["name"])
                    unavailable += 1
        pods = active(store.owned_by("pods", ds))
        scheduled = {_target_node(p) for p in pods}
        ready = [p for p in pods if pod_ready(p)]
        available = [p for p in pods if pod_available(p, min_ready, now)]
        if len(available) < len(ready):
            self.enqueue(key, 0.05)
        updated = [p for p in pods if p["metadata"].get("labels", {}).get("controller-revision-hash") == h]

        def write(o: dict) -> None:
            o["status"] = omit_empty("DaemonSet", {
                "observedGeneration": gen, "desiredNumberScheduled": len(nodes),
                "currentNumberScheduled": len(scheduled & set(nodes)), "numberMisscheduled": 0,
                "numberReady": len(ready), "numberAvailable": len(available),
                "numberUnavailable": max(len(nodes) - len(available), 0),
                "updatedNumberScheduled": len({_target_node(p) for p in updated}),
            })
        store.mutate("daemonsets", ns, name, write, subresource="status")


TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"


def _template_generation(new: dict, old: dict | None) -> None:
    """kube-apiserver's DaemonSet strategy: the template generation starts at 1 and moves only when
    spec.template changes (metadata.generation moves on every spec change)."""
    ann = new["metadata"].setdefault("annotations", {})
    if old is None:
        ann.setdefault(TEMPLATE_GENERATION, "1")
        return
    before = int((old["metadata"].get("annotations") or {}).get(TEMPLATE_GENERATION, "1"))
    changed = (new.get("spec") or {}).get("template") != (old.get("spec") or {}).get("template")
    ann[TEMPLATE_GENERATION] = str(before + 1 if changed else before)


def _ensure_revision(store: Store, ds: dict, h: str) -> None:
    """The DaemonSet controller's history (pkg/controller/daemon/update.go): one ControllerRevision
    per template, named ``<ds>-<hash>``, labelled with the selector labels and the hash; the current
    one gets the highest revision number (a rollback re-numbers the matching old one)."""
    ns, name = ds["metadata"]["namespace"], ds["metadata"]["name"]
    mine = store.owned_by("controllerrevisions", ds)
    top = max((cr.get("revision") or 0 for cr in mine), default=0)
    current = next((cr for cr in mine if cr["metadata"]["name"] == f"{name}-{h}"), None)
    if current is None:
        labels = {**((ds["spec"].get("selector") or {}).get("matchLabels") or {}), "controller-revision-hash": h}
        annotations = {TEMPLATE_GENERATION: (ds["metadata"].get("annotations") or {}).get(TEMPLATE_GENERATION, "1")}
        store.create("controllerrevisions", {
            "metadata": {"name": f"{name}-{h}", "namespace": ns, "ownerReferences": [owner_ref(ds)], "labels": labels,
                         "annotations": annotations},
            "data": {"spec": {"template": {**copy.deepcopy(ds["spec"]["template"]), "$patch": "replace"}}},
            "revision": top + 1}, ns)
    elif (current.get("revision") or 0) < top:
        store.mutate("controllerrevisions", ns, current["metadata"]["name"],
                     lambda o: o.__setitem__("revision", top + 1))


def _target_node(pod: dict) -> str | None:
    if pod.get("spec", {}).get("nodeName"):
        return pod["spec"]["nodeName"]
    try:
        terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        for t in terms:
            for f in t.get("matchFields") or []:
                if f["key"] == "metadata.name" and f["operator"] == "In":
                    return f["values"][0]
    except (KeyError, TypeError):
        pass
    return None
