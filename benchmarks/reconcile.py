"""Flux reconcile: Forge's watcher vs the Flux CLI's 2 s polling loop.

    .venv/bin/python benchmarks/reconcile.py [--reps 5]

Runs the Kubernetes stand-in (tests/kube_standin) with the Flux simulation
(tests/kube_standin/controllers/flux.py: real git remote, real ``kubectl kustomize``). Each round
pushes a new image tag to the bare GitOps remote and asks Flux to apply it, two ways:

* Forge: ``forgegen.runtime.flux.reconcile`` (annotate, watch, wait for *our* commit);
* the Flux CLI's method (``flux reconcile kustomization apps --with-source``, fluxcd/flux2
  cmd/flux/reconcile.go): annotate the source, poll it every 2 s until
  ``lastHandledReconcileAt`` changes, then the same for the Kustomization, then check
  ``Ready`` — it never looks at which revision was applied.

Figures:

* verdict latency: from the simulation's final Kustomization status write that handled the
  waiter's own request (recorded on the stand-in's loop, same monotonic clock) to its verdict —
  the cost of watching vs polling;
* after the first apply: from the first time the Kustomization applied the pushed commit (Flux
  reacts to the source's new revision by itself) to the verdict — what waiting for our own
  request token costs on top (one more Flux reconcile);
* total wait: from the first annotation to the verdict;
* correctness under a raced fetch (the source first serves the previous commit once, as when
  the push lands while Flux is fetching): how often each method ends on the old commit.

Nothing here asserts; it prints figures and ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from forgegen.errors import ReconcileError  # noqa: E402
from forgegen.plan import FluxPlan  # noqa: E402
from forgegen.runtime.flux import REQUESTED_AT, reconcile, request_token  # noqa: E402
from forgegen.runtime.kube import api_client  # noqa: E402
from tests.fixtures.flux import make_remote  # noqa: E402
from tests.fixtures.kube import FAST, write_kubeconfig  # noqa: E402
from tests.kube_standin import KubeStandin, Settings  # noqa: E402
from tests.kube_standin.controllers.flux import FluxSim  # noqa: E402

NS = "flux-system"
POLL = 2.0  # the Flux CLI's pollInterval
PLAN = FluxPlan(namespace=NS, source_kind="GitRepository", source_name="gitops", kustomizations=("apps",), timeout=60)


def cli_reconcile(api: Any) -> tuple[float, str, str]:
    """``flux reconcile ks apps --with-source``: (verdict time, the revision it ended on, ks token)."""
    from kubernetes import client

    co = client.CustomObjectsApi(api)
    for group, plural, name in (("source.toolkit.fluxcd.io", "gitrepositories", "gitops"),
                                ("kustomize.toolkit.fluxcd.io", "kustomizations", "apps")):
        before = co.get_namespaced_custom_object(group, "v1", NS, plural, name).get("status", {}).get(
            "lastHandledReconcileAt")
        token = request_token()
        co.patch_namespaced_custom_object(group, "v1", NS, plural, name,
                                          {"metadata": {"annotations": {REQUESTED_AT: token}}},
                                          _content_type="application/merge-patch+json")
        while True:  # wait.PollImmediate(pollInterval, timeout, reconciliationHandled)
            obj = co.get_namespaced_custom_object(group, "v1", NS, plural, name)
            if (obj.get("status") or {}).get("lastHandledReconcileAt") != before:
                break
            time.sleep(POLL)
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    if ready["status"] == "False":
        raise RuntimeError("Kustomization reconciliation failed")
    return time.monotonic(), obj["status"].get("lastAppliedRevision", ""), token


def applied_at(standin: KubeStandin, sim: FluxSim, revision: str, token: str | None = None) -> float | None:
    """When the simulation first applied ``revision`` (with ``token``: in the reconcile that handled it)."""
    return standin.call(lambda: next((a.at for a in sim.applied if a.revision == revision and a.ready
                                      and (token is None or a.token == token)), None))


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    return (f"median {statistics.median(values) * 1000:7.1f} ms   max {max(values) * 1000:7.1f} ms   "
            f"(n={len(values)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="forge-bench-reconcile-") as tmp:
        root = Path(tmp)
        remote = make_remote(root / "remote")
        standin = KubeStandin(settings=Settings(**FAST)).start()
        sim = standin.add(FluxSim())
        try:
            kubeconfig = write_kubeconfig(root / "kubeconfig", standin.url)
            api = api_client(str(kubeconfig))
            standin.create("gitrepositories", {"metadata": {"name": "gitops", "namespace": NS},
                                               "spec": {"interval": "10m", "url": remote.url, "ref": {"branch": "main"}}})
            standin.create("kustomizations", {"metadata": {"name": "apps", "namespace": NS}, "spec": {
                "interval": "10m", "path": "./apps", "sourceRef": {"kind": "GitRepository", "name": "gitops"}}})
            head = remote.head()
            standin.wait_for(lambda c: (c.store.find("kustomizations", NS, "apps") or {}).get("status", {})
                             .get("lastAppliedRevision", "").endswith(head), timeout=15)
            reconcile(api, PLAN, commit=head, branch="main")  # warm-up (imports, connections)

            rows: dict[str, dict[str, list[float]]] = {m: {"latency": [], "first": [], "total": []}
                                                       for m in ("forge", "cli")}
            tag = 100
            for _ in range(args.reps):
                for method in ("forge", "cli"):
                    tag += 1
                    sha = remote.set_tag(f"v{tag}")
                    revision = f"main@sha1:{sha}"
                    t0 = time.monotonic()
                    if method == "forge":
                        token = reconcile(api, PLAN, commit=sha, branch="main").token
                        verdict = time.monotonic()
                    else:
                        verdict, _, token = cli_reconcile(api)
                    for key, at in (("latency", applied_at(standin, sim, revision, token)),
                                    ("first", applied_at(standin, sim, revision))):
                        if at is not None:
                            rows[method][key].append(verdict - at)
                    rows[method]["total"].append(verdict - t0)

            race = {"forge": 0, "cli": 0}
            for _ in range(args.reps):
                for method in ("forge", "cli"):
                    tag += 1
                    sha = remote.set_tag(f"v{tag}")
                    standin.call(lambda: sim.set_script(stale_fetches=1))
                    if method == "forge":
                        try:
                            ended = reconcile(api, PLAN, commit=sha, branch="main").revision or ""
                        except ReconcileError:
                            ended = ""
                    else:
                        _, ended, _ = cli_reconcile(api)
                    if not ended.endswith(sha):
                        race[method] += 1
        finally:
            standin.stop()
            sim.close()

    print("Flux reconcile: Forge (watch, waits for our commit) vs the Flux CLI (2 s poll, any handled request)")
    print(f"  rounds per method: {args.reps}; stand-in with the Flux simulation, real git + kubectl kustomize\n")
    for method, label in (("forge", "Forge"), ("cli", "Flux CLI method")):
        print(f"  {label:16} verdict after the apply it asked for: {fmt(rows[method]['latency'])}")
        print(f"  {'':16} verdict after the first apply:       {fmt(rows[method]['first'])}")
        print(f"  {'':16} total wait:                          {fmt(rows[method]['total'])}")
    f, c = rows["forge"], rows["cli"]
    if f["latency"] and c["latency"]:
        ratio = statistics.median(c["latency"]) / max(statistics.median(f["latency"]), 1e-6)
        print(f"\n  verdict latency: the CLI method is {ratio:,.0f}x slower (median)")
        print(f"  total wait:      {statistics.median(c['total']) / statistics.median(f['total']):.1f}x "
              "(the CLI's wait is dominated by its 2 s poll interval)")
    print(f"\n  raced fetch (source serves the previous commit once), {args.reps} rounds each:")
    print(f"    Forge ended on the old commit:           {race['forge']} of {args.reps}")
    print(f"    Flux CLI method ended on the old commit: {race['cli']} of {args.reps}  (fluxcd/flux2#479)")


if __name__ == "__main__":
    main()
