"""Rollout verdict latency: Forge's watcher vs `kubectl rollout status` vs a 3 s polling loop.

    .venv/bin/python benchmarks/rollout.py [--reps 3] [--progress-deadline 3]

Runs the Kubernetes stand-in (tests/kube_standin) with its kubelet scripted per scenario. For
every failure scenario the three watchers watch the same rollout, started right after the
image change (as after a Flux reconcile):

* Forge: ``forgegen.runtime.rollout.watch_rollout`` (list + watch, verdict with logs/events);
* kubectl 1.32: ``kubectl rollout status deployment/<name>`` (fails only at the Deployment's
  progress deadline; 600 s by default, scaled down here to ``--progress-deadline``);
* the replaced tool's method: list the pods every 3 s and fail on its list of waiting reasons
  or 3+ restarts; success when the Deployment's counts are complete.

Detection latency is measured from the pod state change in the stand-in (recorded on its
event loop, same monotonic clock) to each watcher's verdict: for immediate failures the first
status write showing the failure; for unschedulable / failing readiness the moment the service's
grace window ends (state start + grace). Success latency is from the last new pod turning
Ready to the verdict. A watcher that never reports the failure is counted as "missed" and its
latency is taken at the moment it gave up (its deadline: progress deadline + 5 s) - a lower
bound.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from forgegen.plan import RolloutPlan, WorkloadPlan  # noqa: E402
from forgegen.runtime.kube import api_client  # noqa: E402
from forgegen.runtime.rollout import watch_rollout  # noqa: E402
from tests.fixtures.kube import FAST, Kube, write_kubeconfig  # noqa: E402
from tests.kube_standin import (  # noqa: E402
    KubeStandin,
    Settings,
    crash,
    create_container_error,
    image_pull_error,
    invalid_image_name,
    missing_secret,
    oom_killed,
    readiness_failing,
    run_container_error,
    slow_start,
    unschedulable,
)

GRACE = 0.5
SCENARIOS = {
    "crash-loop": crash(after=0.1, exit_code=1),
    "err-image-pull": image_pull_error(),
    "invalid-image-name": invalid_image_name(),
    "missing-secret": missing_secret("db"),
    "create-container-error": create_container_error(),
    "run-container-error": run_container_error(),
    "oom-killed": oom_killed(after=0.1),
    "unschedulable": unschedulable(),
    "readiness-failing": readiness_failing(),
}
POLL_FAIL = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
             "InvalidImageName", "CreateContainerError", "RunContainerError")
FATAL = POLL_FAIL + ("ErrImageNeverPull",)


class Recorder:
    """On the stand-in's loop: when each new pod first showed a failure, and turned Ready."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.failed_at: float | None = None
        self.ready_at: dict[str, float] = {}

    def __call__(self, change: Any) -> None:
        pod = change.obj
        if change.type == "DELETED" or pod["spec"]["containers"][0]["image"] != self.image:
            return
        now = change.at
        st = pod.get("status") or {}
        for c in st.get("conditions") or []:
            if c["type"] == "PodScheduled" and c["status"] == "False" and self.failed_at is None:
                self.failed_at = now + GRACE
            if c["type"] == "Ready" and c["status"] == "True":
                self.ready_at.setdefault(pod["metadata"]["uid"], now)
        for cs in st.get("containerStatuses") or []:
            state = cs.get("state") or {}
            waiting = (state.get("waiting") or {}).get("reason")
            if self.failed_at is None and (waiting in FATAL or waiting == "CrashLoopBackOff" or state.get("terminated")
                                           or (cs.get("lastState") or {}).get("terminated")):
                self.failed_at = now
            if self.failed_at is None and state.get("running") and not cs.get("ready") and "unready" in self.image:
                self.failed_at = now + GRACE


def poll_every_3s(api: Any, name: str, stop: threading.Event, deadline: float) -> tuple[str, float]:
    """The replaced tool's method: list pods every 3 s, look for known bad states."""
    from kubernetes import client

    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    end = time.monotonic() + deadline
    while not stop.is_set() and time.monotonic() < end:
        d = apps.read_namespaced_deployment(name, "default")
        for p in core.list_namespaced_pod("default", label_selector=f"app={name}").items:
            for cs in p.status.container_statuses or []:
                waiting = cs.state.waiting.reason if cs.state and cs.state.waiting else None
                if waiting in POLL_FAIL or (cs.restart_count or 0) >= 3:
                    return "failed", time.monotonic()
        st = d.status
        if ((st.observed_generation or 0) >= d.metadata.generation and st.updated_replicas == d.spec.replicas
                and st.available_replicas == d.spec.replicas and st.replicas == d.spec.replicas):
            return "success", time.monotonic()
        stop.wait(3.0)
    return "timeout", time.monotonic()


def one_run(kube: Kube, api: Any, name: str, image: str, pds: int) -> dict[str, Any]:
    kube.deployment(name, "app:1", replicas=2, progress_deadline=pds)
    rec = Recorder(image)
    kube.standin.call(lambda: kube.standin.cluster.on("pods", rec))
    results: dict[str, tuple[str, float]] = {}
    stop = threading.Event()
    policy = RolloutPlan(deadline=pds + 5.0, restarts_tolerated=0, readiness_grace=GRACE, scheduling_grace=GRACE,
                         rollback_on_failure=False)

    def forge() -> None:
        r = watch_rollout(api, namespace="default", workload=WorkloadPlan(kind="Deployment", name=name, container=name),
                          expected_image=image, policy=policy)
        results["forge"] = (r.outcome, time.monotonic())

    def poller() -> None:
        results["poll-3s"] = poll_every_3s(api, name, stop, pds + 5.0)

    kube.set_image("Deployment", name, image)
    env = dict(os.environ, HOME=str(kube.home), KUBECONFIG=str(kube.kubeconfig))
    kubectl = subprocess.Popen(["kubectl", "rollout", "status", f"deployment/{name}", f"--timeout={pds + 5}s"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    threads = [threading.Thread(target=forge), threading.Thread(target=poller)]
    for t in threads:
        t.start()
    code = kubectl.wait(pds + 20)
    results["kubectl"] = ("success" if code == 0 else "failed", time.monotonic())
    for t in threads:
        t.join(pds + 20)
    last_ready = max(rec.ready_at.values()) if len(rec.ready_at) >= 2 else None
    kube.standin.delete("deployments", "default", name)
    return {"failed_at": rec.failed_at, "last_ready": last_ready, "results": results}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--progress-deadline", type=int, default=3,
                    help="the Deployments' progressDeadlineSeconds (Kubernetes default: 600)")
    args = ap.parse_args()
    tools = ("forge", "kubectl", "poll-3s")
    standin = KubeStandin(settings=Settings(**FAST)).start()
    tmp = Path(tempfile.mkdtemp(prefix="forge-bench-"))
    kube = Kube(standin, write_kubeconfig(tmp / "kubeconfig", standin.url), tmp)
    api = api_client(str(kube.kubeconfig))
    from kubernetes.client import AppsV1Api, CoreV1Api  # noqa: F401 - warm the lazy imports

    fail_lat: dict[str, list[float]] = {t: [] for t in tools}
    missed: dict[str, int] = {t: 0 for t in tools}
    rows = []
    n = 0
    try:
        for scenario, script in SCENARIOS.items():
            per: dict[str, list[float]] = {t: [] for t in tools}
            for _ in range(args.reps):
                n += 1
                image = f"app:{scenario}-{n}" + ("-unready" if scenario == "readiness-failing" else "")
                kube.script(image, script)
                run = one_run(kube, api, f"svc{n}", image, args.progress_deadline)
                ref = run["failed_at"]
                for t in tools:
                    outcome, at = run["results"].get(t, ("timeout", float("nan")))
                    if outcome != "failed":
                        missed[t] += 1
                    if ref is not None:
                        lat = at - ref
                        per[t].append(lat)
                        fail_lat[t].append(lat)
            rows.append((scenario, {t: statistics.median(v) if v else float("nan") for t, v in per.items()}))
        succ: dict[str, list[float]] = {t: [] for t in tools}
        for _ in range(args.reps * 3):
            n += 1
            image = f"app:ok-{n}"
            kube.script(image, slow_start(0.3))
            run = one_run(kube, api, f"svc{n}", image, args.progress_deadline)
            for t in tools:
                outcome, at = run["results"].get(t, ("timeout", float("nan")))
                if outcome == "success" and run["last_ready"] is not None:
                    succ[t].append(at - run["last_ready"])
    finally:
        standin.stop()

    print(f"rollout verdict latency ({args.reps} runs per scenario; progressDeadlineSeconds={args.progress_deadline}, "
          f"grace windows {GRACE}s; stand-in back-off base {FAST['backoff_base']}s)")
    print()
    print(f"{'failure scenario':<24}" + "".join(f"{t + ' p50 (s)':>16}" for t in tools))
    for scenario, med in rows:
        print(f"{scenario:<24}" + "".join(f"{med[t]:>16.3f}" for t in tools))
    print()
    print(f"{'all failures':<24}" + "".join(f"{t:>16}" for t in tools))
    for label, p in (("p50 (s)", 0.5), ("p95 (s)", 0.95)):
        print(f"{label:<24}" + "".join(f"{pct(fail_lat[t], p):>16.3f}" for t in tools))
    print(f"{'missed failures':<24}" + "".join(f"{missed[t]:>16d}" for t in tools))
    print(f"{'success p50 (s)':<24}" + "".join(f"{pct(succ[t], 0.5):>16.3f}" for t in tools))
    print(f"{'success p95 (s)':<24}" + "".join(f"{pct(succ[t], 0.95):>16.3f}" for t in tools))
    print()
    f50, f95 = pct(fail_lat["forge"], 0.5), pct(fail_lat["forge"], 0.95)
    for t in ("kubectl", "poll-3s"):
        print(f"ratio {t}/forge: failure p50 x{pct(fail_lat[t], 0.5) / f50:.0f}, p95 x{pct(fail_lat[t], 0.95) / f95:.0f}; "
              f"success p50 x{pct(succ[t], 0.5) / pct(succ['forge'], 0.5):.1f}")
    print(f"target: failure verdict within 2 s (aim 0.5 s): forge p95 {f95:.3f} s -> "
          f"{'met' if f95 < 2 else 'NOT met'}")
    print("note: kubectl's figures scale with progressDeadlineSeconds (600 s by default); "
          "the 3 s poller never sees unschedulable pods, failing readiness or a single crash.")


if __name__ == "__main__":
    main()
