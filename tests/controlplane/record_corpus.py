"""``python -m tests.controlplane.record_corpus [OUT]``: record rollout-corpus cases from the real
control plane (tests/fixtures/rollout_corpus/README.md gives the format).

For each workload kind and each scenario of tests/test_rollout_scenarios.py (and a success), it
runs the scenario on a fresh namespace of a real control plane (kube-apiserver,
kube-controller-manager, kube-scheduler; pods run by the simulated kubelet), lets Forge's real
watcher reach its verdict, then lists the objects ``assess()`` consumes — the workload, its
ReplicaSets or ControllerRevisions, pods, events — and writes one case file per run into OUT
(default tests/fixtures/rollout_corpus/recorded/) with the versions it was recorded from. A
case is written only when the verdict is the one the scenario is built to produce.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import yaml

from forgegen.runtime.kube import api_client
from tests.controlplane import start_control_plane
from tests.controlplane.launch import ROOT
from tests.fixtures.realkube import RealKube, namespaced_kubeconfig, new_namespace, reset_scripts
from tests.kube_standin import slow_start
from tests.test_rollout_scenarios import KINDS, SCENARIOS, build, policy, set_image, watch

OUT = ROOT / "tests" / "fixtures" / "rollout_corpus" / "recorded"
VERDICT = {"success": "done", "failed": "failed", "timeout": "progressing"}


def _trim(obj: dict) -> dict:
    obj.get("metadata", {}).pop("managedFields", None)
    return obj


def snapshot(kube: RealKube, kind: str) -> dict:
    plural = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}[kind]
    doc: dict = {"workload": _trim(dict(kube.get(plural, "web") or {}, kind=kind, apiVersion="apps/v1"))}
    if kind == "Deployment":
        doc["replicasets"] = [_trim(dict(r, kind="ReplicaSet", apiVersion="apps/v1"))
                              for r in kube.list("replicasets", label_selector="app=web")]
    else:
        doc["controllerrevisions"] = [_trim(dict(r, kind="ControllerRevision", apiVersion="apps/v1"))
                                      for r in kube.list("controllerrevisions", label_selector="app=web")]
    doc["pods"] = [_trim(dict(p, kind="Pod", apiVersion="v1")) for p in kube.pods("web")]
    doc["events"] = [_trim(dict(e, kind="Event", apiVersion="v1")) for e in kube.events()]
    return doc


def record(plane, base: Path, kind: str, scenario: str, out: Path) -> str:
    admin_api = api_client(str(plane.kubeconfig), None)
    ns = new_namespace(admin_api, prefix="rec")
    reset_scripts(admin_api)
    home = base / ns
    home.mkdir(parents=True)
    kube = RealKube(None, namespaced_kubeconfig(plane.kubeconfig, home / "kubeconfig", ns), home,  # type: ignore[arg-type]
                    namespace=ns)
    build(kube, kind)
    if scenario == "success":
        kube.script("app:bad", slow_start(0.3))
        script, reasons = None, None
        pol = policy(readiness_grace=60.0)
    else:
        script, reasons = SCENARIOS[scenario]
        if script is not None:
            kube.script("app:bad", script)
        # short graces only where the grace is the point (a crash is not a readiness failure)
        pol = policy(readiness_grace=1.0 if scenario == "readiness" else 30.0,
                     scheduling_grace=1.0 if scenario == "unschedulable" else 30.0)
    set_image(kube, kind, "app:bad", memory="1Ti" if scenario == "unschedulable" else None)
    result = watch(kube, kind, image="app:bad", pol=pol)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    doc = result.to_json()
    if (scenario == "success") != (doc["outcome"] == "success") or (reasons and doc["reason"] not in reasons):
        return f"{kind}/{scenario}: not recorded (verdict {doc['outcome']} {doc.get('reason')})"
    v = plane.versions
    case = {
        "source": (f"recorded from kube-apiserver {v['kubernetes']} / kube-controller-manager {v['kubernetes']} / "
                   f"kube-scheduler {v['kubernetes']} / etcd {v['etcd']}, pods run by tests/kubelet_sim "
                   f"(the simulated kubelet), scenario \"{scenario}\" of tests/test_rollout_scenarios.py on a "
                   f"{kind}, by tests/controlplane/record_corpus.py"),
        # The objects are listed just after the verdict; where the scenario allows several reasons
        # (a crash is ContainerExited, then CrashLoopBackOff) the pod may have moved on since.
        "expected": {"verdict": VERDICT[doc["outcome"]],
                     **({"reason": doc["reason"]} if doc.get("reason") and len(reasons or ()) == 1 else {})},
        "now": now.isoformat().replace("+00:00", "Z"),
        "container": "web",
        "expected_image": "app:bad",
        "policy": {"restarts_tolerated": 0, "readiness_grace": pol.readiness_grace,
                   "scheduling_grace": pol.scheduling_grace},
        **snapshot(kube, kind),
    }
    path = out / f"{kind.lower()}-{scenario}.yaml"
    path.write_text(yaml.safe_dump(case, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return f"{kind}/{scenario}: {doc['outcome']} {doc.get('reason') or ''} -> {path.relative_to(ROOT)}"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.controlplane.record_corpus")
    parser.add_argument("out", nargs="?", default=str(OUT))
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--scenarios", default=",".join(["success", *sorted(SCENARIOS)]))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="forge-record-") as tmp:
        plane = start_control_plane(Path(tmp) / "plane", flux=False)
        try:
            for kind in args.kinds.split(","):
                for scenario in args.scenarios.split(","):
                    print(record(plane, Path(tmp), kind, scenario, out), file=sys.stderr, flush=True)
        finally:
            plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
