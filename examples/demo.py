"""The example's main job, end to end on this machine (run by `bash .ci/demo`).

What it sets up, all on loopback in a temporary directory:

* examples/shop in a git repository, its flake locked to this checkout (`forge`) and to the
  nixpkgs stand-in under tests/nixpkgs-standin (the real nixpkgs cannot be fetched here);
* a real OCI registry (`docker-registry`), which deploy.yaml is pointed at;
* the GitOps repository: a bare repo seeded from examples/gitops, at ./gitops.git as deploy.yaml says;
* the real control plane when `.ci/build-controlplane` has built it (tests/controlplane: etcd,
  kube-apiserver, kube-controller-manager, kube-scheduler, Flux's source- and
  kustomize-controller, a loopback git server, the simulated kubelet; Forge runs as a user bound
  only to examples/rbac/forge.yaml) -- otherwise the Kubernetes API stand-in (tests/kube_standin)
  with the Flux simulation. It says which one it runs on.

Then it runs what a user types (each step with the seconds since the demo started, each command
with its exit code and duration): `nix run .#deploy:api` (real Nix build, real push, real GitOps
commit, Flux applies it, the rollout is watched), `nix run .#status:api -- --environments staging`, and a crash-looping
release that fails fast with the reason and the logs and is rolled back (`rollback_on_failure`),
with how long after Flux applied it the verdict came. The last line says what was shown.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.controlplane import built_bin_dir, start_control_plane  # noqa: E402
from tests.fixtures.kube import FAST, Kube, write_kubeconfig  # noqa: E402
from tests.fixtures.nixenv import NIX_CONFIG_TEXT, checkout_files, copy_tree, make_flake, tool_path  # noqa: E402
from tests.fixtures.registry import start_registry  # noqa: E402
from tests.fixtures.shop import FORGE_USER, RealBackend, StandinBackend, bind_forge, start_shop_cluster  # noqa: E402
from tests.kube_standin import KubeStandin, Settings, crash  # noqa: E402

START = time.monotonic()


def step(title: str) -> None:
    print(f"\n=== [{time.monotonic() - START:5.1f} s] {title}", file=sys.stderr, flush=True)


NOISE = ("warning:", "•", "    'path:", "    follows", "building '")


def run(shop, app: str, *args: str, env: dict[str, str]) -> tuple[int, dict[str, float]]:
    """``nix run .#APP -- ARGS`` with its progress shown as it comes; the exit code and when
    (seconds after the start) the Flux apply and the rollout verdict were seen."""
    step(f"nix run .#{app} -- {' '.join(args)}".rstrip(" -"))
    argv = ["nix", "run", f".#{app}", *shop.overrides(), "--", *args]
    began = time.monotonic()
    seen: dict[str, float] = {}
    with subprocess.Popen(argv, cwd=shop.dir, env={**os.environ, **env}, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None and proc.stdout is not None
        for line in proc.stderr:
            now = time.monotonic() - began
            if line.startswith("flux: applied"):
                seen.setdefault("applied", now)
            if " FAILED: " in line:
                seen.setdefault("verdict", now)
            if not line.startswith(NOISE):
                print(line, end="", file=sys.stderr, flush=True)
        out = proc.stdout.read()
    if out.strip():
        print(out.strip(), flush=True)
    print(f"(exit code {proc.returncode}, {time.monotonic() - began:.1f} s)", file=sys.stderr, flush=True)
    return proc.returncode, seen


def start_cluster(base: Path, stack: ExitStack) -> StandinBackend | RealBackend:
    """The real control plane when `.ci/build-controlplane` built it, else the stand-in."""
    bin_dir = built_bin_dir()
    if bin_dir is not None:
        step("start the real control plane (etcd, kube-apiserver, controller-manager, scheduler, "
             "Flux source- and kustomize-controller, a loopback git server, the simulated kubelet)")
        plane = start_control_plane(base / "controlplane", bin_dir=bin_dir, git_root=base)
        stack.callback(plane.stop)
        user = bind_forge(plane, ("shop", "flux-system"))
        print(f"runs on: {plane.describe()} (ready in {plane.started_in:.1f} s); Forge runs as user "
              f"{FORGE_USER}, bound only to examples/rbac/forge.yaml", file=sys.stderr)
        return RealBackend(plane, user)
    step("start the Kubernetes API stand-in with Flux")
    standin = KubeStandin(settings=Settings(**FAST)).start()
    stack.callback(standin.stop)
    home = base / "kubectl-home"
    home.mkdir()
    print("runs on: the Kubernetes API stand-in (tests/kube_standin) with the Flux simulation; "
          "`bash .ci/build-controlplane` builds the real control plane", file=sys.stderr)
    return StandinBackend(Kube(standin, write_kubeconfig(base / "kubeconfig", standin.url), home))


def main() -> int:
    os.environ.setdefault("NIX_CONFIG", NIX_CONFIG_TEXT)
    os.environ["PATH"] = tool_path()
    with tempfile.TemporaryDirectory(prefix="forge-demo-") as tmp, ExitStack() as stack:
        base = Path(tmp)
        step("start a local OCI registry")
        registry = start_registry(base / "registry")
        stack.callback(registry.stop)
        backend = start_cluster(base, stack)
        forge_src = copy_tree([f for f in checkout_files() if not f.startswith("benchmarks/")], ROOT, base / "forge")
        nixpkgs = base / "nixpkgs"
        shutil.copytree(ROOT / "tests" / "nixpkgs-standin", nixpkgs)
        shop = make_flake(ROOT / "examples" / "shop", base / "shop", forge_src, nixpkgs)
        # The same wiring the end-to-end tests use (tests/fixtures/shop.py).
        with start_shop_cluster(shop, registry, backend, base) as cluster:
            env = cluster.env
            shop_head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=shop.dir, capture_output=True,
                                       text=True, check=True).stdout.strip()
            rc, _ = run(shop, "deploy:api", env=env)
            if rc != 0:
                return rc
            run(shop, "status:api", "--environments", "staging", env=env)

            step("a new commit whose image crash-loops (scripted in the simulated kubelet)")
            app = shop.dir / "services" / "api" / "api" / "app.py"
            app.write_text(app.read_text().replace(
                "    server = make_server(", "    if not os.environ.get(\"DATABASE_URL\"):\n"
                "        print(\"api: fatal: DATABASE_URL is not set\", file=sys.stderr)\n"
                "        return 3\n    server = make_server(", 1))
            sha = shop.commit("api: read DATABASE_URL")[:7]
            cluster.script(f"{cluster.image('api')}:amd64-{sha}",
                           crash(exit_code=3, logs=["api: starting", "api: fatal: DATABASE_URL is not set"]))
            failed, seen = run(shop, "deploy:api", env=env)
            if "applied" in seen and "verdict" in seen:
                print(f"verdict: rollout FAILED {seen['verdict'] - seen['applied']:.1f} s after Flux applied "
                      "the commit", file=sys.stderr)
            if failed != 1:
                print(f"demo: FAILED: the crash-looping deploy:api exited {failed}, not 1", file=sys.stderr)
                return 1
            print(f"demo: ended as expected ({time.monotonic() - START:.0f} s): deployed api amd64-{shop_head[:7]}; "
                  "a crash-looping deploy:api failed fast, rolled back", file=sys.stderr)
            return 0


if __name__ == "__main__":
    sys.exit(main())
