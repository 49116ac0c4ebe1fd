"""The example consumer (examples/shop) through real Nix: sync, flake show, flake check, and
`nix run .#deploy:api -- --dry-run --json` with the nixpkgs stand-in and this checkout as `forge`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from forgegen.schema import load_config
from tests.contract import expected_app_names
from tests.fixtures.nixenv import ROOT, Flake
from tests.fixtures.shop import without_dev

pytestmark = pytest.mark.nix


def forgegen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forgegen", *args], cwd=cwd, capture_output=True, text=True)


def test_example_is_in_sync_with_its_deploy_yaml() -> None:
    proc = forgegen("sync", "--check", cwd=ROOT / "examples" / "shop")
    assert proc.returncode == 0, proc.stderr


def test_deploy_dry_run_json_through_nix_run(shop: Flake) -> None:
    assert forgegen("sync", cwd=shop.dir).returncode == 0
    sha = shop.commit("synced")
    proc = shop.run_app("deploy:api", "--dry-run", "--json")
    report = json.loads(proc.stdout)
    assert report["command"] == "deploy"
    assert report["dry_run"] is True
    assert report["service"] == "api"
    assert report["environment"] == "staging"
    assert report["source_commit"] == sha[:7]
    steps = report["steps"]
    names = [s["step"] for s in steps]
    assert names == ["build", "push", "verify", "gitops-edit", "gitops-check", "gitops-push", "reconcile",
                     "rollout", "rollback-on-failure"]
    build = steps[0]["details"]
    assert build["installable"] == ".#packages.x86_64-linux.api-image"
    push = steps[1]["details"]
    assert push["repository"] == "localhost:5000/shop/api"
    assert push["tags"] == [f"amd64-{sha[:7]}", "amd64-latest"]
    edit = steps[3]["details"]
    assert edit["file"] == "clusters/staging/api/kustomization.yaml"
    assert edit["tag"] == f"amd64-{sha[:7]}"
    assert edit["repo"] == "./gitops.git"
    commit = steps[5]["details"]["message"]
    assert commit == f"deploy(api): staging → amd64-{sha[:7]}\n\nsource: {sha[:7]}"
    reconcile = steps[6]["details"]
    assert reconcile["kustomizations"] == ["apps-staging"]
    assert reconcile["source"] == {"kind": "GitRepository", "name": "flux-system", "namespace": "flux-system"}
    rollout = steps[7]["details"]
    assert (rollout["namespace"], rollout["kind"], rollout["name"], rollout["container"]) == ("shop", "Deployment", "api", "api")
    assert rollout["expected_image"] == f"localhost:5000/shop/api:amd64-{sha[:7]}"
    assert rollout["restarts_tolerated"] == 1
    assert rollout["readiness_grace"] == 30.0


def test_release_sha_comes_from_release_git_sha(shop: Flake) -> None:
    proc = shop.run_app("deploy:web:production", "--dry-run", "--json", env={"RELEASE_GIT_SHA": "ABCDEF0123"})
    report = json.loads(proc.stdout)
    assert report["environment"] == "production"
    assert report["source_commit"] == "abcdef0"
    assert report["steps"][1]["details"]["tags"] == ["amd64-abcdef0", "amd64-latest"]


def test_dirty_tree_is_refused_unless_allowed_and_a_dry_run_says_so(shop: Flake) -> None:
    app = shop.dir / "services" / "api" / "api" / "app.py"
    app.write_text(app.read_text() + "# changed\n")
    proc = shop.run_app("deploy:api", check=False)
    assert proc.returncode == 2, proc.stderr
    assert "uncommitted changes" in proc.stderr and "--allow-dirty" in proc.stderr
    # a dry run describes the steps anyway, and says the real run would refuse
    dry = shop.run_app("deploy:api", "--dry-run", "--json")
    doc = json.loads(dry.stdout)
    assert doc["steps"][0]["step"] == "build" and doc["source_dirty"] is True
    assert any("uncommitted changes" in w and "--allow-dirty" in w for w in doc["warnings"]), doc
    assert "uncommitted changes" in dry.stderr
    ok = shop.run_app("deploy:api", "--dry-run", "--allow-dirty", "--json")
    doc = json.loads(ok.stdout)
    assert doc["steps"][0]["step"] == "build" and doc["source_dirty"] is True and "warnings" not in doc


def test_release_without_yes_and_without_a_terminal_needs_approval(shop: Flake) -> None:
    proc = shop.run_app("release", check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert "environment production requires approval" in proc.stderr
    assert "--yes" in proc.stderr


def test_flake_show_lists_every_contract_app(shop: Flake) -> None:
    proc = shop.nix("flake", "show", "--json")
    apps = json.loads(proc.stdout)["apps"]["x86_64-linux"]
    expected = expected_app_names(load_config(shop.dir / "deploy.yaml"))
    assert set(apps) == expected
    for name in ("build:api", "push:api", "deploy:api", "deploy:api:staging", "deploy:api:production",
                 "rollout:api:production", "rollback:api:staging", "reconcile:api:staging", "migrate:api:production",
                 "reconcile:staging", "status:api", "release:api",
                 "test:api", "lint:api", "fmt:api", "fmt-check:api", "release", "status", "forge:sync"):
        assert name in apps, name


def test_every_app_has_a_description(shop: Flake) -> None:
    proc = shop.nix("eval", "--json", ".#apps.x86_64-linux",
                    "--apply", "apps: builtins.mapAttrs (n: a: a.meta.description) apps")
    descriptions = json.loads(proc.stdout)
    assert descriptions and all(isinstance(d, str) and d for d in descriptions.values())


def test_flake_check_passes(shop: Flake) -> None:
    shop.nix("flake", "check")


def test_dev_app_runs_in_the_service_directory(shop: Flake) -> None:
    """A generic service's dev command runs for real where the service lives."""
    deploy = shop.dir / "deploy.yaml"
    deploy.write_text(without_dev(deploy.read_text()).replace(
        "    type: node\n", "    type: generic\n    dev:\n      test: \"pwd; echo ran-tests\"\n"))
    assert forgegen("sync", cwd=shop.dir).returncode == 0
    shop.commit("dev command")
    proc = shop.run_app("test:web")
    assert proc.stdout.splitlines() == [str(shop.dir / "services" / "web"), "ran-tests"]
    missing = shop.run_app("lint:web", check=False)
    assert missing.returncode == 2
    assert "services.web.dev.lint" in missing.stderr


def test_forge_sync_app_regenerates(shop: Flake) -> None:
    (shop.dir / "nix" / "forge" / "plans" / "web.json").unlink()
    shop.run_app("forge:sync")
    assert (shop.dir / "nix" / "forge" / "plans" / "web.json").is_file()


@pytest.mark.registry
def test_push_app_pushes_the_nix_built_image_with_verified_tags(shop: Flake, registry) -> None:
    deploy = shop.dir / "deploy.yaml"
    deploy.write_text(deploy.read_text().replace("host: localhost:5000", f"host: {registry.host}"))
    assert forgegen("sync", cwd=shop.dir).returncode == 0
    sha = shop.commit("use the test registry")[:7]
    proc = shop.run_app("push:api", "--json")
    report = json.loads(proc.stdout)
    assert report["deploy_tag"] == f"amd64-{sha}"
    tags = subprocess.run(["skopeo", "list-tags", "--tls-verify=false", f"docker://{registry.host}/shop/api"],
                          capture_output=True, text=True, check=True)
    assert {f"amd64-{sha}", "amd64-latest"} <= set(json.loads(tags.stdout)["Tags"])  # the registry is shared
    inspect = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/shop/api:amd64-{sha}"],
                             capture_output=True, text=True, check=True)
    assert json.loads(inspect.stdout)["Digest"] == report["deploy_digest"]


def test_dev_apps_pass_shellcheck_and_run_the_command_as_written(shop: Flake) -> None:
    """The stand-in's writeShellApplication runs ShellCheck as nixpkgs does: a path with `$`,
    backquotes and quotes, and a command relying on word splitting, still build and run as typed."""
    odd = "services/$web `x` it's"
    (shop.dir / odd).mkdir(parents=True)
    deploy = shop.dir / "deploy.yaml"
    deploy.write_text(without_dev(deploy.read_text()).replace(
        "    type: node\n", "    type: generic\n    dev:\n      test: \"printf '<%s>' $ARGS\"\n"
                           "      fmt: \"echo \\\"$(basename \\\"$PWD\\\")\\\" | tr a-z A-Z\"\n").replace(
        "    path: services/web\n", f"    path: \"{odd}\"\n"))
    assert forgegen("sync", cwd=shop.dir).returncode == 0
    shop.commit("odd dev apps")
    proc = shop.run_app("test:web", "c d", env={"ARGS": "a b"})
    assert proc.stdout == "<a><b><c d>"
    assert shop.run_app("fmt:web").stdout == "$WEB `X` IT'S\n"
    missing = shop.run_app("lint:web", check=False)
    assert missing.returncode == 2 and "services.web.dev.lint" in missing.stderr
