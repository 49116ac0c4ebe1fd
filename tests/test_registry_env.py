"""FORGE_REGISTRY: the runtime pushes to (and deploys from) another registry than deploy.yaml's,
through `nix run` in the example, with the real registry and real GitOps commits."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.nixenv import Flake
from tests.fixtures.registry import Registry
from tests.fixtures.shop import ShopCluster, shop_cluster_on

pytestmark = [pytest.mark.nix]


def test_dry_run_shows_every_image_under_forge_registry(shop: Flake) -> None:
    proc = shop.run_app("release", "--dry-run", "--json", env={"FORGE_REGISTRY": "127.0.0.1:5999/acme/team"})
    doc = json.loads(proc.stdout)
    assert doc["registry_override"] == {
        "variable": "FORGE_REGISTRY", "from": "localhost:5000/shop", "to": "127.0.0.1:5999/acme/team",
        "images": {name: f"127.0.0.1:5999/acme/team/{name}" for name in ("api", "web", "inventory", "mailer")}}
    push = next(s for s in doc["steps"] if s["step"] == "push")
    assert push["details"]["repository"] == "127.0.0.1:5999/acme/team/api"
    assert push["details"]["registry"] == "127.0.0.1:5999"
    edit = next(s for s in doc["steps"] if s["step"] == "gitops-edit")
    assert edit["details"]["image"] == "127.0.0.1:5999/acme/team/api"
    assert "localhost:5000" not in json.dumps(doc["steps"])
    assert "FORGE_REGISTRY: images go to 127.0.0.1:5999/acme/team instead of localhost:5000/shop" in proc.stderr
    # just a host: the organization goes too
    doc = json.loads(shop.run_app("push:web", "--dry-run", "--json", env={"FORGE_REGISTRY": "localhost:6000"}).stdout)
    assert doc["registry_override"]["images"] == {"web": "localhost:6000/web"}
    # unset or empty: deploy.yaml's registry, and no override in the report
    doc = json.loads(shop.run_app("push:web", "--dry-run", "--json", env={"FORGE_REGISTRY": ""}).stdout)
    assert "registry_override" not in doc and doc["steps"][1]["details"]["repository"] == "localhost:5000/shop/web"


@pytest.mark.parametrize("value, problem", [
    ("https://ghcr.io/acme", "is not a registry: expected HOST[:PORT][/ORGANIZATION] with no scheme"),
    ("localhost:5000/Acme", "is not a registry"),
    ("localhost:5000/acme/", "is not a registry"),
    ("ghcr.io/acme", "deploy.yaml's registry is `insecure` (plain HTTP)"),
])
def test_a_malformed_or_unsafe_forge_registry_exits_2_before_anything_runs(shop: Flake, value: str,
                                                                            problem: str) -> None:
    proc = shop.run_app("push:api", "--json", check=False, env={"FORGE_REGISTRY": value})
    assert proc.returncode == 2, proc.stderr
    assert f"FORGE_REGISTRY={value!r}" in proc.stderr and problem in proc.stderr
    assert json.loads(proc.stdout)["error"]["exit_code"] == 2 and "Traceback" not in proc.stderr


@pytest.fixture
def moved_cluster(request: pytest.FixtureRequest, shop: Flake, registry: Registry,
                  tmp_path: Path) -> Iterator[ShopCluster]:
    """The example whose GitOps manifests name the images under <registry>/acme, not deploy.yaml's /shop."""
    def edit_gitops(rel: Path, text: str) -> str:
        return text.replace(f"{registry.host}/shop/", f"{registry.host}/acme/")

    with shop_cluster_on("standin", request, shop, registry, tmp_path, edit_gitops=edit_gitops) as cluster:
        yield cluster


@pytest.mark.kube
@pytest.mark.registry
def test_deploy_pushes_commits_and_runs_the_image_under_forge_registry(moved_cluster: ShopCluster) -> None:
    c = moved_cluster
    sha = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=c.shop.dir, capture_output=True, text=True,
                         check=True).stdout.strip()
    moved = f"{c.registry.host}/acme/api"
    proc = c.run("deploy:api", "--json", env={"FORGE_REGISTRY": f"{c.registry.host}/acme"},
                 stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["image"] == f"{moved}:amd64-{sha}"
    assert report["registry_override"]["to"] == f"{c.registry.host}/acme"
    inspect = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{moved}:amd64-{sha}"],
                             capture_output=True, text=True)
    assert inspect.returncode == 0, inspect.stderr  # pushed to the real registry under acme/
    kustomization = c.remote_file("clusters/staging/api/kustomization.yaml")
    assert f"name: {moved}" in kustomization and f"newTag: amd64-{sha}" in kustomization
    assert c.running_image("api") == f"{moved}:amd64-{sha}"


def test_resume_refuses_a_release_that_pushed_to_another_registry(shop: Flake, tmp_path: Path) -> None:
    """A resumed release skips the pushes its report has: under another FORGE_REGISTRY those images
    are not where it would deploy them from, so it exits 2 before anything runs."""
    sha7 = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=shop.dir, capture_output=True, text=True,
                          check=True).stdout.strip()
    failed = tmp_path / "failed.json"
    failed.write_text(json.dumps({
        "command": "release", "project": "shop", "outcome": "failed", "stage": "full", "source_commit": sha7,
        "services": ["api", "web", "inventory", "mailer"], "environments": ["staging", "production"],
        "registry": "localhost:5000/shop",
        "push": {}, "stages": []}))
    proc = shop.run_app("release", "--yes", "--resume", str(failed), check=False, stdin=subprocess.DEVNULL,
                        env={"FORGE_REGISTRY": "127.0.0.1:5999/acme"})
    assert proc.returncode == 2, proc.stderr
    assert "--resume: the failed release had registry 'localhost:5000/shop', this one '127.0.0.1:5999/acme'" \
        in proc.stderr
