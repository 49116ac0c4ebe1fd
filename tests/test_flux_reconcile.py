"""The Flux reconcile against the Kubernetes stand-in: real ``kubernetes`` client over HTTP, the
Flux simulation fetching a real bare git remote and building with the real ``kubectl kustomize``.

What must hold: the wait ends on the commit we pushed and never earlier (a late source, a source
that first serves the previous commit); Flux's Ready=False fails at once with its reason and
message; missing objects and timeouts say what is wrong and what to do; dropped watches and
410 Gone are survived. No test asserts wall-clock time: timeouts are bounds, and "at once" is
shown by the outcome (``failed``, not ``timeout``) under a generous deadline.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import pytest

from forgegen.errors import ReconcileError
from forgegen.plan import FluxPlan, GitOpsPlan, PromotionPlan, TargetPlan
from forgegen.runtime import kubeapi
from forgegen.runtime.flux import (
    KUSTOMIZATION,
    REQUESTED_AT,
    ReconcileResult,
    _Requester,
    flux_status,
    reconcile,
    request_token,
    token_ns,
)
from forgegen.runtime.kube import api_client
from tests.fixtures.flux import Flux, GitRemote
from tests.fixtures.kube import Kube, wait_until

pytestmark = pytest.mark.kube

SAFETY = 20.0  # the reconcile deadline in tests that must not time out: far above the scripted delays


def image_of(kube: Kube, name: str = "api") -> str:
    d = kube.standin.get("deployments", "default", name)
    return d["spec"]["template"]["spec"]["containers"][0]["image"]


def failure(excinfo: pytest.ExceptionInfo[ReconcileError]) -> tuple[str, dict[str, Any]]:
    err = excinfo.value
    return str(err), err.result.to_json()  # type: ignore[attr-defined]


# -- success ----------------------------------------------------------------------------------


def test_reconcile_ends_on_our_commit(kube: Kube, flux: Flux, flux_remote: GitRemote) -> None:
    old = flux.install()
    assert image_of(kube) == "registry.test/shop/api:v1"
    generation = kube.standin.get("deployments", "default", "api")["metadata"]["generation"]
    sha = flux_remote.set_tag("v2")
    lines: list[str] = []
    result = reconcile(kube.api(), flux.plan(timeout=SAFETY), commit=sha, branch="main", progress=lines.append)

    assert result.ok and result.revision == f"main@sha1:{sha}"
    # What Flux applied is our commit's manifests, and the Deployment got a new generation to roll out.
    assert image_of(kube) == "registry.test/shop/api:v2"
    assert kube.standin.get("deployments", "default", "api")["metadata"]["generation"] == generation + 1
    doc = result.to_json()
    assert doc["source"]["revision"] == f"main@sha1:{sha}"
    ks = doc["kustomizations"][0]
    assert ks["last_applied_revision"] == f"main@sha1:{sha}" and ks["ready"] == "True"
    assert ks["last_handled_reconcile_at"] == result.token
    assert [q["object"] for q in doc["requests"]] == ["flux-system/GitRepository/gitops", "flux-system/Kustomization/apps"]
    # The annotation Flux reads is the token we report.
    assert flux.get("Kustomization", "apps")["metadata"]["annotations"][REQUESTED_AT] == result.token
    assert doc["timings"]["source_seconds"] <= doc["timings"]["applied_seconds"]
    assert any("waiting for GitRepository" in line for line in lines) or old != sha
    assert lines[-1] == result.message


def test_reconcile_with_dependent_kustomizations(kube: Kube, flux: Flux, flux_remote: GitRemote) -> None:
    """``apps`` depends on ``infra``: Flux answers DependencyNotReady for a moment; that is not a failure."""
    flux_remote.write("infra/kustomization.yaml", "resources: [config.yaml]\n")
    flux_remote.write("infra/config.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: shared, namespace: default}\n"
                                            "data: {level: one}\n")
    head = flux_remote.commit_push("infra")
    flux.git_repository()
    flux.kustomization("infra", path="./infra")
    flux.kustomization("apps", depends_on=("infra",))
    flux.wait_applied("apps", head)
    flux_remote.write("infra/config.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: shared, namespace: default}\n"
                                            "data: {level: two}\n")
    flux_remote.set_tag("v3")
    sha = flux_remote.head()
    result = reconcile(kube.api(), flux.plan(("infra", "apps"), timeout=SAFETY), commit=sha, branch="main")
    assert [k.revision for k in result.kustomizations] == [f"main@sha1:{sha}"] * 2
    assert kube.standin.get("configmaps", "default", "shared")["data"] == {"level": "two"}
    assert image_of(kube) == "registry.test/shop/api:v3"


def test_reconcile_accepts_a_later_commit_only_when_told_it_contains_ours(kube: Kube, flux: Flux,
                                                                          flux_remote: GitRemote) -> None:
    """Another deploy pushed on top of ours before Flux fetched: by default Forge does not take it
    for ours; with ``accept`` (git ancestry, as the GitOps step can check) it does."""
    flux.install()
    ours = flux_remote.set_tag("v2")
    later = flux_remote.set_tag("v3")
    with pytest.raises(ReconcileError) as excinfo:
        reconcile(kube.api(), flux.plan(timeout=1.0), commit=ours, branch="main")
    message, doc = failure(excinfo)
    assert doc["outcome"] == "timeout" and doc["reason"] == "SourceNotUpdated"
    assert f"serves main@sha1:{later}" in message and f"not commit {ours[:7]}" in message
    result = reconcile(kube.api(), flux.plan(timeout=SAFETY), commit=ours, branch="main",
                       accept=lambda sha: flux_remote.contains(ours, sha))
    assert result.revision == f"main@sha1:{later}"


# -- never on the old commit --------------------------------------------------------------------


def test_reconcile_waits_for_a_late_source(kube: Kube, flux: Flux, flux_remote: GitRemote) -> None:
    """The source takes a while to fetch; meanwhile the Kustomization is Ready on the old commit
    (what the Flux CLI takes for success, fluxcd/flux2#479). Forge waits for ours."""
    old = flux.install()
    sha = flux_remote.set_tag("v2")
    flux.script(fetch_delay=0.6)
    result = reconcile(kube.api(), flux.plan(timeout=SAFETY), commit=sha, branch="main")
    assert result.revision == f"main@sha1:{sha}" != f"main@sha1:{old}"
    assert image_of(kube) == "registry.test/shop/api:v2"  # applied when the wait ended, not after
    # The Kustomization was asked only after the source served our commit, and applied ours.
    fetched = kube.standin.call(lambda: [(f.revision, f.token) for f in flux.sim.fetches])
    assert fetched[-1] == (f"main@sha1:{sha}", result.requests[0]["token"])
    applied = kube.standin.call(lambda: [(a.revision, a.token) for a in flux.sim.applied])
    assert (f"main@sha1:{sha}", result.token) in applied


def test_reconcile_asks_again_when_the_source_fetched_the_previous_commit(kube: Kube, flux: Flux,
                                                                         flux_remote: GitRemote) -> None:
    """Our push raced the fetch: the source handles our request but serves the commit before ours."""
    old = flux.install()
    sha = flux_remote.set_tag("v2")
    flux.script(stale_fetches=1)
    result = reconcile(kube.api(), flux.plan(timeout=SAFETY), commit=sha, branch="main")
    assert result.revision == f"main@sha1:{sha}"
    source_requests = [q for q in result.requests if q["object"].endswith("/GitRepository/gitops")]
    assert len(source_requests) == 2
    fetched = kube.standin.call(lambda: [(f.revision, f.token) for f in flux.sim.fetches])
    # The first request was handled with the old commit; the second one fetched ours.
    assert (f"main@sha1:{old}", source_requests[0]["token"]) in fetched
    assert (f"main@sha1:{sha}", source_requests[1]["token"]) in fetched
    assert any("raced its fetch" in line for line in result.progress)
    assert image_of(kube) == "registry.test/shop/api:v2"


# -- Flux says no -------------------------------------------------------------------------------


def test_reconcile_fails_at_once_on_health_check_failure(kube: Kube, flux: Flux, flux_remote: GitRemote) -> None:
    flux.install()
    sha = flux_remote.set_tag("v2")
    detail = "timeout waiting for: [Deployment/default/api status: 'InProgress']"
    flux.script(failures={"apps": ("HealthCheckFailed", detail)})
    with pytest.raises(ReconcileError) as excinfo:
        reconcile(kube.api(), flux.plan(timeout=SAFETY), commit=sha, branch="main")
    message, doc = failure(excinfo)
    assert doc["outcome"] == "failed" and doc["reason"] == "HealthCheckFailed"  # not a timeout
    assert f"HealthCheckFailed: {detail}" in message  # Flux's reason and message
    assert f"main@sha1:{sha}" in message  # the value: which commit
    assert "(at flux-system/Kustomization/apps)" in message  # where
    assert "hint: " in message and "flux events --for Kustomization/apps -n flux-system" in message  # next step


def test_reconcile_fails_at_once_on_a_broken_kustomization(kube: Kube, flux: Flux, flux_remote: GitRemote) -> None:
    """The real kustomize fails on our commit; its message reaches the user."""
    flux.install()
    flux_remote.write("apps/kustomization.yaml", "resources:\n  - deployment.yaml\n  - missing-service.yaml\n")
    sha = flux_remote.commit_push("broken")
    with pytest.raises(ReconcileError) as excinfo:
        reconcile(kube.api(), flux.plan(timeout=SAFETY), commit=sha, branch="main")
    message, doc = failure(excinfo)
    assert doc["outcome"] == "failed" and doc["reason"] == "BuildFailed"
    assert "missing-service.yaml" in message  # kustomize's own words
    assert "(at flux-system/Kustomization/apps)" in message and "kubectl kustomize" in message
    assert doc["kustomizations"][0]["last_attempted_revision"] == f"main@sha1:{sha}"
    assert image_of(kube) == "registry.test/shop/api:v1"  # nothing of the broken commit was applied


def test_reconcile_fails_at_once_when_the_source_cannot_fetch(kube: Kube, flux: Flux, flux_remote: GitRemote,
                                                              tmp_path: Any) -> None:
    flux.git_repository(url=f"file://{tmp_path}/no-such-repo.git")
    flux.kustomization()
    with pytest.raises(ReconcileError) as excinfo:
        reconcile(kube.api(), flux.plan(timeout=SAFETY), commit=flux_remote.head(), branch="main")
    message, doc = failure(excinfo)
    assert doc["outcome"] == "failed" and doc["reason"] == "GitOperationFailed"
    assert "no-such-repo.git" in message and "(at flux-system/GitRepository/gitops)" in message
    assert "spec.url" in message


def test_reconcile_fails_at_once_on_a_suspended_kustomization(kube: Kube, flux: Flux, flux_remote: GitRemote) -> None:
    flux.install()
    kube.standin.mutate("kustomizations", "flux-system", "apps", lambda o: o["spec"].update(suspend=True))
    sha = flux_remote.set_tag("v2")
    with pytest.raises(ReconcileError) as excinfo:
        reconcile(kube.api(), flux.plan(timeout=SAFETY), commit=sha, branch="main")
    message, doc = failure(excinfo)
    assert doc["reason"] == "Suspended" and "flux resume kustomization apps -n flux-system" in message


# -- missing objects ----------------------------------------------------------------------------


def test_reconcile_missing_source(kube: Kube, flux: Flux, flux_remote: GitRemote) -> None:
    flux.kustomization()
    with pytest.raises(ReconcileError) as excinfo:
        reconcile(kube.api(), flux.plan(source="gitopz"), commit=flux_remote.head(), branch="main")
    message = str(excinfo.value)
    assert "Flux GitRepository flux-system/gitopz not found" in message
    assert "(at flux-system/GitRepository/gitopz)" in message and "flux get sources git -A" in message


def test_reconcile_missing_kustomization(kube: Kube, flux: Flux, flux_remote: GitRemote) -> None:
    flux.install()
    with pytest.raises(ReconcileError) as excinfo:
        reconcile(kube.api(), flux.plan(("apps", "apps-staging")), commit=flux_remote.head(), branch="main")
    message = str(excinfo.value)
    assert "Flux Kustomization flux-system/apps-staging not found" in message
    assert "flux get kustomizations -A" in message
    # Nothing was annotated: the typo is reported before Forge asks Flux for anything.
    assert REQUESTED_AT not in (flux.get("GitRepository", "gitops")["metadata"].get("annotations") or {})


def ask_source(flux: Flux) -> None:
    """A reconcile request on the GitRepository, as `flux reconcile source git` writes it."""
    flux.standin.mutate("gitrepositories", flux.namespace, "gitops",
                        lambda o: o["metadata"].setdefault("annotations", {}).update({REQUESTED_AT: request_token()}))


def test_reconcile_waits_on_an_artifact_flux_says_it_retries(kube: Kube, flux: Flux, flux_remote: GitRemote) -> None:
    """source-controller restarted with empty storage after it fetched our commit: the source still
    names the artifact, kustomize-controller gets a 404 and says "Source is not ready, artifact not
    found, retrying in 30s" (ArtifactFailed) under our request. Flux retries and applies our commit
    once the source is reconciled again: the deploy waits for that, it does not fail."""
    flux.install()
    ours = flux_remote.set_tag("v2")
    ask_source(flux)
    wait_until(lambda: flux_remote.head() == kube.standin.call(lambda: flux.sim.served.get((flux.namespace, "gitops"))))
    kube.standin.call(flux.sim.lose_artifacts)
    flux.script(ignore={"GitRepository/gitops"})  # it has not noticed yet
    fut = concurrent.futures.ThreadPoolExecutor(1).submit(
        reconcile, kube.api(), flux.plan(timeout=SAFETY), commit=ours, branch="main")
    # the Kustomization handled our request and failed on the missing artifact, saying it retries
    wait_until(lambda: fut.done() or any(a.reason == "ArtifactFailed" and a.token for a in list(flux.sim.applied)),
               timeout=SAFETY)
    flux.script(ignore=set())
    ask_source(flux)  # the source notices the missing artifact and writes it again
    result = fut.result(SAFETY + 5)
    assert result.outcome == "success" and result.revision == f"main@sha1:{ours}"
    assert image_of(kube) == "registry.test/shop/api:v2"


# -- timeouts -----------------------------------------------------------------------------------


def test_reconcile_timeout_when_the_source_never_fetches(kube: Kube, flux: Flux, flux_remote: GitRemote) -> None:
    old = flux.install()
    sha = flux_remote.set_tag("v2")
    flux.script(ignore={"GitRepository/gitops"})
    with pytest.raises(ReconcileError) as excinfo:
        reconcile(kube.api(), flux.plan(timeout=0.8), commit=sha, branch="main")
    message, doc = failure(excinfo)
    assert doc["outcome"] == "timeout" and doc["reason"] == "SourceNotUpdated"
    assert f"Flux did not fetch commit {sha[:7]}" in message and "within 0.8s" in message
    assert f"serves main@sha1:{old}" in message  # the last seen revision
    assert "last handled request" in message and "(at flux-system/GitRepository/gitops)" in message
    assert "flux get sources git -A" in message and "flux.timeout" in message


def test_reconcile_timeout_when_the_kustomization_never_handles_us(kube: Kube, flux: Flux,
                                                                   flux_remote: GitRemote) -> None:
    old = flux.install()
    sha = flux_remote.set_tag("v2")
    flux.script(ignore={"Kustomization/apps"})
    with pytest.raises(ReconcileError) as excinfo:
        reconcile(kube.api(), flux.plan(timeout=0.8), commit=sha, branch="main")
    message, doc = failure(excinfo)
    assert doc["outcome"] == "timeout" and doc["reason"] == "KustomizationNotApplied"
    assert "has not handled our reconcile request" in message and doc["token"] in message
    assert f"Ready=True ReconciliationSucceeded: Applied revision: main@sha1:{old}" in message  # last seen status
    assert "(at flux-system/Kustomization/apps)" in message
    assert doc["source"]["revision"] == f"main@sha1:{sha}"


# -- faults -------------------------------------------------------------------------------------


def test_reconcile_survives_dropped_watches_and_410(kube: Kube, flux: Flux, flux_remote: GitRemote) -> None:
    flux.install()
    sha = flux_remote.set_tag("v2")
    flux.script(fetch_delay=0.8)
    standin = kube.standin
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(reconcile, kube.api(), flux.plan(timeout=SAFETY), commit=sha, branch="main")
        # Once the wait is on (source annotated, watches open): cut the watches, then restart the
        # API server with a compacted history so resuming from the last resourceVersion gets 410.
        wait_until(lambda: sum(1 for _, m, p, q in standin.requests() if q.get("watch") in ("true", "1", True)) >= 2)
        assert standin.drop_watches() >= 1

        def moved_on(cluster: Any) -> None:  # history now starts after the watches' last version
            cluster.store.create("configmaps", {"metadata": {"name": "unrelated", "namespace": "default"}})
            cluster.store.compact()
        standin.restart(down_for=0.1, compact=True, during=moved_on)
        result = future.result(timeout=SAFETY + 5)
    assert result.revision == f"main@sha1:{sha}"
    lists = [p for _, m, p, q in standin.requests() if m == "GET" and p.endswith("/gitrepositories")
             and q.get("watch") not in ("true", "1", True)]
    assert len(lists) >= 2  # listed again after 410 Gone


def test_reconcile_watches_instead_of_polling(kube: Kube, flux: Flux, flux_remote: GitRemote) -> None:
    """A slow source costs no extra requests: one list and at most two watches per collection (one
    resumed), and every write is a reconcile request. A request that met a concurrent write (the
    controller updates the Kustomization when the source's revision changes) is read and written
    once more: each extra patch of an object comes with a fresh read of it."""
    flux.install()
    sha = flux_remote.set_tag("v2")
    flux.script(fetch_delay=1.5)
    before = len(kube.standin.requests())
    result = reconcile(kube.api(), flux.plan(timeout=SAFETY), commit=sha, branch="main")
    made = [(m, p, q.get("watch") in ("true", "1")) for _, m, p, q in kube.standin.requests()[before:]]
    source, ks = "/gitrepositories", "/kustomizations"
    for collection in (source, ks):
        assert sum(1 for m, p, w in made if m == "GET" and p.endswith(collection) and not w) == 1, made
        assert 1 <= sum(1 for m, p, w in made if m == "GET" and p.endswith(collection) and w) <= 2, made
    assert {p for m, p, _ in made if m not in ("GET", "PATCH")} == set(), made
    # The source is read before its first request; the Kustomization is read when it is checked
    # (before the wait), and its request starts from the watched copy: so one read per patch.
    for obj in (source + "/gitops", ks + "/apps"):
        patches = sum(1 for m, p, _ in made if m == "PATCH" and p.endswith(obj))
        assert patches >= 1 and patches == sum(1 for m, p, _ in made if m == "GET" and p.endswith(obj)), made
    assert [q["object"] for q in result.requests] == ["flux-system/GitRepository/gitops", "flux-system/Kustomization/apps"]


# -- forge status -------------------------------------------------------------------------------


def target(flux: Flux, kustomizations: tuple[str, ...] = ("apps",)) -> TargetPlan:
    return TargetPlan(environment="staging", cluster="staging", kube_context=None, kubeconfig=None, namespace="default",
                      gitops=GitOpsPlan(repo="gitops.git", branch="main", path="apps", file="kustomization.yaml",
                                        commit_message="deploy", push_attempts=3),
                      flux=flux.plan(kustomizations),
                      promotion=PromotionPlan(from_environment=None, require_approval=False, require_verification=False))


def test_flux_status_reports_ready_and_revisions(kube: Kube, flux: Flux, flux_remote: GitRemote) -> None:
    head = flux.install()
    doc = flux_status(kube.api(), target(flux, ("apps", "absent")))
    assert doc["source"]["revision"] == f"main@sha1:{head}" and doc["source"]["ready"] == "True"
    apps, absent = doc["kustomizations"]
    assert apps["ready"] == "True" and apps["last_applied_revision"] == f"main@sha1:{head}"
    assert absent["found"] is False and doc["ready"] is False
    assert flux_status(kube.api(), target(flux))["ready"] is True


def test_flux_status_unreachable_api_is_a_reconcile_error(kube: Kube, flux: Flux) -> None:
    with pytest.raises(ReconcileError, match="cannot reach the Kubernetes API"):
        flux_status(kube.api("elsewhere"), target(flux))


def test_reconcile_rejects_a_source_kind_without_commits(kube: Kube, flux: Flux) -> None:
    plan = FluxPlan(namespace="flux-system", source_kind="OCIRepository", source_name="oci",
                    kustomizations=("apps",), timeout=5)
    with pytest.raises(ReconcileError, match="only through a GitRepository"):
        reconcile(kube.api(), plan, commit="a" * 40, branch="main")


def test_install_returns_only_when_nothing_more_is_queued(kube: Kube, flux: Flux, flux_remote: GitRemote) -> None:
    # A Kustomization created before its source is ready queues a retry; a test reading the
    # status while that retry runs sees Ready=Unknown (a race that failed CI once).
    flux.install(("apps", "more"))
    keys = [("GitRepository", flux.namespace, "gitops"), ("Kustomization", flux.namespace, "apps"),
            ("Kustomization", flux.namespace, "more")]
    assert kube.standin.call(lambda: flux.sim.settled(keys))


# -- a source that names no branch ----------------------------------------------------------


@pytest.fixture(params=["standin", pytest.param("real", marks=pytest.mark.realplane)])
def unbranched_source(request: pytest.FixtureRequest, flux_remote: GitRemote) -> Iterator[tuple[Any, FluxPlan, str]]:
    """GitRepository ``gitops`` with no ``spec.ref`` over a remote with ``main`` and ``master``
    (``master`` left at the first commit), and Kustomization ``apps``; the client, the plan, and
    the ``master`` commit. On the real control plane, the real source-controller decides what
    such a source follows; the stand-in's Flux simulation must agree."""
    master = flux_remote.head()
    flux_remote.git("push", "-q", "origin", "HEAD:refs/heads/master")
    repo = {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "spec": {"interval": "10m", "url": flux_remote.url}}
    ks = {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
          "spec": {"interval": "10m", "path": "./apps", "prune": False,
                   "sourceRef": {"kind": "GitRepository", "name": "gitops"}}}
    if request.param == "standin":
        flux = request.getfixturevalue("flux")
        flux.standin.create("gitrepositories", {**repo, "metadata": {"name": "gitops", "namespace": flux.namespace}})
        flux.standin.create("kustomizations", {**ks, "metadata": {"name": "apps", "namespace": flux.namespace}})
        yield flux.kube.api(), flux.plan(timeout=SAFETY), master
        return
    from tests.fixtures.controlplane import namespace_for

    plane = request.getfixturevalue("control_plane")
    ns = plane.create_namespace(namespace_for(request.node.nodeid))
    repo["spec"]["url"] = plane.git_url(flux_remote.bare)
    ks["spec"]["targetNamespace"] = ns
    plane.apply([{**repo, "metadata": {"name": "gitops", "namespace": ns}},
                 {**ks, "metadata": {"name": "apps", "namespace": ns}}])
    yield api_client(str(plane.kubeconfig)), FluxPlan(namespace=ns, source_kind="GitRepository", source_name="gitops",
                                                      kustomizations=("apps",), timeout=SAFETY), master


def test_a_source_naming_no_branch_follows_master_and_a_push_to_main_fails_at_once(
        unbranched_source: tuple[Any, FluxPlan, str], flux_remote: GitRemote) -> None:
    """Flux clones ``master`` when a GitRepository's spec.ref names nothing (not the remote's
    default branch). Forge pushed to ``main``: Flux will never fetch it, so the deploy fails at
    once saying so, instead of waiting out flux.timeout for a commit that cannot come."""
    api, plan, master = unbranched_source
    co = kubeapi.CustomObjectsApi(api)

    def served() -> str | None:
        obj = co.get_namespaced_custom_object("source.toolkit.fluxcd.io", "v1", plan.namespace, "gitrepositories",
                                              "gitops")
        return ((obj.get("status") or {}).get("artifact") or {}).get("revision")
    assert wait_until(served, timeout=60) == f"master@sha1:{master}"  # what Flux itself follows
    ours = flux_remote.set_tag("v2")
    with pytest.raises(ReconcileError) as excinfo:
        reconcile(api, plan, commit=ours, branch="main")
    message, doc = failure(excinfo)
    assert doc["outcome"] == "failed" and doc["reason"] == "RefMismatch", message
    assert "follows branch master (Flux's default" in message and f"commit {ours[:7]} to branch main" in message


# -- two deploys asking at once ---------------------------------------------------------------


@pytest.fixture(params=["standin", pytest.param("real", marks=pytest.mark.realplane)])
def apps_kustomization(request: pytest.FixtureRequest) -> Iterator[tuple[Any, str]]:
    """A Kustomization ``apps`` to annotate, and the client: on the stand-in (nothing else writes
    it), or on the real control plane (the real kustomize-controller updates its status too)."""
    obj = {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": {"name": "apps"},
           "spec": {"interval": "10m", "path": "./apps", "prune": False,
                    "sourceRef": {"kind": "GitRepository", "name": "gitops"}}}
    if request.param == "standin":
        kube = request.getfixturevalue("kube")
        kube.standin.create("kustomizations", {**obj, "metadata": {"name": "apps", "namespace": "flux-system"}})
        yield kubeapi.CustomObjectsApi(kube.api()), "flux-system"
        return
    from tests.fixtures.controlplane import namespace_for

    plane = request.getfixturevalue("control_plane")
    ns = plane.create_namespace(namespace_for(request.node.nodeid))
    plane.apply({**obj, "metadata": {"name": "apps", "namespace": ns}})
    yield kubeapi.CustomObjectsApi(api_client(str(plane.kubeconfig))), ns


def requester(co: Any, namespace: str) -> tuple[_Requester, ReconcileResult]:
    plan = FluxPlan(namespace=namespace, source_kind="GitRepository", source_name="gitops", kustomizations=("apps",),
                    timeout=5)
    result = ReconcileResult("timeout", "", "a" * 40, "main")
    return _Requester(co, plan, result, time.monotonic(), lambda _: None), result


def annotation(co: Any, namespace: str) -> str:
    group, version, plural = KUSTOMIZATION
    return co.get_namespaced_custom_object(group, version, namespace, plural, "apps")["metadata"]["annotations"][
        REQUESTED_AT]


def test_a_request_written_over_a_later_one_is_refused_and_written_later_still(
        apps_kustomization: tuple[Any, str]) -> None:
    """Deploys A and B annotate at once: A made its token and read the object, B wrote its later
    token, then A writes. A blind write would leave A's older token on top: Flux would handle it
    and B would wait out its whole flux.timeout for a reconcile nobody answers. A's write carries
    the resourceVersion it read, so it is refused (409); A reads again and writes a later token."""
    co, ns = apps_kustomization
    group, version, plural = KUSTOMIZATION
    a_token = request_token()
    seen_by_a = co.get_namespaced_custom_object(group, version, ns, plural, "apps")
    b, _ = requester(co, ns)
    b_token = b.annotate("Kustomization", KUSTOMIZATION, "apps", request_token(), seen_by_a)
    a, a_result = requester(co, ns)
    written = a.annotate("Kustomization", KUSTOMIZATION, "apps", a_token, seen_by_a)
    assert annotation(co, ns) == written
    assert token_ns(written) > token_ns(b_token) > token_ns(a_token)  # type: ignore[operator]
    assert [q["token"] for q in a_result.requests] == [written]


def test_a_token_from_a_clock_ahead_of_ours_is_answered_with_a_later_one(
        apps_kustomization: tuple[Any, str]) -> None:
    """Another deployer's clock runs an hour ahead: its pending token is later than any we would
    make. Ours must not go under it (that deployer would never see its request handled)."""
    co, ns = apps_kustomization
    ahead = request_token(time.time_ns() + 3600 * 10**9)
    other, _ = requester(co, ns)
    assert other.annotate("Kustomization", KUSTOMIZATION, "apps", ahead) == ahead
    ours, _ = requester(co, ns)
    written = ours.annotate("Kustomization", KUSTOMIZATION, "apps", request_token())
    assert annotation(co, ns) == written and token_ns(written) > token_ns(ahead)  # type: ignore[operator]
