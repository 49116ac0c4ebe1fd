"""Benchmark: a parallel release of 20 services × 2 environments against the sum of single deploys.

Prints figures (not a test; nothing here asserts). Run:
    .venv/bin/python benchmarks/release.py [--services 20] [--concurrency 4] [--rounds 1]

Set-up: the example flake with ``--services`` services (all built from the example's ``api-image``
package, each pushed to its own repository), two environments (``staging`` in namespace shop,
``production`` in shop-production), a real registry, a GitOps remote with one overlay per service
and environment, and the Kubernetes stand-in with the Flux simulation (``apps-staging``,
``apps-production``). ``svc1`` depends on ``svc0`` (so the release keeps one ``depends_on`` order).

* the release: ``forge release --yes --concurrency N`` as one process (a new tag per round);
* the single deploys: ``forge deploy svcN:<env>`` for every service and environment, one after the
  other (another new tag), each a new process.

ratio = release wall / sum of the single deploys' walls (issue 17's target: ≤ 0.35 with a bound of 4).
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

from tests.fixtures.gitops import seed_remote, write_overlay  # noqa: E402
from tests.fixtures.kube import FAST, write_kubeconfig  # noqa: E402
from tests.fixtures.nixenv import NIX_CONFIG_TEXT, checkout_files, copy_tree, make_flake, tool_path  # noqa: E402
from tests.fixtures.registry import start_registry  # noqa: E402
from tests.fixtures.shop import install_flux  # noqa: E402
from tests.kube_standin import KubeStandin, Settings  # noqa: E402
from tests.kube_standin.controllers.flux import FluxSim  # noqa: E402

ENVS = (("staging", "shop"), ("production", "shop-production"))


def deploy_yaml(host: str, repo: Path, services: int) -> str:
    lines = ["version: 1", "project: bench", f'registry: {{host: "{host}", organization: shop, insecure: true}}',
             f'gitops: {{repo: "{repo}", path: "clusters/{{cluster}}/{{service}}"}}',
             'flux: {kustomizations: ["apps-{environment}"]}', "environments:"]
    for env, ns in ENVS:
        lines += [f"  - name: {env}", f"    namespace: {ns}"]
    lines.append("services:")
    for i in range(services):
        lines += [f"  svc{i}:", "    image: {package: api-image}"]
        if i == 1:
            lines.append("    depends_on: [svc0]")
    return "\n".join(lines) + "\n"


def gitops_template(root: Path, host: str, services: int) -> Path:
    for env, ns in ENVS:
        names = [f"svc{i}" for i in range(services)]
        for name in names:
            write_overlay(root, env, name, image=f"{host}/shop/{name}", namespace=ns)
        (root / "clusters" / env / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"
            + "".join(f"  - {n}\n" for n in names))
    return root


def forge(args: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from forgegen.runtime.cli import main; main()", *args],
                          cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stderr[-4000:])
        raise SystemExit(f"forge {' '.join(args)} failed")
    return wall, json.loads(proc.stdout)


def print_steps(steps: dict[str, list[dict]]) -> None:
    """Each deploy step's median seconds inside the release and in the single deploys, side by side."""
    names = sorted({k for rows in steps.values() for t in rows for k in t if k.endswith("_seconds")})
    print(f"\n  per deploy, median seconds: {'step':<24} {'in the release':>15} {'single deploy':>14}")
    for name in names:
        cells = [statistics.median(v) if (v := [t[name] for t in steps[kind] if name in t]) else float("nan")
                 for kind in ("release", "single")]
        print(f"  {'':<28}{name:<24} {cells[0]:15.3f} {cells[1]:14.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("NIX_CONFIG", NIX_CONFIG_TEXT)
    os.environ["PATH"] = tool_path()
    with tempfile.TemporaryDirectory(prefix="forge-bench-release-") as tmp:
        base = Path(tmp)
        registry = start_registry(base / "registry")
        standin = KubeStandin(settings=Settings(**FAST)).start()
        sim = standin.add(FluxSim())
        try:
            host = registry.host
            remote = seed_remote(gitops_template(base / "template", host, args.services), base / "gitops.git")
            forge_src = copy_tree([f for f in checkout_files() if not f.startswith("benchmarks/")], ROOT, base / "forge")
            nixpkgs = base / "nixpkgs"
            shutil.copytree(ROOT / "tests" / "nixpkgs-standin", nixpkgs)
            shop = make_flake(ROOT / "examples" / "shop", base / "shop", forge_src, nixpkgs)
            (shop.dir / "deploy.yaml").write_text(deploy_yaml(host, remote, args.services))
            subprocess.run([sys.executable, "-m", "forgegen", "sync"], cwd=shop.dir, check=True, capture_output=True)
            shop.commit("benchmark deploy.yaml")
            install_flux(standin, remote, {f"apps-{env}": f"./clusters/{env}" for env, _ in ENVS})
            kubeconfig = write_kubeconfig(base / "kubeconfig", standin.url)
            env = {**os.environ, "KUBECONFIG": str(kubeconfig), "FORGE_STATE_DIR": str(base / "state")}
            plans = shop.dir / "nix" / "forge" / "plans"
            # warm-up: the nix build and every repository's first push (not measured)
            env["RELEASE_GIT_SHA"] = "abc0000"
            forge(["release", "--yes", "--json", "--concurrency", str(args.concurrency)], cwd=shop.dir, env=env)
            rows = []
            steps: dict[str, list[dict]] = {"release": [], "single": []}  # each deploy's timings
            for r in range(args.rounds):
                env["RELEASE_GIT_SHA"] = f"{0xabc0001 + 2 * r:07x}"
                wall, report = forge(["release", "--yes", "--json", "--concurrency", str(args.concurrency)],
                                     cwd=shop.dir, env=env)
                stages = {s["environment"]: s["elapsed_seconds"] for s in report["stages"]}
                env["RELEASE_GIT_SHA"] = f"{0xabc0002 + 2 * r:07x}"
                singles = []
                for i in range(args.services):
                    for e, _ in ENVS:
                        w, doc = forge(["deploy", "--plan", str(plans / f"svc{i}.json"), f"svc{i}:{e}", "--json"],
                                       cwd=shop.dir, env=env)
                        singles.append(w)
                        steps["single"].append(doc.get("timings") or {})
                steps["release"] += [s["deploy"].get("timings") or {} for st in report["stages"] for s in st["services"]]
                rows.append({"release": wall, "push": report["timings"]["push_seconds"], **stages,
                             "singles": sum(singles), "single_median": statistics.median(singles),
                             "ratio": wall / sum(singles)})
                print(f"  round {r + 1} of {args.rounds}: release {wall:.1f} s, singles {sum(singles):.1f} s, "
                      f"ratio {wall / sum(singles):.3f}; load {os.getloadavg()[0]:.2f}", flush=True)
                if os.environ.get("BENCH_DIAG"):
                    rel = [s["deploy"].get("timings") or {} for st in report["stages"] for s in st["services"]]
                    med = {k: round(statistics.median(t.get(k, 0) for t in rel), 3)
                           for k in ("gitops_seconds", "reconcile_seconds", "rollout_seconds")}
                    store = standin.cluster.store  # type: ignore[union-attr]
                    counts = standin.call(lambda: {k: len(v) for k, v in store.objects.items() if len(v) > 20})
                    print(f"    release steps {med}; stand-in objects {counts}", flush=True)
            load = os.getloadavg()
            print(f"release of {args.services} services × {len(ENVS)} environments, --concurrency {args.concurrency}, "
                  f"{args.rounds} round(s); load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}:")
            for key in ("release", "push", "staging", "production", "singles", "single_median", "ratio"):
                values = [row[key] for row in rows]
                print(f"  {key:<14} {statistics.median(values):8.3f}   (min {min(values):.3f}, max {max(values):.3f})")
            print_steps(steps)
            print("\n  release = wall of `forge release` (one process; push of every image once, then each "
                  "environment's services in parallel, and its gate)")
            print("  singles = sum of the walls of one `forge deploy S:E` per service and environment, one after "
                  "the other; ratio = release / singles")
        finally:
            sim.close()
            standin.stop()
            registry.stop()


if __name__ == "__main__":
    main()
