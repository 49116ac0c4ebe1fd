"""The opt-in suite for any real cluster (``FORGE_E2E_KUBECONFIG``), proven on our own.

A user points ``FORGE_E2E_KUBECONFIG`` at their cluster and runs ``pytest -m external``; here the
same code path runs in a pytest subprocess pointed at the session's real control plane
(kube-apiserver, controller-manager, scheduler; the simulated kubelet reads the real pod specs of
``tests/kube_standin/podspec.py`` — a command ``exit 3``, a memory limit with ``tail /dev/zero``,
a readiness probe on a closed port, an absent tag, an invalid reference — as a real kubelet
would act on them). Without the variable, no ``external`` test exists at all (never skipped).

The deploy end-to-end tests run the same way with the session's registry and a bare repository
served by the control plane's git server (what source-controller reads) standing in for the
user's registry and git remote, and a namespace of their own for the Flux objects.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.nixenv import ROOT
from tests.kube_standin import ImageScript, completes, crash
from tests.kube_standin.podspec import TABLE, container_for, script_of

# a cross-section: every failure a real kubelet can be made to show, for Deployments; a crash for
# StatefulSets and DaemonSets; success with a tolerated restart; all of kubectl conformance
PROOF = ("test_failure_is_reported_with_reason_pod_and_evidence and Deployment",
         "test_failure_is_reported_with_reason_pod_and_evidence and crash",
         "test_restarts_within_the_tolerance_succeed and Deployment",
         "test_success_waits_for_every_new_pod and DaemonSet",
         "test_a_missing_secret_created_later_lets_the_rollout_finish and StatefulSet",
         "test_kubectl")
SUITE_USER = "forge-e2e"
FILES = ("tests/test_rollout_scenarios.py", "tests/test_kube_standin_kubectl.py")
# the deploy end-to-end tests through the external path; among them at least: deploy, crash loop
# with rollback, rollback, status; release through two environments with migration Jobs, a
# failing migration
DEPLOY_FILES = ("tests/test_deploy.py", "tests/test_release.py")
DEPLOY_PROOF = ("test_deploy_pushes_commits_reconciles_and_rolls_out", "test_crash_looping_image",
                "test_rollback_goes_to_the_previous", "test_status_shows_git_cluster_and_flux",
                "test_release_goes_through_staging_then_production", "test_a_failing_migration_stops")


def pytest_run(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def users_kubeconfig(issued: Path, directory: Path) -> Path:
    """``issued`` as users keep theirs: certificate files next to it under relative names, and
    another context current (the suite must take FORGE_E2E_CONTEXT)."""
    doc = yaml.safe_load(issued.read_text())
    directory.mkdir()
    for section, keys in (("cluster", ("certificate-authority",)), ("user", ("client-certificate", "client-key"))):
        for entry in doc[section + "s"]:
            for key in keys:
                name = f"{section}-{key}.pem"
                shutil.copy(entry[section][key], directory / name)
                entry[section][key] = name
    doc["contexts"].append({"name": "elsewhere", "context": {"cluster": "nowhere", "user": "nobody"}})
    doc["current-context"] = "elsewhere"  # a name the test kubeconfigs use too
    path = directory / "config"
    path.write_text(yaml.safe_dump(doc))
    return path


def behaviour(s: ImageScript) -> ImageScript:
    """A script without its messages (a real kubelet words them its own way)."""
    return replace(s, unhealthy=None, pull_error="pull" if s.pull_error else None)


@pytest.mark.parametrize("scenario", sorted(TABLE))
def test_each_scenario_has_a_real_pod_spec_the_simulated_kubelet_reads_back(scenario: str) -> None:
    script, _ = TABLE[scenario]
    fields, volumes = container_for(script, "registry.example/tools/busybox:1.36")
    back = script_of(fields)
    assert back is not None and behaviour(back) == behaviour(script), (fields, back)
    assert {v["name"] for v in volumes} == {m["name"] for m in fields.get("volumeMounts", [])}
    if scenario == "image-pull":
        assert fields["image"] == "registry.example/tools/busybox:forge-e2e-absent"


def test_a_crash_is_a_command_with_its_exit_code_and_logs() -> None:
    fields, _ = container_for(crash(after=0.1, exit_code=3, logs=("starting api",), exit_logs=("panic: no DATABASE_URL",)))
    assert fields["command"] == ["sh", "-c", "echo 'starting api'\nsleep 0.1\necho 'panic: no DATABASE_URL'\nexit 3"]
    assert "readinessProbe" not in fields
    # a spec outside the vocabulary is left to the kubelet's default, never guessed at
    assert script_of({"image": "busybox:1.36", "command": ["sh", "-c", "exit 3; rm -rf /"]}) is None
    assert script_of({"image": "app:1"}) is None


SCRIPTS = {"crash": crash(exit_code=3, logs=["{service}: connecting to db", "{service}: fatal: no DATABASE_URL"]),
           "failing-migration": completes(exit_code=2, logs=("{service}: applying 0042_add_email",),
                                          exit_logs=('ERROR: column "email" already exists',))}


@pytest.mark.nix
@pytest.mark.parametrize("service", ["api", "web"])
@pytest.mark.parametrize("kind", sorted(SCRIPTS))
def test_a_scripted_image_on_a_real_cluster_is_its_own_program_doing_it(shop: Any, tmp_path: Path, service: str,
                                                                       kind: str) -> None:
    """What a real node runs for the deploy tests' image scripts (tests/external_shop.py): the
    example's own program (api's Python package, web's Node server), rewritten and built by Nix,
    prints the logs and exits with the code, or serves /healthz — here run directly (the image
    around it needs real nixpkgs, FORGE_E2E_NIXPKGS)."""
    from tests.external_shop import write_program
    from tests.fixtures.kube import wait_until
    from tests.ports import free_port

    s = SCRIPTS[kind]
    script = replace(s, logs=tuple(line.format(service=service) for line in s.logs))
    write_program(shop, service, script)
    shop.nix("build", f".#{service}", "--out-link", f"{service}-result")
    program = str(shop.dir / f"{service}-result" / "bin" / service)
    # nothing on PATH but the interpreter (the nixpkgs stand-in's Python wrapper finds python3
    # there; nixpkgs' has its path): the scripted program needs no other tool in the image
    bin_dir = tmp_path / "only-python"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(os.path.realpath(sys.executable))
    env = {"PATH": str(bin_dir), "PORT": str(free_port())}
    # a crash: every start, the Deployment's and the migration Job's; a migration: `<service> migrate`
    for args in ([[], ["migrate"]] if script.exit_after is not None else [["migrate"]]):
        proc = subprocess.run([program, *args], capture_output=True, text=True, timeout=60, env=env)
        if script.exit_after is not None:
            assert (proc.returncode, proc.stdout.splitlines()) == (script.exit_code, [*script.logs, *script.exit_logs])
        else:
            assert (proc.returncode, proc.stdout.splitlines()) == (script.completion_code,
                                                                   [*script.logs, *script.completion_logs])
    if script.exit_after is None:  # and otherwise it serves: the service's own server, /healthz and all
        serving = subprocess.Popen([program], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            assert serving.stdout is not None and serving.stdout.readline() == f"{script.logs[0]}\n"
            assert wait_until(lambda: healthz(int(env["PORT"])), timeout=60, interval=0.1) == 200
            assert serving.poll() is None
        finally:
            serving.kill()
            serving.wait(30)


@pytest.mark.parametrize("cluster", ["staging", "production"])
def test_every_readiness_probe_of_the_example_asks_the_port_its_service_listens_on(cluster: str) -> None:
    """On a real node the probe must reach the server the test above shows answering /healthz:
    every example service listens on $PORT, default 8080 (their own tests check that)."""
    probed = {}
    for path in sorted((ROOT / "examples" / "gitops" / "clusters" / cluster).glob("*/deployment.yaml")):
        for c in yaml.safe_load(path.read_text())["spec"]["template"]["spec"]["containers"]:
            if "readinessProbe" not in c:
                continue
            probe = c["readinessProbe"]["httpGet"]["port"]
            ports = {p["name"]: p["containerPort"] for p in c.get("ports") or []}
            env = {e["name"]: e.get("value") for e in c.get("env") or []}
            probed[c["name"]] = (ports.get(probe, probe), int(env.get("PORT") or 8080))
    assert {"api", "web"} <= probed.keys()
    assert all(asked == listening for asked, listening in probed.values()), probed


def healthz(port: int) -> int | None:
    """The status of GET /healthz on ``port``, or None while nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def test_a_context_the_kubeconfig_lacks_is_refused_by_name(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("apiVersion: v1\nkind: Config\nclusters: []\nusers: []\n"
                      "contexts:\n- name: a\n  context: {cluster: c, user: u}\ncurrent-context: a\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_E2E_")}
    env.update(FORGE_E2E_KUBECONFIG=str(config), FORGE_E2E_CONTEXT="b")
    proc = pytest_run("-m", "external", "-k", "test_kubectl_version_and_get", "tests/test_kube_standin_kubectl.py",
                      env=env, timeout=300)
    assert proc.returncode != 0
    assert f"FORGE_E2E_CONTEXT=b: no such context in {config}" in proc.stdout + proc.stderr


def test_the_deploy_tests_exist_for_an_external_cluster_only_with_every_deploy_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_E2E_")}
    env["FORGE_E2E_KUBECONFIG"] = str(tmp_path / "config")  # collection never reads it
    proc = pytest_run("--collect-only", *DEPLOY_FILES, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[external]" not in proc.stdout and "[real]" in proc.stdout
    assert ("deploy end-to-end tests: not run (FORGE_E2E_REGISTRY, FORGE_E2E_GIT_URL, FORGE_E2E_FLUX_NAMESPACE "
            "unset)") in proc.stdout
    env.update(FORGE_E2E_REGISTRY="registry.example:5000/e2e", FORGE_E2E_GIT_URL="https://git.example/gitops.git",
               FORGE_E2E_FLUX_NAMESPACE="flux-system")
    proc = pytest_run("--collect-only", *DEPLOY_FILES, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    external = {line for line in proc.stdout.splitlines() if "[external]" in line}
    # every test that runs on our control plane but the one that needs a user without the Role
    real = {line.replace("[real]", "[external]") for line in proc.stdout.splitlines()
            if "[real]" in line and "without_the_forge_role" not in line}
    assert external == real and len(external) >= 8, (external, real)
    assert "deploy end-to-end tests: run" in proc.stdout
    assert "external deploy: images registry.example:5000/e2e/<service> built from the nixpkgs stand-in" in proc.stdout
    env["FORGE_E2E_REGISTRY"] = "http://"
    proc = pytest_run("--collect-only", *DEPLOY_FILES, env=env, timeout=300)
    assert proc.returncode != 0 and "FORGE_E2E_REGISTRY='http://': expected" in proc.stdout + proc.stderr


def test_without_a_kubeconfig_no_external_test_exists() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_E2E_")}
    proc = pytest_run("--collect-only", "-q", *FILES, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "external" not in proc.stdout and "[standin" in proc.stdout and "[real" in proc.stdout
    assert "skipped" not in proc.stdout


@pytest.mark.realplane
@pytest.mark.timeout(900)
def test_the_external_backend_runs_against_a_real_control_plane(control_plane: Any, tmp_path: Path) -> None:
    from kubernetes.client import CoreV1Api

    from forgegen.runtime.kube import api_client

    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_E2E_")}
    # as a user bound only to examples/rbac/forge-e2e.yaml: that is all the suite needs
    control_plane.apply((ROOT / "examples" / "rbac" / "forge-e2e.yaml").read_text())
    suite_user = users_kubeconfig(control_plane.user_kubeconfig(SUITE_USER), tmp_path / "kube")
    env.update(FORGE_E2E_KUBECONFIG=str(suite_user), FORGE_E2E_CONTEXT="realplane", FORGE_STRICT_SKIPS="1")
    proc = pytest_run("-m", "external", "-k", " or ".join(f"({p})" for p in PROOF), "-rA",
                      f"--basetemp={tmp_path / 'suite'}", *FILES, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-20000:]
    assert "external cluster: FORGE_E2E_KUBECONFIG=" in out and "context realplane" in out and "deploy end-to-end tests: not run" in out
    passed = re.findall(r"^PASSED (\S+)", proc.stdout, re.M)
    assert len(passed) >= 14 and all("[external" in p or "-external" in p for p in passed), passed
    assert not re.search(r"\d+ (skipped|failed|error)", proc.stdout), out[-5000:]
    for scenario in ("crash", "oom", "readiness", "image-pull", "invalid-name", "missing-secret", "unschedulable"):
        assert any(f"Deployment-{scenario}" in p for p in passed), (scenario, passed)
    # every namespace it made is gone or going
    core = CoreV1Api(api_client(str(control_plane.kubeconfig), None))
    left = [n for n in core.list_namespace().items
            if n.metadata.name.startswith("forge-e2e-") and n.metadata.deletion_timestamp is None]
    assert not left, [n.metadata.name for n in left]


@pytest.mark.realplane
@pytest.mark.timeout(1200)
def test_the_deploy_tests_run_against_a_real_control_plane_as_an_external_cluster(
        control_plane: Any, registry: Any, nixpkgs_standin: Path, tmp_path: Path) -> None:
    from kubernetes.client import CoreV1Api

    from forgegen.runtime.kube import api_client

    control_plane.apply((ROOT / "examples" / "rbac" / "forge-e2e.yaml").read_text())
    suite_user = users_kubeconfig(control_plane.user_kubeconfig(SUITE_USER), tmp_path / "kube")
    flux_ns = control_plane.create_namespace("e2e-user-flux")  # the user's: a namespace for the suite's Flux objects
    bare = tmp_path / "user-gitops.git"  # under the session's base temp: the git server serves it
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(bare)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_E2E_")}
    env.update(FORGE_E2E_KUBECONFIG=str(suite_user), FORGE_E2E_CONTEXT="realplane", FORGE_STRICT_SKIPS="1",
               FORGE_E2E_REGISTRY=f"http://{registry.host}/user-org/e2e", FORGE_E2E_GIT_URL=control_plane.git_url(bare),
               FORGE_E2E_FLUX_NAMESPACE=flux_ns, FORGE_E2E_SIMULATED_KUBELET="1",
               # the override path real nixpkgs takes, with the stand-in (offline: no substituters)
               FORGE_E2E_NIXPKGS=f"path:{nixpkgs_standin}", FORGE_E2E_NIX_CONFIG="substituters =")
    # every deploy end-to-end test that has an external variant (the same ones that run on ours)
    proc = pytest_run("-m", "external", "-rA", f"--basetemp={tmp_path / 'suite'}", *DEPLOY_FILES, env=env,
                      timeout=1100)
    out = proc.stdout + proc.stderr
    print(proc.stdout.strip().splitlines()[-1])  # its summary line: how long the deploy part took
    assert proc.returncode == 0, out[-20000:]
    assert "deploy end-to-end tests: run" in out and f"Flux objects in namespace {flux_ns}" in out
    assert f"built from nixpkgs path:{nixpkgs_standin}" in out
    passed = re.findall(r"^PASSED (\S+)", proc.stdout, re.M)
    assert len(passed) >= 10 and all("external" in p.rsplit("[", 1)[-1].rstrip("]").split("-") for p in passed), passed
    for name in DEPLOY_PROOF:
        assert any(name in p for p in passed), (name, passed)
    assert not re.search(r"\d+ (skipped|failed|error)", proc.stdout), out[-5000:]
    # what it pushed, where the user said; the tag the GitOps template starts from, seeded
    tags = subprocess.run(["skopeo", "list-tags", "--tls-verify=false", f"docker://{registry.host}/user-org/e2e/api"],
                          capture_output=True, text=True, check=True)
    assert "amd64-0000000" in tags.stdout
    # it cleaned up: no branch on the remote, no Flux object, no namespace of its own left
    assert subprocess.run(["git", f"--git-dir={bare}", "for-each-ref", "refs/heads"], capture_output=True, text=True,
                          check=True).stdout == ""
    for kind in ("kustomize.toolkit.fluxcd.io/v1/namespaces/{ns}/kustomizations",
                 "source.toolkit.fluxcd.io/v1/namespaces/{ns}/gitrepositories"):
        assert control_plane.get("/apis/" + kind.format(ns=flux_ns))["items"] == [], kind
    core = CoreV1Api(api_client(str(control_plane.kubeconfig), None))
    left = [n.metadata.name for n in core.list_namespace().items
            if n.metadata.name.startswith("forge-e2e-") and n.metadata.deletion_timestamp is None]
    assert not left, left
