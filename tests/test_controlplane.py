"""The real control plane itself (tests/controlplane, .ci/build-controlplane): the pinned
versions run, RBAC is on, examples/rbac/forge.yaml grants what Forge does and not more, the
loopback git server serves what source-controller fetches, and a second build builds nothing."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.controlplane import ControlPlane
from tests.controlplane.launch import BUILD
from tests.fixtures.shop import FORGE_USER, bind_forge

pytestmark = [pytest.mark.realplane]


def test_the_pinned_versions_run(control_plane: ControlPlane) -> None:
    version = control_plane.get("/version")
    assert version["gitVersion"] == control_plane.versions["kubernetes"]
    crds = {c["metadata"]["name"] for c in control_plane.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")["items"]}
    assert {"gitrepositories.source.toolkit.fluxcd.io", "kustomizations.kustomize.toolkit.fluxcd.io"} <= crds


def test_rbac_is_on_an_unbound_user_is_refused(control_plane: ControlPlane, plane_namespace: str) -> None:
    nobody = control_plane.user_kubeconfig("nobody")
    proc = control_plane.kubectl("get", "pods", "-n", plane_namespace, kubeconfig=nobody, check=False)
    assert proc.returncode != 0 and "forbidden" in proc.stderr.lower()


def can_i(plane: ControlPlane, kubeconfig, verb: str, resource: str, namespace: str) -> bool:
    resource, _, sub = resource.partition("/")
    extra = [f"--subresource={sub}"] if sub else []
    proc = plane.kubectl("auth", "can-i", verb, resource, *extra, "-n", namespace, kubeconfig=kubeconfig, check=False)
    return proc.stdout.strip() == "yes"


def test_the_forge_role_grants_what_forge_does_and_nothing_more(control_plane: ControlPlane,
                                                                plane_namespace: str) -> None:
    user = bind_forge(control_plane, [plane_namespace])
    ns = plane_namespace
    for verb, resource in (("watch", "deployments.apps"), ("list", "replicasets.apps"), ("watch", "pods"),
                           ("get", "pods/log"), ("list", "events"), ("create", "jobs.batch"),
                           ("patch", "kustomizations.kustomize.toolkit.fluxcd.io"),
                           ("patch", "gitrepositories.source.toolkit.fluxcd.io"),
                           # the release lock (forgegen/runtime/lock.py): read, take, renew, give back
                           ("get", "leases.coordination.k8s.io"), ("create", "leases.coordination.k8s.io"),
                           ("update", "leases.coordination.k8s.io")):
        assert can_i(control_plane, user, verb, resource, ns), (verb, resource)
    for verb, resource in (("get", "secrets"), ("create", "pods"), ("patch", "deployments.apps"),
                           ("create", "kustomizations.kustomize.toolkit.fluxcd.io"), ("delete", "pods"),
                           ("create", "rolebindings.rbac.authorization.k8s.io"),
                           ("delete", "leases.coordination.k8s.io")):
        assert not can_i(control_plane, user, verb, resource, ns), (verb, resource)
    # and nothing outside the namespaces it is bound in
    assert not can_i(control_plane, user, "list", "pods", "kube-system")
    assert FORGE_USER in user.read_text()


def test_the_git_server_serves_bare_repositories_under_its_root(control_plane: ControlPlane, tmp_path) -> None:
    bare = tmp_path / "served.git"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(bare)], check=True)
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--initial-branch=main", str(work)], check=True)
    (work / "f").write_text("x\n")
    subprocess.run(["git", "add", "f"], cwd=work, check=True)
    subprocess.run(["git", "commit", "-qm", "one"], cwd=work, check=True)
    subprocess.run(["git", "push", "-q", str(bare), "HEAD:refs/heads/main"], cwd=work, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True, check=True).stdout.strip()
    out = subprocess.run(["git", "ls-remote", control_plane.git_url(bare)], capture_output=True, text=True, check=True)
    assert f"{head}\trefs/heads/main" in out.stdout


def test_a_second_build_builds_nothing(control_plane: ControlPlane) -> None:
    proc = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(control_plane.bin_dir)
    assert proc.stderr == ""  # no "building" line: everything came from the cache
    assert json.dumps(control_plane.versions)
