"""The example's main job, end to end on this machine (run by `bash .ci/demo`).

It copies examples/shop to a temporary directory, starts a real OCI registry on a free loopback
port (and points the copy's deploy.yaml at it), runs `forgegen sync`, then the generated apps
through real Nix: `nix run .#push:api` pushes the Nix-built image, and `nix run .#deploy:api`
shows every step of the deploy. nixpkgs cannot be fetched here, so the flake's `nixpkgs` input is
the stand-in under tests/nixpkgs-standin and `forge` is this checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.nixenv import NIX_CONFIG_TEXT, checkout_files, copy_tree, make_flake, tool_path  # noqa: E402
from tests.fixtures.registry import start_registry  # noqa: E402


def step(title: str) -> None:
    print(f"\n=== {title}", file=sys.stderr, flush=True)


def main() -> int:
    os.environ.setdefault("NIX_CONFIG", NIX_CONFIG_TEXT)
    os.environ["PATH"] = tool_path()
    with tempfile.TemporaryDirectory(prefix="forge-demo-") as tmp:
        base = Path(tmp)
        step("start a local OCI registry")
        registry = start_registry(base / "registry")
        try:
            forge_src = copy_tree([f for f in checkout_files() if not f.startswith("benchmarks/")], ROOT, base / "forge")
            standin = base / "nixpkgs"
            shutil.copytree(ROOT / "tests" / "nixpkgs-standin", standin)
            shop = make_flake(ROOT / "examples" / "shop", base / "shop", forge_src, standin)
            deploy = shop.dir / "deploy.yaml"
            deploy.write_text(re.sub(r"host: localhost:5000", f"host: {registry.host}", deploy.read_text()))
            step("forgegen sync")
            subprocess.run([sys.executable, "-m", "forgegen", "sync"], cwd=shop.dir, check=True)
            shop.commit("point the example at the demo registry")
            step("nix run .#push:api")
            push = shop.run_app("push:api", check=False)
            sys.stderr.write(push.stderr[-3000:])
            print(push.stdout)
            if push.returncode != 0:
                return push.returncode
            step("nix run .#deploy:api -- --dry-run")
            dry = shop.run_app("deploy:api", "--dry-run", check=False)
            print(dry.stdout)
            return dry.returncode
        finally:
            registry.stop()


if __name__ == "__main__":
    sys.exit(main())
