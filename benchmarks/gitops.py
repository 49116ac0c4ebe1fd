"""Benchmark: Forge's GitOps overhead on a large GitOps repository, and concurrent deploys.

Prints figures and ratios (not a test; nothing here asserts). Run:
    .venv/bin/python benchmarks/gitops.py [--overlays 1000] [--commits 10000]

The repository: ``--overlays`` overlays (``clusters/{staging,production}/svcN/``), each a
kustomization.yaml and a deployment.yaml (2 × 1000 = 2,000 manifests by default), and
``--commits`` commits of history, each changing one overlay's tag (made with ``git fast-import``).

Target (DESIGN.md): Forge's own overhead on one deploy stays under 1 s. Measured here, against a
warm cache (the normal case: one clone per machine, then fetches):

* one deploy (fetch, edit, ``kubectl kustomize`` check, commit, push), with a phase breakdown,
  next to the same steps done by hand with git and sed (the floor);
* a re-deploy of the same tag (no commit);
* the ledger: its one-time history index on a machine, then ``previous_tag`` for a service
  touched recently and for one whose previous tag is thousands of commits back; ``current_tag``;
* the first deploy on a fresh machine (the clone), reported apart;
* 10 concurrent deploys of different services: from one machine (one cache, serialised by its
  lock) and from ten machines (ten caches, racing at the remote).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from forgegen.runtime import gitops  # noqa: E402
from tests.fixtures.gitops import plan_for  # noqa: E402

IDENT = "Forge Bench <bench@example.invalid>"
ENV = {**os.environ, "GIT_AUTHOR_NAME": "Forge Bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
       "GIT_COMMITTER_NAME": "Forge Bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid", "LC_ALL": "C"}


def kustomization(service: str, tag: str) -> str:
    return (f"# {service}\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: shop\n"
            f"resources:\n  - deployment.yaml\nimages:\n  - name: localhost:5000/shop/{service}\n    newTag: {tag}\n")


def deployment(service: str) -> str:
    return (f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {service}\n  namespace: shop\nspec:\n"
            f"  selector:\n    matchLabels: {{app: {service}}}\n  template:\n    metadata:\n"
            f"      labels: {{app: {service}}}\n    spec:\n      containers:\n        - name: {service}\n"
            f"          image: localhost:5000/shop/{service}\n")


def build_remote(path: Path, overlays: int, commits: int) -> tuple[list[str], str]:
    """A bare repo with the overlays and ``commits`` commits; returns (services, a cold service)."""
    services = [f"svc{i}" for i in range(overlays // 2)]
    clusters = ("staging", "production")
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch", "main", str(path)], check=True, env=ENV)
    rng = random.Random(7)
    cold = services[-1]  # changed once, early: its previous tag is thousands of commits back
    chunks: list[bytes] = []

    def data(text: str) -> bytes:
        raw = text.encode()
        return b"data %d\n" % len(raw) + raw + b"\n"

    t = 1_700_000_000
    files = [f"M 100644 inline clusters/{c}/{s}/{name}\n".encode() + data(body)
             for c in clusters for s in services
             for name, body in (("kustomization.yaml", kustomization(s, "amd64-0000000")),
                                ("deployment.yaml", deployment(s)))]
    chunks.append(b"commit refs/heads/main\nmark :1\n" + f"committer {IDENT} {t} +0000\n".encode()
                  + data("initial") + b"".join(files))
    for n in range(2, commits + 1):
        service = cold if n == 3 else rng.choice(services[:-1])
        cluster = rng.choice(clusters)
        tag = f"amd64-{n:07x}"
        chunks.append(b"commit refs/heads/main\n" + f"mark :{n}\ncommitter {IDENT} {t + n} +0000\n".encode()
                      + data(f"deploy({service}): {cluster} → {tag}") + f"from :{n - 1}\n".encode()
                      + f"M 100644 inline clusters/{cluster}/{service}/kustomization.yaml\n".encode()
                      + data(kustomization(service, tag)))
    subprocess.run(["git", "fast-import", "--quiet"], input=b"".join(chunks), cwd=path, check=True, env=ENV)
    subprocess.run(["git", "gc", "-q"], cwd=path, check=True, env=ENV)
    return services, cold


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def by_hand(remote: Path, work: Path, service: str, tag: str) -> float:
    """The floor: the same deploy with git and sed in an existing clone (fetch, reset, edit, commit, push)."""
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=work, check=True, env=ENV, capture_output=True)
    t0 = time.perf_counter()
    git("fetch", "-q", "origin", "main")
    git("reset", "-q", "--hard", "origin/main")
    f = work / "clusters" / "staging" / service / "kustomization.yaml"
    f.write_text(kustomization(service, tag))
    git("commit", "-qam", f"deploy {service} {tag}")
    git("push", "-q", "origin", "HEAD:main")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overlays", type=int, default=1000, help="overlays (2 manifests each)")
    parser.add_argument("--commits", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="forge-gitops-bench-"))
    os.environ.update({k: v for k, v in ENV.items() if k.startswith("GIT_")})
    os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")
    try:
        remote = tmp / "gitops.git"
        t_build, (services, cold) = timed(lambda: build_remote(remote, args.overlays, args.commits))
        count = subprocess.run(["git", "rev-list", "--count", "main"], cwd=remote, capture_output=True, text=True,
                               env=ENV).stdout.strip()
        print(f"GitOps repo: {2 * args.overlays} manifests in {args.overlays} overlays, {count} commits "
              f"(built in {t_build:.1f} s)")
        deploy_yaml = "\n".join([
            "version: 1", "project: shop", "registry: {host: localhost:5000, organization: shop}",
            "gitops: {repo: ./gitops.git}", "environments:", "  - {name: staging, namespace: shop}",
            "  - {name: production, namespace: shop}", "services:",
            *[f"  {s}: {{type: generic, path: services/{s}}}" for s in services]]) + "\n"
        plan = plan_for(deploy_yaml, remote, push_attempts=20)

        t_clone, first = timed(lambda: gitops.apply_tag(plan, services[0], "staging", tag="amd64-bench00",
                                                        source_commit="0000000"))
        print(f"\nfirst deploy on a fresh machine (clone): {fmt(t_clone)}  "
              f"[{', '.join(f'{k} {v * 1000:.0f} ms' for k, v in first.timings.items())}]")

        totals, phases = [], {}
        for i in range(args.runs):
            t, r = timed(lambda i=i: gitops.apply_tag(plan, services[1 + i], "staging", tag=f"amd64-run{i:04d}",
                                                      source_commit="0000000"))
            totals.append(t)
            for k, v in r.timings.items():
                phases.setdefault(k, []).append(v)
        median = statistics.median(totals)
        print(f"\none deploy, warm cache ({args.runs} runs): median {fmt(median)}, max {fmt(max(totals))}"
              f"   (target < 1000 ms)")
        for k, v in phases.items():
            print(f"  {k:<8} {fmt(statistics.median(v))}")
        work = tmp / "by-hand"
        subprocess.run(["git", "clone", "-q", str(remote), str(work)], check=True, env=ENV)
        hand = statistics.median(by_hand(remote, work, services[20 + i], f"amd64-hand{i:03d}")
                                 for i in range(args.runs))
        print(f"  by hand with git + sed (no check): {fmt(hand)}  -> Forge / by hand = {median / hand:.2f}x")

        t_same, same = timed(lambda: gitops.apply_tag(plan, services[1], "staging", tag="amd64-run0000",
                                                      source_commit="0000000"))
        print(f"\nsame tag again (no commit): {fmt(t_same)}  changed={same.changed}")

        t_index, _ = timed(lambda: gitops.previous_tag(plan, services[3], "staging", current="amd64-run0002"))
        print(f"\nledger: first use on this machine (writes the commit-graph with changed-path filters, once): "
              f"{fmt(t_index)}")
        t_prev, prev = timed(lambda: gitops.previous_tag(plan, services[1], "staging", current="amd64-run0000"))
        print(f"ledger: previous_tag, recently deployed service: {fmt(t_prev)} -> {prev}")
        # The cold service: last changed in commit 3, of production or staging; find where.
        env = "staging" if gitops.current_tag(plan, cold, "staging") != "amd64-0000000" else "production"
        t_cold, prev_cold = timed(lambda: gitops.previous_tag(plan, cold, env, current="amd64-0000003"))
        print(f"ledger: previous_tag, previous tag ~{count} commits back: {fmt(t_cold)} -> {prev_cold}")
        t_cur, cur = timed(lambda: gitops.current_tag(plan, services[2], "staging"))
        print(f"current_tag: {fmt(t_cur)} -> {cur}")
        t_hist, hist = timed(lambda: gitops.history(plan, services[1], "staging", limit=20))
        print(f"history (20 entries): {fmt(t_hist)} -> {len(hist)} entries")

        for label, caches in (("one machine (one cache, lock)", ["shared"] * 10),
                              ("ten machines (ten caches, racing)", [f"m{i}" for i in range(10)])):
            for c in set(caches):  # warm every cache first: clones are a one-time cost
                repo = gitops.GitOpsRepo.open(str(remote), "main", cache=tmp / "caches" / c)
                with repo.locked():
                    repo.sync()
            results: list = [None] * 10
            barrier = threading.Barrier(10)
            base = 100 + (0 if "one" in label else 20)

            def work_(i: int) -> None:
                barrier.wait()
                results[i] = gitops.apply_tag(plan, services[base + i], "production", tag=f"amd64-par{i:04d}",
                                              source_commit="0000000", cache=tmp / "caches" / caches[i])

            threads = [threading.Thread(target=work_, args=(i,)) for i in range(10)]
            t0 = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - t0
            landed = sum(1 for r in results if r is not None and r.commit)
            attempts = sorted(r.attempts for r in results if r is not None)
            print(f"\n10 concurrent deploys, {label}: {wall:.2f} s wall, {landed}/10 landed, "
                  f"{landed / wall:.1f} deploys/s, attempts {attempts}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
