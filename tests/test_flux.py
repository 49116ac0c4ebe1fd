"""The pure part of the Flux reconcile: tokens, revisions, and ``assess`` on hand-written snapshots.

Each snapshot is what Flux writes at one moment of a reconcile; the verdict must never be
``done`` on a commit other than ours, must fail at once on a Ready=False Flux will not retry by
itself, and must wait (naming the unmet condition) on everything else.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest

from forgegen.runtime.flux import (
    Expectation,
    FluxSnapshot,
    ReconcileResult,
    assess,
    git_revision,
    object_status,
    request_token,
    revision_sha,
)

OURS = "a" * 40
OLD = "b" * 40
NEWER = "c" * 40
NS = "flux-system"
STOKEN = "2025-01-02T03:04:05.000000001Z"
KTOKEN = "2025-01-02T03:04:05.000000002Z"


def cond(type_: str, status: str, reason: str = "", message: str = "") -> dict:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def source(revision: str | None = None, *, handled: str | None = None, ready: str = "True", reason: str = "Succeeded",
           message: str = "stored artifact", generation: int = 1, observed: int = 1, ref: dict | None = None,
           suspend: bool = False) -> dict:
    st: dict[str, Any] = {"observedGeneration": observed, "conditions": [cond("Ready", ready, reason, message)]}
    if revision:
        st["artifact"] = {"revision": revision}
    if handled:
        st["lastHandledReconcileAt"] = handled
    spec: dict[str, Any] = {"url": "file:///gitops.git", "ref": ref if ref is not None else {"branch": "main"}}
    if suspend:
        spec["suspend"] = True
    return {"metadata": {"name": "gitops", "namespace": NS, "generation": generation, "resourceVersion": "10"},
            "spec": spec, "status": st}


def ks(name: str = "apps", applied: str | None = None, *, attempted: str | None = None, handled: str | None = None,
       ready: str = "True", reason: str = "ReconciliationSucceeded", message: str = "Applied revision",
       generation: int = 1, observed: int = 1, source_name: str = "gitops", suspend: bool = False) -> dict:
    st: dict[str, Any] = {"observedGeneration": observed, "conditions": [cond("Ready", ready, reason, message)]}
    if applied:
        st["lastAppliedRevision"] = applied
    st["lastAttemptedRevision"] = attempted or applied
    if handled:
        st["lastHandledReconcileAt"] = handled
    spec: dict[str, Any] = {"path": "./apps", "sourceRef": {"kind": "GitRepository", "name": source_name}}
    if suspend:
        spec["suspend"] = True
    return {"metadata": {"name": name, "namespace": NS, "generation": generation, "resourceVersion": "11"},
            "spec": spec, "status": st}


def expect(*, ktoken: str | None = KTOKEN, names: tuple[str, ...] = ("apps",), accept: Any = None) -> Expectation:
    return Expectation(NS, "GitRepository", "gitops", names, "main", OURS, source_token=STOKEN,
                       kustomization_token=ktoken, accept=accept)


def snap(src: dict | None, *kss: dict) -> FluxSnapshot:
    return FluxSnapshot(src, {k["metadata"]["name"]: k for k in kss})


R_OURS, R_OLD, R_NEWER = git_revision("main", OURS), git_revision("main", OLD), git_revision("main", NEWER)


# -- tokens and revisions -------------------------------------------------------------------------


def test_request_token_is_rfc3339_nano_utc() -> None:
    token = request_token(1_700_000_000_123_456_789)
    assert token == "2023-11-14T22:13:20.123456789Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", request_token())


def test_request_token_unique_in_a_tight_loop() -> None:
    tokens = [request_token() for _ in range(1000)]
    assert len(set(tokens)) == 1000


@pytest.mark.parametrize("revision, sha", [
    (f"main@sha1:{OURS}", OURS),
    (f"refs/heads/main@sha1:{OURS}", OURS),
    (OURS, OURS),  # Flux < 0.x wrote the bare sha
    (f"main/{OURS}", OURS),  # Flux < 2.0: <branch>/<sha>
    (f"release/v1@sha1:{OURS.upper()}", OURS),
    ("", None), (None, None), ("main@sha1:not-hex", None), ("v1.2.3@sha256:zz", None),
])
def test_revision_sha_reads_every_flux_format(revision: str | None, sha: str | None) -> None:
    assert revision_sha(revision) == sha


# -- the source -----------------------------------------------------------------------------------


def test_assess_waits_while_the_source_serves_the_old_commit() -> None:
    v = assess(snap(source(R_OLD, handled="earlier"), ks(applied=R_OLD, handled="earlier")), expect(ktoken=None))
    assert v.state == "waiting" and v.request is None and not v.source_ours
    assert R_OLD in v.unmet[0] and OURS[:7] in v.unmet[0]


def test_assess_requests_again_when_the_source_handled_us_but_fetched_an_old_commit() -> None:
    v = assess(snap(source(R_OLD, handled=STOKEN), ks(applied=R_OLD)), expect(ktoken=None))
    assert v.state == "waiting" and v.request == "source"


def test_assess_does_not_count_a_handled_request_before_the_generation_is_observed() -> None:
    v = assess(snap(source(R_OLD, handled=STOKEN, generation=2, observed=1), ks(applied=R_OLD)), expect(ktoken=None))
    assert v.state == "waiting" and v.request is None


def test_assess_fails_when_the_source_cannot_fetch() -> None:
    v = assess(snap(source(R_OLD, handled=STOKEN, ready="False", reason="GitOperationFailed",
                           message="unable to clone: repository not found"), ks(applied=R_OLD)), expect(ktoken=None))
    assert v.state == "failed" and v.failure is not None
    assert v.failure.reason == "GitOperationFailed" and v.failure.where == f"{NS}/GitRepository/gitops"
    assert "repository not found" in v.failure.message


def test_assess_asks_the_kustomizations_once_the_source_serves_our_commit() -> None:
    v = assess(snap(source(R_OURS), ks(applied=R_OLD)), expect(ktoken=None))
    assert v.state == "waiting" and v.request == "kustomizations" and v.source_ours


@pytest.mark.parametrize("ref, what", [
    ({"branch": "release"}, "branch release"), ({"tag": "v1.0.0"}, "tag v1.0.0"),
    ({"commit": OLD}, f"commit {OLD}"), ({"semver": ">=1.0.0"}, "semver >=1.0.0"), ({"name": "refs/tags/v1"}, "ref refs/tags/v1"),
])
def test_assess_fails_when_the_source_follows_another_ref(ref: dict, what: str) -> None:
    v = assess(snap(source(R_OLD, ref=ref), ks(applied=R_OLD)), expect(ktoken=None))
    assert v.state == "failed" and v.failure is not None and v.failure.reason == "RefMismatch"
    assert what in v.failure.message and "branch main" in v.failure.message


def without_ref(src: dict) -> dict:
    del src["spec"]["ref"]
    return src


@pytest.mark.parametrize("make", [lambda: source(git_revision("master", OLD), ref={}),
                                  lambda: source(git_revision("master", OLD), ref={"branch": ""}),
                                  lambda: without_ref(source(git_revision("master", OLD)))],
                         ids=["empty-ref", "empty-branch", "no-spec-ref"])
def test_assess_fails_when_the_source_names_no_branch_so_flux_follows_master(make: Any) -> None:
    # source-controller clones `master` when spec.ref names nothing (not the remote's HEAD): a
    # push to main never reaches it. This used to wait out flux.timeout.
    v = assess(snap(make(), ks(applied=R_OLD)), expect(ktoken=None))
    assert v.state == "failed" and v.failure is not None and v.failure.reason == "RefMismatch"
    assert "follows branch master (Flux's default" in v.failure.message and "branch main" in v.failure.message
    assert "spec.ref" in v.failure.hint


def test_assess_a_source_without_a_branch_is_fine_when_we_push_master() -> None:
    r_master = git_revision("master", OURS)
    v = assess(snap(without_ref(source(r_master)), ks(applied=R_OLD)),
               Expectation(NS, "GitRepository", "gitops", ("apps",), "master", OURS, source_token=STOKEN))
    assert v.state == "waiting" and v.request == "kustomizations"


def test_assess_accepts_a_branch_ref_by_full_name() -> None:
    v = assess(snap(source(R_OURS, ref={"name": "refs/heads/main"}), ks(applied=R_OLD)), expect(ktoken=None))
    assert v.state == "waiting" and v.request == "kustomizations"


def test_assess_fails_on_a_suspended_source() -> None:
    v = assess(snap(source(R_OLD, suspend=True), ks()), expect(ktoken=None))
    assert v.failure is not None and v.failure.reason == "Suspended" and "flux resume source git gitops" in v.failure.hint


# -- the Kustomizations ---------------------------------------------------------------------------


def test_assess_done_only_when_every_condition_holds() -> None:
    v = assess(snap(source(R_OURS), ks(applied=R_OURS, handled=KTOKEN)), expect())
    assert v.state == "done" and v.kustomizations[0].revision == R_OURS


@pytest.mark.parametrize("kustomization, unmet", [
    (ks(applied=R_OURS, handled="someone else's"), "has not handled our reconcile request"),
    (ks(applied=R_OLD, handled=KTOKEN), f"applied {R_OLD}"),  # the Flux CLI would stop here (flux2#479)
    (ks(applied=R_OURS, handled=KTOKEN, generation=3, observed=2), "has not observed generation 3"),
    (ks(applied=R_OLD, attempted=R_OURS, handled=KTOKEN, ready="Unknown", reason="Progressing",
        message="Reconciliation in progress"), "is reconciling"),
    (ks(applied=R_OLD, attempted=R_OURS, handled=KTOKEN, ready="False", reason="DependencyNotReady",
        message="dependency 'flux-system/infra' is not ready"), "DependencyNotReady"),
    (ks(applied=R_OLD, attempted=R_OLD, handled=KTOKEN, ready="False", reason="BuildFailed",
        message="old failure"), "is not ready"),  # a failure of another commit is not ours
])
def test_assess_waits_and_names_the_unmet_condition(kustomization: dict, unmet: str) -> None:
    v = assess(snap(source(R_OURS), kustomization), expect())
    assert v.state == "waiting", v
    assert unmet in v.unmet[0] and f"Kustomization {NS}/apps" in v.unmet[0]


@pytest.mark.parametrize("reason", ["HealthCheckFailed", "BuildFailed", "ReconciliationFailed", "PruneFailed"])
def test_assess_fails_at_once_on_ready_false_for_our_commit(reason: str) -> None:
    k = ks(applied=R_OLD, attempted=R_OURS, handled=KTOKEN, ready="False", reason=reason, message="it broke")
    v = assess(snap(source(R_OURS), k), expect())
    assert v.state == "failed" and v.failure is not None
    assert v.failure.reason == reason and v.failure.where == f"{NS}/Kustomization/apps"
    assert f"{reason}: it broke" in v.failure.message and R_OURS in v.failure.message
    assert v.failure.hint


@pytest.mark.parametrize("message", [
    "kustomization path not found: stat /tmp/kustomization-1/apps: no such file or directory",
    "failed to download archive: GET http://source-controller.flux-system.svc/x.tar.gz giving up after 10 attempt(s)",
])
def test_assess_fails_on_artifact_failure_before_the_attempt_is_recorded(message: str) -> None:
    k = ks(applied=R_OLD, attempted=R_OLD, handled=KTOKEN, ready="False", reason="ArtifactFailed", message=message)
    v = assess(snap(source(R_OURS), k), expect())
    assert v.state == "failed" and v.failure is not None and v.failure.reason == "ArtifactFailed"


# kustomize-controller v1.9.6, internal/controller/kustomization_controller.go: the two
# ArtifactFailed messages with which it requeues itself after --requeue-dependency (30s).
@pytest.mark.parametrize("message", ["Source artifact not found, retrying in 30s",
                                     "Source is not ready, artifact not found, retrying in 30s"])
def test_assess_waits_on_an_artifact_flux_says_it_retries(message: str) -> None:
    # A restarted source-controller with emptied storage: the artifact in the source's status is
    # gone for a moment. Flux retries in 30 s and applies our commit: no failure to report.
    k = ks(applied=R_OLD, attempted=R_OLD, handled=KTOKEN, ready="False", reason="ArtifactFailed", message=message)
    v = assess(snap(source(R_OURS), k), expect())
    assert v.state == "waiting" and v.failure is None
    assert f"is not ready: ArtifactFailed: {message}" in v.unmet[0]
    then = ks(applied=R_OURS, attempted=R_OURS, handled=KTOKEN)  # the retry, under the same request
    assert assess(snap(source(R_OURS), then), expect()).state == "done"


def checking_health(revision: str, **kw: Any) -> dict:
    """A Kustomization with spec.wait mid-reconcile, as kustomize-controller writes it: applied
    ``revision`` and running its health checks; lastApplied/lastHandled not yet written."""
    k = ks(applied=R_OLD, attempted=revision, handled=STOKEN, ready="Unknown", reason="Progressing",
           message="Reconciliation in progress", **kw)
    k["status"]["conditions"] += [
        cond("Reconciling", "True", "Progressing", f"Running health checks for revision {revision} with a timeout of 5m0s"),
        cond("Healthy", "Unknown", "Progressing", f"Running health checks for revision {revision} with a timeout of 5m0s")]
    return k


def test_assess_applied_with_health_checks_running_is_done_when_a_rollout_watch_follows() -> None:
    exp = replace(expect(), rollout_follows=True)
    v = assess(snap(source(R_OURS), checking_health(R_OURS)), exp)
    assert v.state == "done" and v.revision == R_OURS and v.health_checks == ("apps",)
    assert "health checks" in v.message and "rollout watch" in v.message
    # without a rollout watch after it (`forge reconcile`), Ready is waited for, as before
    w = assess(snap(source(R_OURS), checking_health(R_OURS)), expect())
    assert w.state == "waiting" and "applied it and runs its health checks" in w.unmet[0]


def test_assess_health_checks_of_another_revision_are_waited_on() -> None:
    # the controller still checks the previous commit: ours is not applied yet
    v = assess(snap(source(R_OURS), checking_health(R_OLD)), replace(expect(), rollout_follows=True))
    assert v.state == "waiting" and v.health_checks == ()
    # a timeout says why nothing happens, and what would change it
    assert f"is still running the health checks of {R_OLD}" in v.unmet[0]
    assert "CancelHealthCheckOnNewRevision" in v.unmet[0]


def test_assess_done_names_the_applied_revision_when_some_still_check_health() -> None:
    done = ks("infra", applied=R_OURS, handled=KTOKEN)
    v = assess(snap(source(R_OURS), done, checking_health(R_OURS)),
               replace(expect(names=("infra", "apps")), rollout_follows=True))
    assert v.state == "done" and v.revision == R_OURS and v.health_checks == ("apps",)


def test_assess_waits_for_every_kustomization() -> None:
    done = ks("infra", applied=R_OURS, handled=KTOKEN)
    busy = ks("apps", applied=R_OLD, handled=KTOKEN, ready="Unknown", reason="Progressing")
    v = assess(snap(source(R_OURS), done, busy), expect(names=("infra", "apps")))
    assert v.state == "waiting" and len(v.unmet) == 1 and "apps" in v.unmet[0]


def test_assess_fails_when_a_kustomization_uses_another_source() -> None:
    v = assess(snap(source(R_OLD), ks(source_name="other")), expect(ktoken=None))
    assert v.failure is not None and v.failure.reason == "SourceMismatch"
    assert f"{NS}/GitRepository/other" in v.failure.message


def test_assess_fails_on_a_suspended_kustomization() -> None:
    v = assess(snap(source(R_OLD), ks(suspend=True)), expect(ktoken=None))
    assert v.failure is not None and v.failure.reason == "Suspended"
    assert "flux resume kustomization apps -n flux-system" in v.failure.hint


def test_assess_fails_when_an_object_disappears() -> None:
    assert assess(snap(None, ks()), expect()).failure.reason == "NotFound"  # type: ignore[union-attr]
    v = assess(snap(source(R_OURS)), expect())
    assert v.failure is not None and v.failure.reason == "NotFound" and "flux get kustomizations -A" in v.failure.hint


def test_assess_a_later_commit_counts_only_when_the_caller_says_it_contains_ours() -> None:
    s = snap(source(R_NEWER), ks(applied=R_NEWER, handled=KTOKEN))
    assert assess(s, expect()).state == "waiting"
    assert assess(s, expect(accept=lambda sha: sha == NEWER)).state == "done"


def test_assess_accepts_the_bare_sha_older_flux_wrote() -> None:
    v = assess(snap(source(OURS), ks(applied=OURS, handled=KTOKEN)), expect())
    assert v.state == "done"


def test_object_status_and_result_json() -> None:
    st = object_status("Kustomization", NS, "apps", ks(applied=R_OURS, handled=KTOKEN))
    assert st.to_json()["last_applied_revision"] == R_OURS and st.describe().startswith("Ready=True")
    assert object_status("GitRepository", NS, "gone", None).to_json()["found"] is False
    doc = ReconcileResult("success", "ok", OURS, "main", revision=R_OURS, token=KTOKEN,
                          kustomizations=(st,), source_after=0.01234, applied_after=0.1, elapsed=0.1).to_json()
    assert doc["revision"] == R_OURS and doc["timings"]["source_seconds"] == 0.012
    assert doc["kustomizations"][0]["name"] == "apps"
