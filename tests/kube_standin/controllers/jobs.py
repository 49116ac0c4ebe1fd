"""The Job controller (``batch/v1``), after kube-controller-manager's, for one-completion Jobs.

Enough for migrations to look real from outside: defaulting (``backoffLimit`` 6, ``completions``
and ``parallelism`` 1, a ``controller-uid`` selector and pod labels, ``restartPolicy`` kept as
given); one pod at a time named ``<job>-<5 chars>`` labelled ``controller-uid``,
``batch.kubernetes.io/controller-uid``, ``job-name`` and ``batch.kubernetes.io/job-name`` and owned
by the Job; a new pod after a failed one while ``failed <= backoffLimit``; then the terminal
conditions in the real order — ``SuccessCriteriaMet`` + ``Complete`` (with ``completionTime``), or
``FailureTarget`` + ``Failed`` with reason ``BackoffLimitExceeded`` ("Job has reached the specified
backoff limit") or ``DeadlineExceeded`` (``activeDeadlineSeconds``, active pods deleted) — and the
counts ``active`` / ``ready`` / ``succeeded`` / ``failed``. The pods themselves run under the
scripted kubelet (``controllers.kubelet``: a run-to-completion pod ends ``Succeeded`` or ``Failed``).
"""

from __future__ import annotations

from ..cluster import Controller
from ..store import ApiError, Change, timestamp
from .workloads import controller_of, new_pod, parse_time, pod_ready, set_condition


def default_job(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completions", 1)
    spec.setdefault("parallelism", 1)
    spec.setdefault("suspend", False)
    spec.setdefault("completionMode", "NonIndexed")
    uid = obj["metadata"].get("uid", "")
    labels = {"batch.kubernetes.io/controller-uid": uid, "controller-uid": uid}
    if not spec.get("manualSelector"):
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    template = spec.setdefault("template", {})
    meta = template.setdefault("metadata", {})
    name = obj["metadata"].get("name", "")
    meta["labels"] = {**(meta.get("labels") or {}), **labels,
                      "batch.kubernetes.io/job-name": name, "job-name": name}
    pod_spec = template.setdefault("spec", {})
    pod_spec.setdefault("restartPolicy", "Never")
    pod_spec.setdefault("terminationGracePeriodSeconds", 30)


class JobController(Controller):
    name = "job-controller"

    def setup(self) -> None:
        self.cluster.on("jobs", lambda ch: ch.type != "DELETED" and self.enqueue(
            (ch.obj["metadata"]["namespace"], ch.obj["metadata"]["name"])))
        self.cluster.on("pods", self._pod_changed)
        self.cluster.store.default("jobs", default_job)

    def _pod_changed(self, ch: Change) -> None:
        owner = controller_of(ch.obj, "Job")
        if owner:
            self.enqueue((ch.obj["metadata"]["namespace"], owner))

    def reconcile(self, key: tuple[str, str]) -> None:
        ns, name = key
        store, now = self.cluster.store, self.cluster.now()
        job = store.find("jobs", ns, name)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return
        status = job.get("status") or {}
        if any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in status.get("conditions") or []):
            return
        spec = job["spec"]
        pods = store.owned_by("pods", job)
        phase = {p["metadata"]["name"]: (p.get("status") or {}).get("phase") for p in pods}
        succeeded = [p for p in pods if phase[p["metadata"]["name"]] == "Succeeded"]
        failed = [p for p in pods if phase[p["metadata"]["name"]] == "Failed"]
        active = [p for p in pods if p not in succeeded and p not in failed and not p["metadata"].get("deletionTimestamp")]
        started = parse_time(status.get("startTime")) or now
        deadline = spec.get("activeDeadlineSeconds")
        verdict: tuple[str, str, str] | None = None
        if len(succeeded) >= spec.get("completions", 1):
            verdict = ("Complete", "CompletionsReached", "Reached expected number of succeeded pods")
        elif len(failed) > spec.get("backoffLimit", 6):
            verdict = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif deadline is not None and started + float(deadline) <= now:
            verdict = ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
        if verdict is not None and verdict[0] == "Failed":
            for p in active:
                try:
                    store.delete("pods", ns, p["metadata"]["name"])
                except ApiError:
                    pass
            active = []
        elif verdict is None and not active:
            pod = new_pod(spec["template"], job)
            created = store.create("pods", pod, ns)
            self.cluster.record_event(job, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}",
                                      component=self.name)
            active = [created]
        if verdict is None and deadline is not None:
            self.enqueue(key, max(started + float(deadline) - now, 0.0) + 0.01)

        def write(obj: dict) -> None:
            st = obj.setdefault("status", {})
            st.setdefault("startTime", timestamp(started))
            st["active"] = len(active)
            st["ready"] = len([p for p in active if pod_ready(p)])
            st["terminating"] = 0
            st["uncountedTerminatedPods"] = {}
            for k, v in (("succeeded", len(succeeded)), ("failed", len(failed))):
                if v:
                    st[k] = v
                else:
                    st.pop(k, None)
            if verdict is not None:
                kind, reason, message = verdict
                first = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"
                set_condition(st, first, "True", reason, message, now)
                set_condition(st, kind, "True", reason, message, now)
                for c in st["conditions"]:
                    c.setdefault("lastProbeTime", timestamp(now))
                if kind == "Complete":
                    st["completionTime"] = timestamp(now)
        store.mutate("jobs", ns, name, write, subresource="status")
        if verdict is not None:
            kind, reason, message = verdict
            self.cluster.record_event(job, "Normal" if kind == "Complete" else "Warning",
                                      "Completed" if kind == "Complete" else reason,
                                      "Job completed" if kind == "Complete" else message, component=self.name)
