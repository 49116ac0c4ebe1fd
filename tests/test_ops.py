"""`nix run .#reconcile:E`, `.#reconcile:S:E` and `.#migrate:S:E` end to end: the example through real
Nix, a real GitOps remote, Flux simulated on the Kubernetes stand-in (real git and kustomize),
migration Jobs run by the stand-in's Job controller and kubelet."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.fixtures.shop import ShopCluster
from tests.kube_standin import completes

pytestmark = [pytest.mark.nix, pytest.mark.kube, pytest.mark.registry]


def push_to_remote(c: ShopCluster, rel: str, text: str, message: str) -> str:
    """Commit one file to the GitOps remote (as a colleague would) and return the new head."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "w"
        subprocess.run(["git", "clone", "-q", str(c.remote), str(work)], check=True)
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
        subprocess.run(["git", "add", "-A"], cwd=work, check=True)
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], cwd=work,
                       check=True)
        subprocess.run(["git", "push", "-q", "origin", "HEAD:main"], cwd=work, check=True)
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True,
                              check=True).stdout.strip()


def applied(c: ShopCluster, name: str = "apps-staging") -> str:
    return (c.flux("Kustomization", name) or {}).get("status", {}).get("lastAppliedRevision") or ""


def test_reconcile_environment_applies_the_gitops_head_and_reports_it(shop_cluster: ShopCluster) -> None:
    c = shop_cluster
    head = push_to_remote(c, "clusters/staging/notes.md", "a note Flux does not apply\n", "docs: a note")
    assert not applied(c).endswith(head)  # Flux's interval is 10m: nothing happened yet
    proc = c.run("reconcile:staging", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["command"] == "reconcile" and report["environment"] == "staging" and report["outcome"] == "success"
    [rec] = report["reconciles"]  # api and web share one Flux source and Kustomization: reconciled once
    assert rec["commit"] == head and rec["kustomizations"] == ["apps-staging"]
    assert rec["result"]["outcome"] == "success" and rec["result"]["revision"] == f"main@sha1:{head}"
    assert rec["result"]["requests"]  # the reconcile.fluxcd.io/requestedAt annotations sent
    assert applied(c) == f"main@sha1:{head}"
    assert f"forge reconcile staging: success (main@sha1:{head})" in proc.stderr


def test_reconcile_service_fails_with_flux_evidence_on_a_broken_commit(shop_cluster: ShopCluster) -> None:
    c = shop_cluster
    head = push_to_remote(c, "clusters/staging/api/kustomization.yaml", "resources: [missing.yaml]\n", "break api")
    proc = c.run("reconcile:api:staging", "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["outcome"] == "failed" and report["target"] == "api:staging"
    [rec] = report["reconciles"]
    assert rec["commit"] == head and rec["result"]["outcome"] == "failed"
    assert rec["result"]["kustomizations"][0]["ready"] == "False"
    assert "reconcile of api:staging failed" in proc.stderr and "apps-staging" in proc.stderr


def test_reconcile_dry_run_and_bad_input(shop_cluster: ShopCluster) -> None:
    c = shop_cluster
    proc = c.run("reconcile:api:staging", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["dry_run"] is True and doc["revision"] == "head"
    [step] = doc["steps"]
    assert step["step"] == "reconcile" and step["details"]["kustomizations"] == ["apps-staging"]
    bad = c.run("reconcile:staging", "--revision", "not-a-sha")
    assert bad.returncode == 2 and "--revision 'not-a-sha' is not a commit SHA" in bad.stderr


def test_migrate_runs_the_job_once_and_skips_it_when_rerun(shop_cluster: ShopCluster) -> None:
    c = shop_cluster
    dry = c.run("migrate:api:staging", "--tag", "amd64-1234567", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert '"name": "api-migrate-schema-amd64-1234567"' in dry.stdout and '"backoffLimit": 0' in dry.stdout
    assert c.kube.standin.list("jobs", "shop") == []  # the dry run created nothing
    first = c.run("migrate:api:staging", "--tag", "amd64-1234567", "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    [m] = report["migrations"]
    assert report["outcome"] == "success" and m["already_done"] is False
    assert m["job"] == "shop/Job/api-migrate-schema-amd64-1234567" and m["image"] == f"{c.image('api')}:amd64-1234567"
    again = c.run("migrate:api:staging", "--tag", "amd64-1234567", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["migrations"][0]["already_done"] is True
    [job] = c.kube.standin.list("jobs", "shop")
    assert len(c.kube.standin.list("pods", "shop", label_selector=f"job-name={job['metadata']['name']}")) == 1


def test_migrate_failure_exits_1_with_the_logs_and_no_migrations_exits_2(shop_cluster: ShopCluster) -> None:
    c = shop_cluster
    c.kube.script(f"{c.image('api')}:amd64-7654321", completes(exit_code=3, exit_logs=("ERROR: relation exists",)))
    proc = c.run("migrate:api:staging", "--tag", "amd64-7654321", "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["outcome"] == "failed" and report["migrations"][0]["exit_code"] == 3
    assert "| ERROR: relation exists" in proc.stderr
    web = c.run("migrate:web:staging", "--tag", "amd64-7654321")
    assert web.returncode == 2 and "service web has no migrations" in web.stderr
