"""The Nix builder image (root flake): `forge builder-image verify` checks it from its own root
filesystem (unshare + chroot, no container engine) and `release` pushes it under Forge's tags.
Real Nix, the root flake built against the nixpkgs stand-in (whose packages bundle the host's
programs with their libraries), real skopeo and registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.nixenv import NIX_CONFIG_TEXT, checkout_files, copy_tree, tool_path
from tests.fixtures.registry import Registry

pytestmark = pytest.mark.nix

ROOT = Path(__file__).resolve().parents[1]
CODE = "import sys; from forgegen.runtime.cli import main; sys.exit(main())"


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "NIX_CONFIG": NIX_CONFIG_TEXT, "PATH": tool_path(), **extra}


@pytest.fixture(scope="module")
def forge_flake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout in a git repository, its nixpkgs locked to the stand-in (as a consumer's lock is)."""
    dst = copy_tree([f for f in checkout_files() if not f.startswith("benchmarks/")], ROOT,
                    tmp_path_factory.mktemp("forge-flake"))
    subprocess.run(["nix", "flake", "lock", "--override-input", "nixpkgs", f"path:{dst / 'tests' / 'nixpkgs-standin'}"],
                   cwd=dst, check=True, capture_output=True, env=_env(), timeout=300)
    for argv in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                 ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "forge"]):
        subprocess.run(argv, cwd=dst, check=True, capture_output=True)
    return dst


def _forge(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CODE, *args], capture_output=True, text=True, timeout=1200,
                          env=env or _env(), cwd=cwd)


def test_verify_builds_the_image_and_nix_evaluates_and_builds_from_its_root(forge_flake: Path, tmp_path: Path) -> None:
    keep = tmp_path / "root"
    done = _forge("builder-image", "verify", "--flake", f"path:{forge_flake}", "--keep", str(keep), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["system"] == "x86_64-linux"
    checks = {c["check"]: c for c in report["checks"]}
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["nix evaluates"]["detail"] == "3"
    assert "nix (Nix)" in checks["nix runs"]["detail"]
    built = checks["nix builds"]["detail"].split()[0]
    assert (keep / built.lstrip("/")).read_text() == "built-in-the-image\n"  # in the image's store
    assert not Path(built).exists()  # and not the host's: it was built inside the image's root
    assert (keep / "etc/nix/nix.conf").read_text().count("sandbox = false") == 1


def test_verify_fails_when_the_image_has_no_nix(tmp_path: Path) -> None:
    standin = tmp_path / "nixpkgs"
    shutil.copytree(ROOT / "tests" / "nixpkgs-standin", standin)
    flake = tmp_path / "flake"
    flake.mkdir()
    (flake / "flake.nix").write_text(
        "{ inputs.nixpkgs.url = \"path:" + str(standin) + "\";\n"
        "  outputs = { self, nixpkgs }: let pkgs = nixpkgs.legacyPackages.x86_64-linux; in {\n"
        "    packages.x86_64-linux.nix-builder-image = pkgs.dockerTools.buildLayeredImage {\n"
        "      name = \"no-nix\"; contents = [ pkgs.bashInteractive pkgs.coreutilsFull ];\n"
        "      config.Env = [ \"PATH=/bin\" ]; }; }; }\n")
    done = _forge("builder-image", "verify", "--flake", f"path:{flake}", "--json")
    assert done.returncode == 1, done.stderr
    checks = {c["check"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["shell"]["ok"] and checks["program tar"]["ok"] is False
    assert checks["program nix"]["ok"] is False  # the host's nix is not visible from the image's root
    assert checks["nix runs"]["ok"] is False and "exited with" in checks["nix runs"]["detail"]
    assert "FAIL program nix" in done.stderr


def test_release_pushes_under_deterministic_tags_and_a_repush_sends_nothing(forge_flake: Path,
                                                                             registry: Registry) -> None:
    env = _env(RELEASE_GIT_SHA="7e57ab1")
    args = ("builder-image", "release", "--flake", f"path:{forge_flake}", "--registry", registry.host,
            "--organization", "tools", "--insecure", "--json")
    first = _forge(*args, env=env, cwd=forge_flake)
    assert first.returncode == 0, first.stderr
    pushed = json.loads(first.stdout)
    assert pushed["repository"] == f"{registry.host}/tools/nix-builder"
    assert set(pushed["verified"]) == {"amd64-7e57ab1", "amd64-latest"}
    assert len(set(pushed["verified"].values())) == 1 and pushed["deploy_digest"].startswith("sha256:")
    again = _forge(*args, env=env, cwd=forge_flake)
    assert again.returncode == 0, again.stderr
    repushed = json.loads(again.stdout)
    assert repushed["deploy_digest"] == pushed["deploy_digest"]
    assert repushed["images"][0]["bytes_uploaded"] == 0


def test_dry_runs_change_nothing_and_the_root_flake_has_the_apps(forge_flake: Path, registry: Registry) -> None:
    apps = subprocess.run(["nix", "eval", "--json", f"path:{forge_flake}#apps.x86_64-linux",
                           "--apply", "builtins.attrNames"], capture_output=True, text=True, env=_env(), timeout=300)
    assert apps.returncode == 0, apps.stderr
    assert {"nix-builder:verify", "nix-builder:release"} <= set(json.loads(apps.stdout))
    via_app = subprocess.run(["nix", "run", f"path:{forge_flake}#nix-builder:verify", "--", "--dry-run", "--json"],
                             capture_output=True, text=True, env=_env(), timeout=600)
    assert via_app.returncode == 0, via_app.stderr
    assert json.loads(via_app.stdout)["steps"][0].startswith("nix build .#packages.")
    release = _forge("builder-image", "release", "--flake", f"path:{forge_flake}", "--registry", registry.host,
                     "--organization", "tools", "--insecure", "--dry-run", "--json",
                     env=_env(RELEASE_GIT_SHA="0d1e2f3"), cwd=forge_flake)
    assert release.returncode == 0, release.stderr
    doc = json.loads(release.stdout)
    assert doc["dry_run"] is True and doc["source_commit"] == "0d1e2f3"
    assert "amd64-0d1e2f3" in json.dumps(doc["steps"])


def test_release_refuses_a_bad_registry_with_exit_2(forge_flake: Path) -> None:
    done = _forge("builder-image", "release", "--flake", f"path:{forge_flake}", "--registry", "not a host",
                  "--organization", "tools", "--dry-run", env=_env(RELEASE_GIT_SHA="0d1e2f3"))
    assert done.returncode == 2
    assert "cannot release the builder image to not a host/tools" in done.stderr
