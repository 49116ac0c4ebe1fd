"""Benchmark: Forge's own overhead on one deploy, against a GitOps repository with 2,000 manifests
and 10,000 commits of history (DESIGN.md target: under 1 s).

Prints figures (not a test; nothing here asserts). Run:
    .venv/bin/python benchmarks/deploy.py [--rounds 5]

Each round runs the real runtime, `forge deploy --plan nix/forge/plans/svc0.json svc0:staging`,
as a new process (Python start-up and imports included), against: a real registry, the big GitOps
repository (built by benchmarks/gitops.py), the Kubernetes stand-in with the Flux simulation, and
the example flake's image (`nix build`, cached after the first round). Every round deploys a new
tag (a new RELEASE_GIT_SHA), so every round pushes tags, commits, reconciles and rolls out.

overhead = total − push (registry transfer) − reconcile (Flux) − rollout (the cluster)

CPU: user+sys seconds of the forge process and of its children. Peak RSS: the forge process's own (``resource.getrusage(RUSAGE_SELF)``) and its largest child's
(``RUSAGE_CHILDREN``: nix, git, skopeo). ``--before DIR`` runs another checkout of Forge's
Python code (e.g. ``mkdir /tmp/main && git archive main | tar -x -C /tmp/main``) in alternate rounds, so before and after
are measured side by side under the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import gitops as big  # noqa: E402
from benchmarks.trees import PYTHON_FLAGS, code_dir, variant_env  # noqa: E402
from tests.fixtures.kube import FAST, write_kubeconfig  # noqa: E402
from tests.fixtures.nixenv import NIX_CONFIG_TEXT, checkout_files, copy_tree, make_flake, tool_path  # noqa: E402
from tests.fixtures.registry import start_registry  # noqa: E402
from tests.fixtures.shop import install_flux  # noqa: E402
from tests.kube_standin import KubeStandin, Settings  # noqa: E402
from tests.kube_standin.controllers.flux import FluxSim  # noqa: E402

DEPLOY_YAML = """\
version: 1
project: shop
registry: {{host: "{host}", organization: shop, insecure: true}}
gitops: {{repo: "{repo}", path: "clusters/{{cluster}}/{{service}}"}}
flux: {{kustomizations: ["apps-{{environment}}"]}}
environments:
  - name: staging
    namespace: shop
services:
  svc0:
    image: {{package: api-image}}
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--overlays", type=int, default=1000)
    parser.add_argument("--commits", type=int, default=10000)
    parser.add_argument("--before", type=Path, help="another Forge checkout, run in alternate rounds")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the last round's main thread here")
    args = parser.parse_args()
    os.environ.setdefault("NIX_CONFIG", NIX_CONFIG_TEXT)
    os.environ["PATH"] = tool_path()
    with tempfile.TemporaryDirectory(prefix="forge-bench-deploy-") as tmp:
        base = Path(tmp)
        registry = start_registry(base / "registry")
        standin = KubeStandin(settings=Settings(**FAST)).start()
        sim = standin.add(FluxSim())
        try:
            # The big repository, with image names pointing at this registry.
            host = registry.host
            big.kustomization = (lambda k: lambda s, t: k(s, t).replace("localhost:5000", host))(big.kustomization)
            big.deployment = (lambda d: lambda s: d(s).replace("localhost:5000", host))(big.deployment)
            remote = base / "gitops.git"
            t0 = time.perf_counter()
            big.build_remote(remote, args.overlays, args.commits)
            print(f"GitOps repository: {args.overlays * 2} manifests, {args.commits} commits "
                  f"(built in {time.perf_counter() - t0:.1f}s)")

            forge_src = copy_tree([f for f in checkout_files() if not f.startswith("benchmarks/")], ROOT, base / "forge")
            nixpkgs = base / "nixpkgs"
            shutil.copytree(ROOT / "tests" / "nixpkgs-standin", nixpkgs)
            shop = make_flake(ROOT / "examples" / "shop", base / "shop", forge_src, nixpkgs)
            (shop.dir / "deploy.yaml").write_text(DEPLOY_YAML.format(host=host, repo=remote))
            subprocess.run([sys.executable, "-m", "forgegen", "sync"], cwd=shop.dir, check=True, capture_output=True)
            shop.commit("benchmark deploy.yaml")

            install_flux(standin, remote, {"apps-staging": "./clusters/staging/svc0"})
            kubeconfig = write_kubeconfig(base / "kubeconfig", standin.url)
            env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
            plan = shop.dir / "nix" / "forge" / "plans" / "svc0.json"

            variants = {"after": None}
            if args.before:  # both as `python -S` with their own code first (benchmarks/trees.py)
                variants = {"after": code_dir(ROOT, base / "after"), "before": code_dir(args.before, base / "before")}
            rows: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
            for i in range(args.rounds + 1):  # round 0 warms the caches (clone, nix build, layout)
                for n, (name, tree) in enumerate(variants.items()):
                    env["RELEASE_GIT_SHA"] = f"{0xabc0000 + 2 * i + n:07x}"
                    if args.profile and i == args.rounds and name == "after":
                        env["FORGE_BENCH_PROFILE"] = str(args.profile.resolve())
                    row = one_round(plan, shop.dir, {**env, **(variant_env(tree) if tree else {})}, base,
                                    PYTHON_FLAGS if tree else [])
                    if i > 0:
                        rows[name].append(row)
            keys = ("wall", "startup", "build", "push", "gitops", "gitops_fetch", "gitops_edit", "gitops_check",
                    "gitops_commit", "gitops_push", "reconcile", "rollout", "overhead",
                    "cpu_self", "cpu_child", "rss_self_mb", "rss_child_mb")
            print(f"\nforge deploy, median of {args.rounds} warm rounds (seconds; RSS in MB)"
                  f"{'; before/after alternate' if args.before else ''}; load average {os.getloadavg()}:")
            print(f"  {'':<13}" + "".join(f"{name:>26}" for name in rows))
            for key in keys:
                cells = []
                for values in ([r[key] for r in rows[name]] for name in rows):
                    cells.append(f"{statistics.median(values):8.3f} ({min(values):.3f}–{max(values):.3f})")
                print(f"  {key:<13}" + "".join(f"{c:>26}" for c in cells))
            print("\n  startup = Python start-up, imports, plan load and preflight (the rest of wall)")
            print("  overhead = wall - push - reconcile - rollout (target < 0.5 s)")
            print("  cpu_self / cpu_child = CPU seconds (user+sys) of forge itself / of its children (nix, git,\n"
                  "    skopeo, kubectl): less sensitive to the machine's load than wall time")
            print("  rss_self_mb / rss_child_mb = peak RSS of forge itself / of its largest child process")
        finally:
            sim.close()
            standin.stop()
            registry.stop()


RUN = """\
import os, resource, sys
profile = None
if os.environ.get("FORGE_BENCH_PROFILE"):
    import cProfile
    profile = cProfile.Profile()
    profile.enable()
from forgegen.runtime.cli import main
try:
    main()
finally:
    if profile is not None:
        profile.disable()
        profile.dump_stats(os.environ["FORGE_BENCH_PROFILE"])
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(os.environ["FORGE_BENCH_RSS"], "w") as f:
        f.write(f"{me.ru_maxrss} {kids.ru_maxrss} {me.ru_utime + me.ru_stime} {kids.ru_utime + kids.ru_stime}")
"""


def one_round(plan: Path, cwd: Path, env: dict[str, str], base: Path, flags: list[str]) -> dict[str, float]:
    rss = base / "rss"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *flags, "-c", RUN, "deploy", "--plan", str(plan), "svc0:staging", "--json"],
                          cwd=cwd, env={**env, "FORGE_BENCH_RSS": str(rss)}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stderr[-3000:])
        raise SystemExit("deploy failed")
    r = json.loads(proc.stdout)
    t = r["timings"]
    push_only = r["push"]["push_seconds"]
    row = {"wall": wall, "build": t["push_seconds"] - push_only, "push": push_only,
           "gitops": t["gitops_seconds"], "reconcile": t["reconcile_seconds"],
           "rollout": t["rollout_seconds"]}
    row["overhead"] = wall - push_only - row["reconcile"] - row["rollout"]
    row["startup"] = wall - t["total_seconds"]
    for part in ("fetch", "edit", "check", "commit", "push"):
        row[f"gitops_{part}"] = r["gitops"].get("timings", {}).get(part, 0.0)
    rss_self, rss_child, cpu_self, cpu_child = (float(v) for v in rss.read_text().split())
    row.update(rss_self_mb=rss_self / 1024, rss_child_mb=rss_child / 1024, cpu_self=cpu_self, cpu_child=cpu_child)
    return row


if __name__ == "__main__":
    main()
