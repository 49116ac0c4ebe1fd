"""`forgegen import OLD_DEPLOY_YAML…`: the per-service files of the tool Forge replaces → one deploy.yaml."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from forgegen.schema import load_config

API = """\
# api: deployed by the old tool (per-service deploy.yaml)
service:
  name: api
  type: rust
registry:
  host: ghcr.io
  organization: acme
  project: shop
cache:
  server: https://attic.acme.dev
  name: shop
manifests:
  kustomization: deploy/api/overlays/production
"""

WEB = """\
service:
  name: web
  type: typescript
registry: {host: ghcr.io, organization: acme, project: shop}
cache: {server: https://attic.acme.dev, name: shop}
manifests: {kustomization: deploy/web/overlays/staging/kustomization.yaml}
"""

WORKER = """\
service: {name: worker, type: elixir}
registry: {host: registry.acme.dev, organization: acme, project: shop}
cache: {server: acme, name: shop}
manifests: {kustomization: k8s/worker}
"""


def forgegen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forgegen", *args], cwd=cwd, capture_output=True, text=True)


def old_files(tmp_path: Path, **files: str) -> list[str]:
    for name, text in files.items():
        (tmp_path / "services" / name).mkdir(parents=True)
        (tmp_path / "services" / name / "deploy.yaml").write_text(text)
    return [f"services/{n}/deploy.yaml" for n in files]


def test_two_consistent_services_carry_over_registry_cache_paths_and_environments(tmp_path: Path) -> None:
    files = old_files(tmp_path, api=API, web=WEB)
    proc = forgegen("import", *files, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    text = (tmp_path / "deploy.yaml").read_text()
    config = load_config(tmp_path / "deploy.yaml")
    assert config.project == "shop"
    assert (config.registry.host, config.registry.organization) == ("ghcr.io", "acme")
    assert config.attic is not None and (config.attic.endpoint, config.attic.cache) == ("https://attic.acme.dev", "shop")
    assert config.gitops.path == "deploy/{service}/overlays/{environment}"
    assert [e.name for e in config.environments] == ["staging", "production"]
    assert config.services["api"].type == "rust" and config.services["api"].path == "services/api"
    assert config.services["web"].type == "node" and config.services["web"].environments == ("staging",)
    assert "api:  # from services/api/deploy.yaml" in text
    assert "project: shop  # from registry.project" in text
    assert text.count("# DECIDE:") == len(report["decide"]) == 3  # image_name, gitops.repo, flux
    assert "gitops.repo: the GitOps repository Flux follows" in report["decide"]
    assert forgegen("check", cwd=tmp_path).returncode == 0


def test_disagreements_and_unknowns_are_marked_for_a_decision(tmp_path: Path) -> None:
    files = old_files(tmp_path, api=API, worker=WORKER)
    proc = forgegen("import", *files, "-o", "-", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert not (tmp_path / "deploy.yaml").exists()
    assert "registry.host: the old files disagree (ghcr.io, registry.acme.dev)" in proc.stderr
    assert "cache.server: the old files disagree (acme, https://attic.acme.dev)" in proc.stderr
    assert "type: generic  # DECIDE: old type 'elixir' has no Forge builder" in text
    assert "DECIDE: the old paths follow no one pattern (api: deploy/api/overlays/production; worker: k8s/worker)" \
        in text
    (tmp_path / "deploy.yaml").write_text(text)
    assert forgegen("check", cwd=tmp_path).returncode == 0


def test_bad_old_files_exit_2_with_every_problem_and_write_nothing(tmp_path: Path) -> None:
    files = old_files(tmp_path, api=API.replace("name: api", "name: Api_1"), web="registry: [ghcr.io]\n")
    proc = forgegen("import", *files, cwd=tmp_path)
    assert proc.returncode == 2
    assert "services/api/deploy.yaml" in proc.stderr and "service.name 'Api_1' is not a DNS label" in proc.stderr
    assert "services/web/deploy.yaml" in proc.stderr and "missing `service:`" in proc.stderr
    assert not (tmp_path / "deploy.yaml").exists()
    good = old_files(tmp_path / "x", api=API)
    (tmp_path / "x" / "deploy.yaml").write_text("keep me\n")
    proc = forgegen("import", *good, cwd=tmp_path / "x")
    assert proc.returncode == 2 and "deploy.yaml exists; pass --force" in proc.stderr
    assert (tmp_path / "x" / "deploy.yaml").read_text() == "keep me\n"
    dup = forgegen("import", good[0], good[0], "-o", "-", cwd=tmp_path / "x")
    assert dup.returncode == 2 and "service api is described by more than one file" in dup.stderr
