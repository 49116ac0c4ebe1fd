"""`nix run .#release` end to end: real Nix builds, real registry, real GitOps commits, Flux
(simulated on the Kubernetes stand-in, with real git and kustomize), migration Jobs run by the
stand-in's Job controller and kubelet, HTTP checks against a real local server.

On the real control plane (``backend`` "real", tests/fixtures/shop.py) the same tests run against
kube-apiserver, the real Job and Deployment controllers and real Flux, each in its own namespaces.

The example's production points at the same single stand-in as staging, so these tests give
production its own namespace (``shop-production``) in deploy.yaml and in the GitOps overlays,
and run Flux's ``apps-production`` Kustomization too.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest

from tests.fixtures.health import Health
from tests.fixtures.kube import wait_until
from tests.fixtures.nixenv import Flake, tool_path
from tests.fixtures.shop import BOTH_BACKENDS, ShopCluster, api_and_web_only, shop_cluster_on, without_dev
from tests.kube_standin import completes, crash

pytestmark = [pytest.mark.nix, pytest.mark.kube, pytest.mark.registry]

PRODUCTION_NS = "shop-production"
API_KUSTOMIZATION = "clusters/{env}/api/kustomization.yaml"


MIGRATIONS = "    migrations:\n      - name: schema\n        command: [api, migrate]\n"


@pytest.fixture
def migrations() -> bool:
    """Whether api keeps its migration (a test that scripts api's image to crash drops it: the
    migration Job runs the same image)."""
    return True


@pytest.fixture
def independent() -> bool:
    """Whether web drops its depends_on: [api] (so the two deploy in parallel)."""
    return False


@pytest.fixture
def dev_tests() -> dict[str, str | dict[str, str]]:
    """Per service, services.S.dev.test (a string) or dev settings (levels, base_url: a mapping);
    the type's default levels stay for those not given."""
    return {}


@pytest.fixture
def release_cluster(backend: str, request: pytest.FixtureRequest, shop: Flake, tmp_path: Path,
                    health: Health, migrations: bool, independent: bool,
                    dev_tests: dict[str, str | dict[str, str]]) -> Iterator[ShopCluster]:
    def edit_deploy(text: str) -> str:
        text = api_and_web_only(text)
        if dev_tests:
            text = without_dev(text)
        for svc, settings in dev_tests.items():
            at = f"    path: services/{svc}\n"
            assert at in text
            dev = {"test": settings} if isinstance(settings, str) else settings
            text = text.replace(at, at + "    dev:\n" + "".join(f"      {k}: {json.dumps(v)}\n" for k, v in dev.items()))
        if independent:
            assert "    depends_on: [api]\n" in text
            text = text.replace("    depends_on: [api]\n", "")
        staging, _, production = text.partition("  - name: production\n")
        production = production.replace("    namespace: shop\n", f"    namespace: {PRODUCTION_NS}\n", 1)
        text = staging + "  - name: production\n" + production
        if not migrations:
            assert MIGRATIONS in text
            text = text.replace(MIGRATIONS, "")
        return text.replace("http://api.shop.svc/healthz", health.url)

    def edit_gitops(rel: Path, text: str) -> str:
        if rel.parts[:2] == ("clusters", "production"):
            text = text.replace("namespace: shop\n", f"namespace: {PRODUCTION_NS}\n")
        return text

    with shop_cluster_on(backend, request, shop, None, tmp_path, environments=("staging", "production"),
                         edit_deploy=edit_deploy, edit_gitops=edit_gitops) as cluster:
        yield cluster


def head_sha(cluster: ShopCluster) -> str:
    return subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=cluster.shop.dir, capture_output=True,
                          text=True, check=True).stdout.strip()


def jobs(cluster: ShopCluster, namespace: str) -> list[dict]:
    return cluster.list("jobs", namespace)


def registry_has(cluster: ShopCluster, service: str, tag: str) -> bool:
    req = urllib.request.Request(f"{cluster.registry.url}/v2/shop/{service}/manifests/{tag}", method="HEAD",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    try:
        with urllib.request.urlopen(req, timeout=10):
            return True
    except urllib.error.HTTPError as err:
        assert err.code == 404, err
        return False


def service_entry(report: dict, env: str, service: str) -> dict:
    stage = next(s for s in report["stages"] if s["environment"] == env)
    return next(e for e in stage["services"] if e["service"] == service)


@BOTH_BACKENDS
def test_release_goes_through_staging_then_production_with_migrations_checks_and_gates(
        release_cluster: ShopCluster, health: Health) -> None:
    c = release_cluster
    tag = f"amd64-{head_sha(c)}"
    proc = c.run("release", "--yes", "--json", stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["outcome"] == "success" and report["failed"] is None and report["not_done"] == []
    assert report["environments"] == ["staging", "production"]
    assert report["services"] == ["api", "web"]  # web depends on api
    assert report["approvals"] == {"staging": "not required", "production": "--yes"}
    assert set(report["push"]) == {"api", "web"}  # each image pushed once
    assert report["images"]["api"] == f"{c.image('api')}:{tag}"
    for env, ns in (("staging", "shop"), ("production", PRODUCTION_NS)):
        stage = next(s for s in report["stages"] if s["environment"] == env)
        assert stage["outcome"] == "success"
        assert [e["service"] for e in stage["services"]] == ["api", "web"]
        assert stage["gate"]["outcome"] == "passed"
        assert stage["gate"]["services"]["api"] == {**stage["gate"]["services"]["api"], "healthy": True, "verified": True}
        api = service_entry(report, env, "api")
        [migration] = api["migrations"]
        assert migration["outcome"] == "success" and migration["already_done"] is False
        assert migration["job"] == f"{c.ns(ns)}/Job/api-migrate-schema-{tag}"
        assert api["deploy"]["outcome"] == "success"
        assert api["deploy"]["gitops"]["commit"] and api["deploy"]["rollout"]["outcome"] == "success"
        assert api["deploy"]["reconcile"]["revision"].endswith(api["deploy"]["gitops"]["revision"])
        [check] = api["checks"]
        assert check["name"] == "health" and check["outcome"] == "passed" and check["target"] == health.url
        web = service_entry(report, env, "web")
        assert web["migrations"] == [] and web["checks"] == [] and web["deploy"]["outcome"] == "success"
        # git: both services' tags committed for the environment
        for svc in ("api", "web"):
            assert f"newTag: {tag}" in c.remote_file(f"clusters/{env}/{svc}/kustomization.yaml")
            assert c.remote_log(f"clusters/{env}/{svc}/kustomization.yaml")[0] == f"deploy({svc}): {env} → {tag}"
            # cluster: the Deployments run the new images
            assert c.running_image(svc, ns) == f"{c.image(svc)}:{tag}"
        [job] = jobs(c, ns)
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == f"{c.image('api')}:{tag}"
        assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["api", "migrate"]
        assert any(cond["type"] == "Complete" and cond["status"] == "True" for cond in job["status"]["conditions"])
    assert health.hits == 2  # one check per environment
    assert "release: staging: gate passed" in proc.stderr
    assert f"forge release shop: success (staging, production; api:{tag}, web:{tag})" in proc.stderr


@BOTH_BACKENDS
def test_a_failing_migration_stops_before_the_gitops_commit_and_shows_the_logs(release_cluster: ShopCluster) -> None:
    c = release_cluster
    tag = f"amd64-{head_sha(c)}"
    c.script(f"{c.image('api')}:{tag}", completes(exit_code=2, logs=("api: applying 0042_add_email",),
                                                       exit_logs=("ERROR: column \"email\" already exists",)))
    before = c.remote_log(API_KUSTOMIZATION.format(env="staging"))
    proc = c.run("release", "--yes", "--json", stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["outcome"] == "failed"
    assert report["failed"] == {"environment": "staging", "service": "api", "step": "migrate:schema"}
    api = service_entry(report, "staging", "api")
    [migration] = api["migrations"]
    assert migration["outcome"] == "failed" and migration["exit_code"] == 2
    assert migration["reason"] == "BackoffLimitExceeded"
    assert migration["logs"] == ["api: applying 0042_add_email", 'ERROR: column "email" already exists']
    assert api["deploy"] is None and api["checks"] == []
    # nothing was committed: the GitOps history and the cluster are as before
    assert c.remote_log(API_KUSTOMIZATION.format(env="staging")) == before
    assert "newTag: amd64-0000000" in c.remote_file(API_KUSTOMIZATION.format(env="staging"))
    assert c.running_image("api") == f"{c.image('api')}:amd64-0000000"
    assert {"environment": "staging", "service": "api", "steps": ["deploy", "check:health"]} in report["not_done"]
    assert {"environment": "staging", "service": "web", "steps": ["deploy"]} in report["not_done"]
    assert {"environment": "production", "service": "api", "steps": ["migrate:schema", "deploy", "check:health"]} \
        in report["not_done"]
    assert jobs(c, PRODUCTION_NS) == []
    assert "stopped at staging / api / migrate:schema" in proc.stderr
    assert '| ERROR: column "email" already exists' in proc.stderr
    assert "not done: production/api: migrate:schema, deploy, check:health" in proc.stderr


def test_a_failing_check_stops_the_release_before_production(release_cluster: ShopCluster, health: Health) -> None:
    c = release_cluster
    tag = f"amd64-{head_sha(c)}"
    health.statuses = [503]
    before = c.remote_log(API_KUSTOMIZATION.format(env="production"))
    proc = c.run("release", "--yes", "--json", stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["failed"] == {"environment": "staging", "service": "api", "step": "check:health"}
    api = service_entry(report, "staging", "api")
    assert api["deploy"]["outcome"] == "success"  # deployed, but not verified
    [check] = api["checks"]
    assert check["outcome"] == "failed" and check["attempts"] == 4  # 1 + retries (3)
    assert check["last_error"] == f"GET {health.url}: HTTP 503, expected 200"
    staging = report["stages"][0]
    assert staging["outcome"] == "failed" and staging["gate"]["outcome"] == "not evaluated"
    assert [s["environment"] for s in report["stages"]] == ["staging"]  # production never started
    assert {"environment": "production", "service": None, "steps": ["gate"]} in report["not_done"]
    assert f"newTag: {tag}" in c.remote_file(API_KUSTOMIZATION.format(env="staging"))
    assert c.remote_log(API_KUSTOMIZATION.format(env="production")) == before
    assert c.running_image("api", PRODUCTION_NS) == f"{c.image('api')}:amd64-0000000"
    assert jobs(c, PRODUCTION_NS) == []
    assert "stopped at staging / api / check:health" in proc.stderr and "not started: production" in proc.stderr


def test_approval_required_without_yes_and_without_a_terminal_exits_2_before_pushing(
        release_cluster: ShopCluster) -> None:
    c = release_cluster
    tag = f"amd64-{head_sha(c)}"
    before = c.remote_log(API_KUSTOMIZATION.format(env="staging"))
    proc = c.run("release", "--json", stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert "environment production requires approval" in proc.stderr
    assert "re-run with --yes" in proc.stderr
    error = json.loads(proc.stdout)["error"]  # with --json, the failure is the JSON document
    assert (error["kind"], error["exit_code"]) == ("ApprovalRequired", 2) and "--yes" in error["hint"]
    assert not registry_has(c, "api", tag) and not registry_has(c, "web", tag)
    assert c.remote_log(API_KUSTOMIZATION.format(env="staging")) == before
    assert jobs(c, "shop") == []
    # Promoting to production alone needs staging to run the tag already (exit 2, nothing pushed).
    alone = c.run("release", "--environments", "production", "--yes", stdin=subprocess.DEVNULL)
    assert alone.returncode == 2, alone.stderr
    assert f"cannot be promoted to production at {tag}: it is promoted from staging" in alone.stderr
    assert not registry_has(c, "api", tag)


@BOTH_BACKENDS
def test_rerunning_the_same_release_skips_the_succeeded_migration_job(release_cluster: ShopCluster) -> None:
    c = release_cluster
    first = c.run("release:api", "--environments", "staging", "--json", stdin=subprocess.DEVNULL)
    assert first.returncode == 0, first.stderr
    again = c.run("release:api", "--environments", "staging", "--json", stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["target"] == "api" and report["services"] == ["api"]
    api = service_entry(report, "staging", "api")
    [migration] = api["migrations"]
    assert migration["outcome"] == "success" and migration["already_done"] is True
    assert api["deploy"]["gitops"]["changed"] is False  # same tag: no new commit
    [job] = jobs(c, "shop")
    pods = c.list("pods", "shop", label_selector=f"job-name={job['metadata']['name']}")
    assert len(pods) == 1  # the Job ran once
    assert "already succeeded; skipped" in again.stderr


@pytest.mark.parametrize("migrations", [False])
@BOTH_BACKENDS
def test_a_failed_rollout_rolls_back_and_stops_before_production(release_cluster: ShopCluster, health: Health) -> None:
    c = release_cluster
    tag = f"amd64-{head_sha(c)}"
    c.script(f"{c.image('api')}:{tag}", crash(exit_code=3, exit_logs=("api: fatal: no DATABASE_URL",)))
    proc = c.run("release", "--yes", "--json", stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["failed"] == {"environment": "staging", "service": "api", "step": "deploy:rollout"}
    deploy = service_entry(report, "staging", "api")["deploy"]
    assert deploy["outcome"] == "failed" and deploy["rollout"]["exit_code"] == 3
    assert "api: fatal: no DATABASE_URL" in deploy["rollout"]["logs"]["current"] + deploy["rollout"]["logs"]["previous"]
    assert deploy["rollback"] == {**deploy["rollback"], "to": "amd64-0000000", "outcome": "success"}
    assert "newTag: amd64-0000000" in c.remote_file(API_KUSTOMIZATION.format(env="staging"))
    assert c.running_image("api") == f"{c.image('api')}:amd64-0000000"
    assert {"environment": "staging", "service": "api", "steps": ["check:health"]} in report["not_done"]
    assert [s["environment"] for s in report["stages"]] == ["staging"] and health.hits == 0


def test_the_api_going_away_mid_migration_is_exit_1_with_the_report(release_cluster: ShopCluster) -> None:
    import threading
    import time

    from tests.kube_standin import ImageScript

    c = release_cluster
    tag = f"amd64-{head_sha(c)}"
    c.kube.script(f"{c.image('api')}:{tag}", ImageScript(logs=("api: migrating",), completes_after=None))  # never finishes
    done: list[subprocess.CompletedProcess[str]] = []
    runner = threading.Thread(target=lambda: done.append(c.run("release", "--yes", "--json", stdin=subprocess.DEVNULL)),
                              daemon=True)
    runner.start()
    deadline = time.monotonic() + 600
    while not any(j["metadata"]["name"].startswith("api-migrate-schema") for j in jobs(c, "shop")):
        assert runner.is_alive() and time.monotonic() < deadline, done and done[0].stderr
        time.sleep(0.05)
    c.kube.standin.stop()
    runner.join(600)
    assert done, "forge release did not end after the API went away"
    proc = done[0]
    assert proc.returncode == 1, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["outcome"] == "failed"
    assert report["failed"] == {"environment": "staging", "service": "api", "step": "migrate:schema"}
    assert "Kubernetes API" in proc.stderr and "Traceback" not in proc.stderr


# -- the release lock (a Kubernetes Lease per product and environment) and --resume ----------------

LEASE = "forge-release-shop-staging"


def hold_lease(c: ShopCluster, holder: str, *, renewed: str = "now", duration: int = 30) -> None:
    from datetime import datetime, timedelta
    when = datetime.now(UTC) - (timedelta(hours=1) if renewed == "an hour ago" else timedelta())
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    c.kube.standin.create("leases", {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE, "namespace": "shop", "annotations": {"forge.dev/release": "shop by someone"}},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration, "acquireTime": stamp,
                 "renewTime": stamp}})


def lease(c: ShopCluster) -> dict | None:
    return c.kube.standin.get("leases", "shop", LEASE)


def test_a_release_exits_2_naming_the_holder_of_a_fresh_lease_and_takes_over_a_stale_one(
        release_cluster: ShopCluster, tmp_path: Path) -> None:
    c = release_cluster
    tag = f"amd64-{head_sha(c)}"
    env = {"FORGE_STATE_DIR": str(tmp_path / "state")}
    hold_lease(c, "forge@elsewhere/1234/abcdef")
    proc = c.run("release:api", "--environments", "staging", env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert f"another release holds shop/Lease/{LEASE}: forge@elsewhere/1234/abcdef (shop by someone)" in proc.stderr
    assert not registry_has(c, "api", tag)  # nothing pushed
    c.kube.standin.delete("leases", "shop", LEASE)
    hold_lease(c, "forge@crashed/99/000000", renewed="an hour ago")
    proc = c.run("release:api", "--environments", "staging", "--json", env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    [taken] = json.loads(proc.stdout)["locks"]
    assert taken["lease"] == f"shop/{LEASE}" and taken["taken_over_from"] == "forge@crashed/99/000000"
    assert "lock: took over" in proc.stderr
    spec = lease(c)["spec"]
    assert spec["holderIdentity"] is None  # given back at the end
    assert spec["leaseTransitions"] == 1


def test_two_concurrent_releases_are_serialised_by_the_lease(release_cluster: ShopCluster, tmp_path: Path) -> None:
    c = release_cluster
    hold_lease(c, "forge@gate/1/000000")  # both releases start while the Lease is held, so both wait
    procs = []
    for i in range(2):
        err = (tmp_path / f"release-{i}.err").open("w")
        procs.append((subprocess.Popen(
            ["nix", "run", ".#release", *c.shop.overrides(), "--", "--environments", "staging", "--json",
             "--lock-timeout", "600"], cwd=c.shop.dir, env={**os.environ, "PATH": tool_path(), **c.env,
                                                          "FORGE_STATE_DIR": str(tmp_path / f"state-{i}")},
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True), tmp_path / f"release-{i}.err"))
    c.kube.standin.wait_for(lambda _cl: all("is held by forge@gate/1/000000; waiting" in p.read_text()
                                            for _, p in procs) or None, timeout=300)
    c.kube.standin.delete("leases", "shop", LEASE)
    reports = []
    for proc, err in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.read_text()
        reports.append(json.loads(out))
    locks = sorted((r["locks"][0] for r in reports), key=lambda lk: lk["acquired_at"])
    first, second = locks
    assert first["released_at"] and first["released_at"] <= second["acquired_at"]  # never held together
    assert second["waited_for"] in ("forge@gate/1/000000", first["holder"])
    holders = {first["holder"], second["holder"]}
    assert len(holders) == 2
    assert {r["outcome"] for r in reports} == {"success"}


def test_resume_finishes_a_release_that_failed_half_way(release_cluster: ShopCluster, health: Health,
                                                        tmp_path: Path) -> None:
    c = release_cluster
    tag = f"amd64-{head_sha(c)}"
    env = {"FORGE_STATE_DIR": str(tmp_path / "state")}
    health.statuses = [503]  # api's check fails in staging: api deployed, web and production not done
    failed = c.run("release", "--yes", "--json", env=env, stdin=subprocess.DEVNULL)
    assert failed.returncode == 1, failed.stderr
    assert json.loads(failed.stdout)["failed"] == {"environment": "staging", "service": "api", "step": "check:health"}
    kept = tmp_path / "state" / "releases" / "shop.json"
    assert json.loads(kept.read_text())["outcome"] == "failed"
    commits = c.remote_log(API_KUSTOMIZATION.format(env="staging"))
    health.statuses = [200]
    health.hits = 0
    proc = c.run("release", "--yes", "--json", "--resume", env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["outcome"] == "success" and report["resumed_from"]["report"] == str(kept)
    assert report["resumed_from"]["failed"]["step"] == "check:health"
    assert {"environment": None, "service": "api", "steps": ["push"]} in report["skipped"]
    assert {"environment": "staging", "service": "api", "steps": ["migrate:schema", "deploy"]} in report["skipped"]
    api = service_entry(report, "staging", "api")
    assert api["deploy"]["resumed"] is True and api["checks"][0]["outcome"] == "passed"
    assert service_entry(report, "staging", "web")["deploy"]["outcome"] == "success"
    assert service_entry(report, "production", "api")["deploy"]["outcome"] == "success"
    assert c.remote_log(API_KUSTOMIZATION.format(env="staging")) == commits  # staging api not committed again
    assert c.running_image("web", PRODUCTION_NS) == f"{c.image('web')}:{tag}"
    assert health.hits == 2  # the check re-run in staging, then production's
    # a successful release leaves nothing to resume
    again = c.run("release", "--yes", "--resume", env=env, stdin=subprocess.DEVNULL)
    assert again.returncode == 2 and "did not fail" in again.stderr


@pytest.mark.parametrize("independent", [True])
def test_independent_services_deploy_in_parallel_and_a_failure_lets_the_running_one_finish(
        release_cluster: ShopCluster, tmp_path: Path) -> None:
    c = release_cluster
    tag = f"amd64-{head_sha(c)}"
    c.kube.script(f"{c.image('web')}:{tag}", crash(exit_code=1, exit_logs=("web: cannot bind :8080",)))
    proc = c.run("release", "--yes", "--json", "--concurrency", "2", env={"FORGE_STATE_DIR": str(tmp_path / "s")},
                 stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["concurrency"] == 2
    assert report["failed"] == {"environment": "staging", "service": "web", "step": "deploy:rollout"}
    staging = report["stages"][0]
    assert [e["service"] for e in staging["services"]] == ["api", "web"]  # dependency order, not finishing order
    api = service_entry(report, "staging", "api")
    assert api["outcome"] == "success" and api["checks"][0]["outcome"] == "passed"  # the running one finished
    assert c.running_image("api") == f"{c.image('api')}:{tag}"
    assert [s["environment"] for s in report["stages"]] == ["staging"]
    assert {"environment": "production", "service": None, "steps": ["gate"]} in report["not_done"]
    assert not any(d["service"] == "api" and d["environment"] == "staging" for d in report["not_done"])


# -- release stages: prerelease (--stage pre) and comprehensive-release (--stage comprehensive) -----

# Each test command proves where it ran and what it was told, in a file next to the shop.
RECORD = 'echo "$FORGE_SERVICE $(basename "$PWD") ${FORGE_ENVIRONMENT:-none}" >> ../../tests-ran.txt'


@BOTH_BACKENDS
@pytest.mark.parametrize("dev_tests", [{"api": RECORD, "web": RECORD}])
def test_prerelease_tests_pushes_deploys_the_first_environment_and_reports_what_is_ready_to_promote(
        release_cluster: ShopCluster, health: Health, tmp_path: Path) -> None:
    c = release_cluster
    tag = f"amd64-{head_sha(c)}"
    proc = c.run("prerelease", "--json", env={"FORGE_STATE_DIR": str(tmp_path / "s")}, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["stage"] == "pre" and report["outcome"] == "success"
    assert report["environments"] == ["staging"] and report["approvals"] == {"staging": "not required"}
    assert [(t["service"], t["level"], t["outcome"], t["command"]) for t in report["tests"]] == [
        ("api", "test", "passed", RECORD), ("web", "test", "passed", RECORD)]
    assert (c.shop.dir / "tests-ran.txt").read_text().splitlines() == ["api api none", "web web none"]
    assert [s["environment"] for s in report["stages"]] == ["staging"]
    assert report["stages"][0]["gate"]["outcome"] == "passed" and health.hits == 1
    assert service_entry(report, "staging", "api")["migrations"][0]["outcome"] == "success"
    assert c.running_image("api") == f"{c.image('api')}:{tag}"
    assert c.running_image("api", PRODUCTION_NS) != f"{c.image('api')}:{tag}"  # production untouched
    assert f"newTag: {tag}" not in c.remote_file(API_KUSTOMIZATION.format(env="production"))
    assert report["ready_to_promote"] == [
        {"service": s, "image": f"{c.image(s)}:{tag}", "verified_in": "staging", "next": ["production"],
         "promote_with": f"forge release {s} --environments production"} for s in ("api", "web")]
    assert f"ready to promote: {c.image('api')}:{tag} (verified in staging) to production" in proc.stderr


@pytest.mark.parametrize("dev_tests", [{"api": "echo 'test_orders FAILED: expected 2, got 3'; exit 3", "web": RECORD}])
def test_a_failing_test_stops_the_prerelease_before_anything_is_pushed(release_cluster: ShopCluster,
                                                                      tmp_path: Path) -> None:
    c = release_cluster
    tag = f"amd64-{head_sha(c)}"
    proc = c.run("prerelease:api", "--json", env={"FORGE_STATE_DIR": str(tmp_path / "s")}, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["failed"] == {"environment": None, "service": "api", "step": "test"}
    [test] = report["tests"]
    assert test["outcome"] == "failed" and test["exit_code"] == 3
    assert test["log_tail"] == ["test_orders FAILED: expected 2, got 3"]
    assert {"environment": None, "service": "api", "steps": ["push"]} in report["not_done"]
    assert report["push"] == {} and not registry_has(c, "api", tag)
    assert c.running_image("api") != f"{c.image('api')}:{tag}"
    assert "the test tests of api failed" not in proc.stderr
    assert "the tests of api failed (`echo" in proc.stderr and "nothing was pushed" in proc.stderr


@pytest.mark.parametrize("dev_tests", [{"api": RECORD, "web": RECORD}])
def test_comprehensive_release_tests_then_releases_every_environment(release_cluster: ShopCluster,
                                                                     tmp_path: Path) -> None:
    c = release_cluster
    tag = f"amd64-{head_sha(c)}"
    proc = c.run("comprehensive-release", "--yes", "--json", env={"FORGE_STATE_DIR": str(tmp_path / "s")},
                 stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["stage"] == "comprehensive" and report["environments"] == ["staging", "production"]
    assert [(t["service"], t["level"], t["environment"], t["outcome"]) for t in report["tests"]] == [
        ("api", "test", None, "passed"), ("web", "test", None, "passed"),
        # dev.test replaces the pyramid, so there is no e2e level to run against staging: said so, never "passed"
        ("api", "e2e", "staging", "not configured"), ("web", "e2e", "staging", "not configured")]
    assert "services.api.dev.test replaces the test pyramid" in report["tests"][2]["hint"]
    assert [s["gate"]["outcome"] for s in report["stages"]] == ["passed", "passed"]
    assert c.running_image("web", PRODUCTION_NS) == f"{c.image('web')}:{tag}"


# api keeps the example's python levels (its real unit tests: pytest -q tests/unit); its integration
# level is replaced by one that fails.
INTEGRATION_FAILS = "echo 'test_orders_against_postgres FAILED: relation orders does not exist'; exit 3"


@pytest.mark.parametrize("dev_tests", [{"api": {"integration": INTEGRATION_FAILS}, "web": RECORD}])
def test_a_prerelease_runs_the_unit_then_integration_level_and_a_failing_level_stops_it_before_the_push(
        release_cluster: ShopCluster, tmp_path: Path) -> None:
    c = release_cluster
    tag = f"amd64-{head_sha(c)}"
    proc = c.run("prerelease", "--json", env={"FORGE_STATE_DIR": str(tmp_path / "s")}, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["failed"] == {"environment": None, "service": "api", "step": "test:integration"}
    assert [(t["service"], t["level"], t["outcome"], t["command"]) for t in report["tests"]] == [
        ("api", "unit", "passed", "pytest -q tests/unit"), ("api", "integration", "failed", INTEGRATION_FAILS)]
    unit, integration = report["tests"]
    assert "3 passed" in Path(unit["log"]).read_text()  # the example's real unit tests ran
    assert Path(unit["log"]).is_relative_to(c.shop.dir / ".forge" / "test-results" / "api" / "unit")
    assert integration["exit_code"] == 3
    assert integration["log_tail"] == ["test_orders_against_postgres FAILED: relation orders does not exist"]
    assert "the integration tests of api failed (`echo" in proc.stderr and "nothing was pushed" in proc.stderr
    assert "forge test api:integration" in proc.stderr
    assert {"environment": None, "service": "web", "steps": ["test"]} in report["not_done"]
    assert {"environment": None, "service": "api", "steps": ["push"]} in report["not_done"]
    assert report["push"] == {} and not registry_has(c, "api", tag)
    assert not (c.shop.dir / "tests-ran.txt").exists()  # web's tests never ran
    assert c.running_image("api") != f"{c.image('api')}:{tag}"


# An e2e test that reaches the deployed service at FORGE_BASE_URL and records what it was told.
E2E = ('curl -fsS "$FORGE_BASE_URL/healthz" && '
       'echo "$FORGE_SERVICE $FORGE_ENVIRONMENT $FORGE_NAMESPACE $FORGE_BASE_URL $FORGE_IMAGE" >> ../../e2e-ran.txt')


@pytest.mark.parametrize("dev_tests", [{"api": {"e2e": E2E}, "web": RECORD}])
def test_comprehensive_release_runs_e2e_against_the_first_environment_before_promotion(
        release_cluster: ShopCluster, health: Health, tmp_path: Path) -> None:
    c = release_cluster
    tag = f"amd64-{head_sha(c)}"
    origin = health.url.removesuffix("/healthz")  # api's verify check's URL: where the e2e level reaches it
    proc = c.run("comprehensive-release", "--yes", "--json", env={"FORGE_STATE_DIR": str(tmp_path / "s")},
                 stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [(t["service"], t["level"], t["environment"], t["outcome"]) for t in report["tests"]] == [
        ("api", "unit", None, "passed"), ("api", "integration", None, "passed"), ("web", "test", None, "passed"),
        ("api", "e2e", "staging", "passed"), ("web", "e2e", "staging", "not configured")]
    assert report["tests"][3]["base_url"] == origin
    assert (c.shop.dir / "e2e-ran.txt").read_text().splitlines() == [
        f"api staging shop {origin} {c.image('api')}:{tag}"]
    assert health.hits == 3  # staging's check, the e2e test, production's check
    assert c.running_image("api", PRODUCTION_NS) == f"{c.image('api')}:{tag}"


@pytest.mark.parametrize("dev_tests", [{"api": {"e2e": E2E}, "web": RECORD}])
def test_a_failing_e2e_level_against_the_first_environment_stops_before_production(
        release_cluster: ShopCluster, health: Health, tmp_path: Path) -> None:
    c = release_cluster
    tag = f"amd64-{head_sha(c)}"
    health.statuses = [200, 503]  # staging's check passes; the e2e test then finds the service failing
    proc = c.run("comprehensive-release", "--yes", "--json", env={"FORGE_STATE_DIR": str(tmp_path / "s")},
                 stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["failed"] == {"environment": "staging", "service": "api", "step": "test:e2e"}
    e2e = report["tests"][-1]
    assert (e2e["level"], e2e["outcome"], e2e["exit_code"]) == ("e2e", "failed", 22)  # curl -f on HTTP 503
    assert any("503" in line for line in e2e["log_tail"])
    assert "the e2e tests of api failed against staging" in proc.stderr and "not promoted to production" in proc.stderr
    assert {"environment": "staging", "service": "web", "steps": ["test:e2e"]} in report["not_done"]
    assert [s["environment"] for s in report["stages"]] == ["staging"]
    assert c.running_image("api") == f"{c.image('api')}:{tag}"
    assert c.running_image("api", PRODUCTION_NS) != f"{c.image('api')}:{tag}"  # production untouched
    assert not (c.shop.dir / "e2e-ran.txt").exists()


@pytest.mark.parametrize("dev_tests", [{"api": {"integration": INTEGRATION_FAILS, "e2e": E2E,
                                                "base_url": "https://api.{environment}.shop.example"}}])
def test_the_dry_run_lists_each_test_level_and_where_it_runs(release_cluster: ShopCluster) -> None:
    c = release_cluster
    proc = c.run("comprehensive-release:api", "--dry-run", "--json", stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    steps = [s for s in json.loads(proc.stdout)["steps"] if s["step"].startswith("test")]
    assert [(s["step"], s["details"]["level"], s["details"]["environment"], s["details"]["command"],
             s["details"]["base_url"]) for s in steps] == [
        ("test:unit", "unit", None, "pytest -q tests/unit", None),
        ("test:integration", "integration", None, INTEGRATION_FAILS, None),
        ("test:e2e", "e2e", "staging", E2E, "https://api.staging.shop.example")]
    pre = json.loads(c.run("prerelease:api", "--dry-run", "--json", stdin=subprocess.DEVNULL).stdout)
    assert [s["step"] for s in pre["steps"] if s["step"].startswith("test")] == ["test:unit", "test:integration"]


@pytest.mark.parametrize("dev_tests", [{"api": "while [ ! -e ../../go ]; do sleep 0.05; done"}])
def test_a_release_running_longer_than_its_lease_renews_it_and_a_second_release_cannot_take_it(
        release_cluster: ShopCluster, tmp_path: Path) -> None:
    """The first release waits in its test step (until the file ``go`` exists) for longer than its
    Lease's duration (10 s); it keeps renewing the Lease, so a second release finds it held."""
    c = release_cluster
    err = tmp_path / "first.err"
    first = subprocess.Popen(
        ["nix", "run", ".#prerelease:api", *c.shop.overrides(), "--", "--json", "--lock-duration", "10"],
        cwd=c.shop.dir, env={**os.environ, "PATH": tool_path(), **c.env, "FORGE_STATE_DIR": str(tmp_path / "s1")},
        stdout=subprocess.PIPE, stderr=err.open("w"), stdin=subprocess.DEVNULL, text=True)
    try:
        def renewed_past_its_duration() -> dict | None:
            from forgegen.runtime.lock import _parse
            spec = (lease(c) or {}).get("spec") or {}
            if not spec.get("holderIdentity"):
                return None
            held = (_parse(spec["renewTime"]) - _parse(spec["acquireTime"])).total_seconds()
            return spec if held > 1.5 * spec["leaseDurationSeconds"] else None

        spec = wait_until(renewed_past_its_duration, timeout=300, interval=0.2)
        assert spec["leaseDurationSeconds"] == 10 and spec["leaseTransitions"] == 0
        second = c.run("release:api", "--environments", "staging", env={"FORGE_STATE_DIR": str(tmp_path / "s2")},
                       stdin=subprocess.DEVNULL)
        assert second.returncode == 2, second.stderr
        assert f"another release holds shop/Lease/{LEASE}: {spec['holderIdentity']}" in second.stderr
        assert lease(c)["spec"]["holderIdentity"] == spec["holderIdentity"]  # not taken over
    finally:
        (c.shop.dir / "go").touch()
        out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, err.read_text()
    report = json.loads(out)
    assert report["outcome"] == "success" and "lock_lost" not in report
    assert report["locks"][0]["holder"] == spec["holderIdentity"] and report["locks"][0]["released_at"]
    assert lease(c)["spec"]["holderIdentity"] is None
