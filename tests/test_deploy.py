"""`nix run .#deploy:…` end to end: real Nix build, real registry push, real GitOps commit,
Flux (simulated on the Kubernetes stand-in, with real git and kustomize) applies it, the rollout
is watched through the real kubernetes client. Also rollback and status.

Tests marked ``BOTH_BACKENDS`` run twice: on the stand-in and on the real control plane (real
kube-apiserver, controller-manager, scheduler, source- and kustomize-controller; Forge as a user
bound only to examples/rbac/forge.yaml)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.fixtures.kube import wait_until
from tests.fixtures.shop import BOTH_BACKENDS, ShopCluster, StandinBackend
from tests.kube_standin import crash

pytestmark = [pytest.mark.nix, pytest.mark.kube, pytest.mark.registry]


def head_sha(shop_cluster: ShopCluster) -> str:
    return subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=shop_cluster.shop.dir, capture_output=True,
                          text=True, check=True).stdout.strip()


@BOTH_BACKENDS
def test_deploy_pushes_commits_reconciles_and_rolls_out(shop_cluster: ShopCluster) -> None:
    sha = head_sha(shop_cluster)
    proc = shop_cluster.run("deploy:api:staging", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    tag = f"amd64-{sha}"
    image = f"{shop_cluster.image('api')}:{tag}"
    assert report["outcome"] == "success"
    assert report["image"] == image
    assert report["push"]["deploy_tag"] == tag and report["digest"].startswith("sha256:")
    commit = report["gitops"]["commit"]
    assert commit and report["gitops"]["previous_tag"] == "amd64-0000000"
    assert f"newTag: {tag}" in shop_cluster.remote_file("clusters/staging/api/kustomization.yaml")
    assert shop_cluster.remote_log("clusters/staging/api/kustomization.yaml")[0] == f"deploy(api): staging → {tag}"
    assert report["reconcile"]["outcome"] == "success"
    assert report["reconcile"]["revision"] == f"{shop_cluster.branch}@sha1:{commit}"
    assert report["rollout"]["outcome"] == "success"
    assert shop_cluster.running_image("api") == image
    ks = shop_cluster.flux("Kustomization", "apps-staging")
    assert ks["status"]["lastAppliedRevision"] == f"{shop_cluster.branch}@sha1:{commit}"
    assert "forge deploy api:staging: success" in proc.stderr


@BOTH_BACKENDS
def test_deploying_the_same_tag_again_commits_nothing_and_verifies(shop_cluster: ShopCluster) -> None:
    first = json.loads(shop_cluster.run("deploy:api", "--json").stdout)
    again = shop_cluster.run("deploy:api", "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["gitops"]["changed"] is False and report["gitops"]["commit"] is None
    assert report["gitops"]["revision"] == first["gitops"]["commit"]
    assert report["reconcile"]["outcome"] == "success"
    assert report["rollout"]["outcome"] == "success"
    assert len(shop_cluster.remote_log("clusters/staging/api/kustomization.yaml")) == 2


@BOTH_BACKENDS
def test_crash_looping_image_fails_fast_with_reason_and_logs_and_rolls_back(shop_cluster: ShopCluster) -> None:
    sha = head_sha(shop_cluster)
    bad = f"{shop_cluster.image('api')}:amd64-{sha}"
    shop_cluster.script(bad, crash(exit_code=3, logs=["api: connecting to db", "api: fatal: no DATABASE_URL"]))
    proc = shop_cluster.run("deploy:api", "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["outcome"] == "failed" and report["failed_step"] == "rollout"
    rollout = report["rollout"]
    assert rollout["reason"] in ("CrashLoopBackOff", "ContainerExited")
    assert rollout["exit_code"] == 3
    assert "api: fatal: no DATABASE_URL" in rollout["logs"]["current"] + rollout["logs"]["previous"]
    # rollback_on_failure is on for api in the example: the previous tag is back in git and running.
    assert report["rollback"]["to"] == "amd64-0000000"
    assert report["rollback"]["outcome"] == "success"
    assert "newTag: amd64-0000000" in shop_cluster.remote_file("clusters/staging/api/kustomization.yaml")
    assert shop_cluster.running_image("api") == f"{shop_cluster.image('api')}:amd64-0000000"
    assert "rollout failed" in proc.stderr or "CrashLoopBackOff" in proc.stderr


@BOTH_BACKENDS
def test_rollback_goes_to_the_previous_distinct_tag_from_the_ledger(shop_cluster: ShopCluster) -> None:
    first = json.loads(shop_cluster.run("deploy:api", "--json").stdout)
    # A second source commit gives a second tag.
    app = shop_cluster.shop.dir / "services" / "api" / "api" / "app.py"
    app.write_text(app.read_text() + "# v2\n")
    shop_cluster.shop.commit("api v2")
    second = json.loads(shop_cluster.run("deploy:api", "--json").stdout)
    assert second["outcome"] == "success"
    proc = shop_cluster.run("rollback:api:staging", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["from"] == second["push"]["deploy_tag"]
    assert report["to"] == first["push"]["deploy_tag"]
    assert report["digest"] == first["digest"]
    assert shop_cluster.running_image("api") == first["image"]


def test_rollback_refuses_a_tag_the_registry_does_not_have(shop_cluster: ShopCluster) -> None:
    before = shop_cluster.remote_file("clusters/staging/api/kustomization.yaml")
    proc = shop_cluster.run("rollback:api:staging", "--to", "amd64-fffffff")
    assert proc.returncode == 1
    assert "the registry has no such tag" in proc.stderr
    assert shop_cluster.remote_file("clusters/staging/api/kustomization.yaml") == before


@BOTH_BACKENDS
def test_status_shows_git_cluster_and_flux(shop_cluster: ShopCluster) -> None:
    deployed = json.loads(shop_cluster.run("deploy:api", "--json").stdout)
    proc = shop_cluster.run("status:api", "--json")
    doc = json.loads(proc.stdout)
    rows = {r["environment"]: r for r in doc["services"]}
    staging = rows["staging"]
    assert staging["git"]["tag"] == deployed["push"]["deploy_tag"]
    assert staging["workload"]["image"] == deployed["image"]
    assert staging["workload"]["ready"] == staging["workload"]["desired"] == 1
    assert staging["flux"]["ready"] is True
    assert staging["healthy"] is True
    # production's Flux objects do not exist on this stand-in: that row is not healthy, so exit 1.
    assert rows["production"]["healthy"] is False
    assert proc.returncode == 1
    table = shop_cluster.run("status:api", "--environments", "staging")
    assert table.returncode == 0, table.stderr
    assert "GIT TAG" in table.stdout and deployed["push"]["deploy_tag"] in table.stdout
    assert "production" not in table.stdout


def test_unreachable_cluster_fails_before_anything_is_pushed(shop_cluster: ShopCluster) -> None:
    before = shop_cluster.remote_file("clusters/staging/api/kustomization.yaml")
    proc = shop_cluster.run("deploy:api", "--json", env={"KUBECONFIG": str(shop_cluster.shop.dir / "missing")})
    assert proc.returncode == 2, proc.stderr
    assert "no Kubernetes connection configured" in proc.stderr
    assert shop_cluster.remote_file("clusters/staging/api/kustomization.yaml") == before


@BOTH_BACKENDS
def test_pin_digest_deploys_name_tag_at_digest(shop_cluster: ShopCluster) -> None:
    proc = shop_cluster.run("deploy:api", "--pin-digest", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    manifest = shop_cluster.remote_file("clusters/staging/api/kustomization.yaml")
    assert f"digest: {report['digest']}" in manifest and f"newTag: {report['push']['deploy_tag']}" in manifest
    assert shop_cluster.running_image("api") == f"{report['image']}@{report['digest']}"
    assert report["rollout"]["outcome"] == "success"


def test_kustomization_not_ready_fails_at_reconcile_with_fluxs_reason(shop_cluster: ShopCluster) -> None:
    shop_cluster.kube.standin.call(lambda: shop_cluster.sim.set_script(failures={
        "apps-staging": ("HealthCheckFailed", "Deployment/shop/api status: 'InProgress'")}))
    proc = shop_cluster.run("deploy:api", "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["outcome"] == "failed" and report["failed_step"] == "reconcile"
    assert report["error"]["type"] == "ReconcileError"
    assert "HealthCheckFailed" in report["error"]["message"]
    assert report["reconcile"]["outcome"] == "failed"
    assert "rollout" not in report  # nothing was watched: the report stops where the deploy stopped
    assert report["gitops"]["commit"]  # and says what was already done
    assert "failed at reconcile" in proc.stderr and "flux-system/Kustomization/apps-staging" in proc.stderr


def test_unreachable_gitops_remote_fails_at_gitops_and_changes_nothing(shop_cluster: ShopCluster) -> None:
    applied = shop_cluster.flux("Kustomization", "apps-staging")["status"]["lastAppliedRevision"]
    moved = shop_cluster.remote.with_name("gitops-moved.git")
    shop_cluster.remote.rename(moved)
    proc = shop_cluster.run("deploy:api", "--json")
    moved.rename(shop_cluster.remote)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["failed_step"] == "gitops" and report["error"]["type"] == "GitOpsError"
    assert "push" in report and "reconcile" not in report
    assert shop_cluster.remote_log("clusters/staging/api/kustomization.yaml") == ["initial"]
    assert shop_cluster.flux("Kustomization", "apps-staging")["status"]["lastAppliedRevision"] == applied


@BOTH_BACKENDS
def test_status_after_pin_digest_is_healthy(shop_cluster: ShopCluster) -> None:
    """Issue 19: `forge status` judged `repo:tag@sha256:…` unhealthy (it compared `endswith(":tag")`)."""
    proc = shop_cluster.run("deploy:api", "--pin-digest", "--json")
    assert proc.returncode == 0, proc.stderr
    status = shop_cluster.run("status:api", "--environments", "staging", "--json")
    doc = json.loads(status.stdout)
    row = doc["services"][0]
    assert row["git"]["digest"] == json.loads(proc.stdout)["digest"]
    assert row["healthy"] is True, row
    assert status.returncode == 0, status.stderr


REAL_ONLY = pytest.mark.parametrize("backend", [pytest.param("real", marks=pytest.mark.realplane)], indirect=True)


@REAL_ONLY
def test_without_the_forge_role_the_deploy_stops_at_reconcile_with_an_rbac_hint(shop_cluster: ShopCluster) -> None:
    """The stand-in authorizes everyone; a real API server refuses a user without the Role."""
    plane = shop_cluster.backend.plane
    unbound = plane.user_kubeconfig("forge-unbound", namespace=shop_cluster.ns("shop"))
    proc = shop_cluster.run("deploy:api", "--json", env={"KUBECONFIG": str(unbound)})
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["failed_step"] == "reconcile" and report["error"]["type"] == "ReconcileError"
    message = report["error"]["message"]
    assert "403" in message and "did not allow" in message and "cannot reach" not in message
    assert "forge-unbound" in message  # who was refused, as the API server says
    assert "examples/rbac/forge.yaml" in report["error"]["hint"]


def wait_for_health_checks(shop_cluster: ShopCluster, name: str, timeout: str) -> None:
    """Turn on `spec.wait` (with `spec.timeout`) on a Kustomization, and wait until Flux has run
    its health checks once with it."""
    backend, spec = shop_cluster.backend, {"wait": True, "timeout": timeout}
    flux_ns, real_name = shop_cluster.ns("flux-system"), backend.flux_names.get(name, name)
    if isinstance(backend, StandinBackend):
        shop_cluster.kube.standin.mutate("kustomizations", flux_ns, real_name, lambda o: o["spec"].update(spec))
    elif hasattr(backend, "plane"):  # ours: as the admin
        backend.plane.kubectl("-n", flux_ns, "patch", "kustomization", real_name, "--type=merge",
                              "-p", json.dumps({"spec": spec}))
    else:  # a user's cluster (tests/external_shop.py): this test's own Kustomization, as its admin
        from forgegen.runtime import kubeapi

        kubeapi.CustomObjectsApi(backend.api).patch_namespaced_custom_object(
            "kustomize.toolkit.fluxcd.io", "v1", flux_ns, "kustomizations", real_name, {"spec": spec},
            _content_type="application/merge-patch+json")

    def checked() -> bool:
        ks = shop_cluster.flux("Kustomization", name) or {}
        st = ks.get("status") or {}
        true = {c.get("type") for c in st.get("conditions") or [] if c.get("status") == "True"}
        return {"Ready", "Healthy"} <= true and st.get("observedGeneration") == ks["metadata"]["generation"]
    wait_until(checked, timeout=120, interval=0.2)


@BOTH_BACKENDS
def test_with_flux_health_checks_a_crash_loop_still_fails_fast_at_the_rollout(shop_cluster: ShopCluster) -> None:
    """kustomize-controller with `spec.wait: true` applies our commit, then runs its health checks,
    and writes Ready and lastAppliedRevision only when they end (a crash-looping Deployment: at
    spec.timeout, or its 600 s progress deadline). Forge moves on when the health checks of our
    commit begin, and its rollout watch fails fast with the pod's reason, not a reconcile timeout
    or Flux's bare HealthCheckFailed. The rollback waits for Flux to give up on the bad commit
    (spec.timeout) and apply the previous tag."""
    wait_for_health_checks(shop_cluster, "apps-staging", "15s")
    sha = head_sha(shop_cluster)
    bad = f"{shop_cluster.image('api')}:amd64-{sha}"
    shop_cluster.script(bad, crash(exit_code=3, logs=["api: fatal: no DATABASE_URL"]))
    proc = shop_cluster.run("deploy:api", "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["failed_step"] == "rollout", report.get("error")
    assert report["reconcile"]["outcome"] == "success"
    assert report["reconcile"]["health_checks_running"] == [shop_cluster.backend.flux_names.get("apps-staging",
                                                                                               "apps-staging")]
    assert report["reconcile"]["revision"].endswith(report["gitops"]["commit"])
    assert report["rollout"]["reason"] in ("CrashLoopBackOff", "ContainerExited") and report["rollout"]["exit_code"] == 3
    assert report["rollback"]["outcome"] == "success"
    assert shop_cluster.running_image("api") == f"{shop_cluster.image('api')}:amd64-0000000"


# What `--dry-run` lists (steps.describe) grouped into the steps deploy runs and reports.
_PHASE = {"build": "push", "cache-push": "push", "push": "push", "push-index": "push", "verify": "push",
          "gitops-edit": "gitops", "gitops-check": "gitops", "gitops-push": "gitops",
          "reconcile": "reconcile", "rollout": "rollout"}


@pytest.mark.parametrize("backend", ["standin"], indirect=True)
def test_dry_run_lists_what_deploy_then_does(shop_cluster: ShopCluster) -> None:
    """`--dry-run` is a second description of deploy: it names the steps the real run executes,
    in order, with the values the real run uses (tag, image, manifest, commit message, objects)."""
    dry = shop_cluster.run("deploy:api:staging", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    steps = json.loads(dry.stdout)["steps"]
    proc = shop_cluster.run("deploy:api:staging", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    executed = [k.removesuffix("_seconds") for k in report["timings"] if k != "total_seconds"]
    described = [s["step"] for s in steps if s["step"] != "rollback-on-failure"]  # runs only on a failed rollout
    assert set(described) <= set(_PHASE), f"a described step deploy does not run: {set(described) - set(_PHASE)}"
    assert set(_PHASE[s] for s in described) == set(executed)
    # the order: deploy's progress lines are prefixed by the step that prints them
    said = [m.group(1) for m in re.finditer(r"^(push|gitops|flux|rollout): ", proc.stderr, re.MULTILINE)]
    ran = [{"flux": "reconcile"}.get(p, p) for p in dict.fromkeys(said)]
    assert list(dict.fromkeys(_PHASE[s] for s in described)) == ran, proc.stderr
    by_name = {s["step"]: s for s in steps}
    tag = report["push"]["deploy_tag"]
    assert tag in by_name["push"]["details"]["tags"]
    assert by_name["gitops-edit"]["details"]["tag"] == tag
    assert by_name["gitops-edit"]["details"]["file"] == report["gitops"]["file"]
    assert by_name["gitops-push"]["details"]["message"] == report["gitops"]["message"]
    assert report["image"] in by_name["rollout"]["summary"]
    flux = by_name["reconcile"]["details"]
    assert [k["name"] for k in report["reconcile"]["kustomizations"]] == flux["kustomizations"]
