"""Flux reconcile: ask Flux to apply the commit we pushed, and wait until it has applied *that* commit.

Two pieces (STYLE.md point 31):

* :func:`assess` — pure: a :class:`FluxSnapshot` (the GitRepository and the environment's
  Kustomizations as the watches last saw them) plus an :class:`Expectation` (our commit, the
  tokens we sent) to a :class:`Verdict`: ``waiting`` (with the condition not yet met),
  ``done``, ``failed`` (Flux's reason and message), and the request to send next, if any.
* :func:`reconcile` — the thin loop: annotate, then watch (list, watch from the list's
  ``resourceVersion``, resume when a connection drops, re-list on ``410 Gone``; the watch
  loop is :func:`forgegen.runtime.watch.watch_until`) until the verdict is final or the
  deadline passes.

The protocol (REFERENCE.md, "Flux reconcile"): a merge patch sets the annotation
``reconcile.fluxcd.io/requestedAt`` to a unique token (RFC 3339 with nanoseconds, as the Flux
CLI writes it); the controller copies the token to ``status.lastHandledReconcileAt`` when the
reconcile it triggered is finished. The Flux CLI stops there (fluxcd/flux2#479) and can report
success on the previous commit. Forge waits for *our* commit:

1. The GitRepository is annotated; we wait until ``status.artifact.revision`` is our commit
   (``<branch>@sha1:<sha>``, or the bare ``<sha>`` / ``<branch>/<sha>`` older Flux wrote). If it
   handled our request but fetched an older commit (our push raced its fetch) we ask again with
   a new token, backing off, rather than accept the old commit.
2. Only then is every Kustomization annotated (a token issued after the source had our commit,
   so the reconcile that handles it builds our commit — as ``flux reconcile ks --with-source``).
3. A Kustomization is done when ``lastHandledReconcileAt`` is its token, ``observedGeneration``
   caught up, ``Ready`` is True and ``lastAppliedRevision`` is our commit. ``Ready=False`` after
   handling our token fails at once with Flux's reason and message, except the reasons Flux
   itself retries shortly (``DependencyNotReady``, ``HealthCheckCanceled``, and ``ArtifactFailed``
   when its message says the artifact is not there yet and it is retrying): those are waited on
   and named if the deadline passes.

Every request is written with the ``resourceVersion`` it read and a token later than the one the
object carries, so two deploys annotating one object at once never leave the older token last
(Flux would handle it, and nothing the newer one): the second write gets 409, reads, and writes
a later token. ``lastHandledReconcileAt`` at or after our token then means ours was covered.

Failures raise :class:`~forgegen.errors.ReconcileError` (four-part messages); the error carries
the partial :class:`ReconcileResult` as ``err.result`` for the JSON report.
The API is reached through :mod:`forgegen.runtime.kubeapi` (imported inside functions); objects
are read as the typed views of :mod:`forgegen.runtime.k8stypes`.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from forgegen.errors import ReconcileError
from forgegen.runtime.k8stypes import Condition, FluxObject, FluxSpec, FluxStatus, ObjectMeta
from forgegen.runtime.kube import api_error, iso
from forgegen.runtime.watch import Fatal, Streams, rv, watch_until

if TYPE_CHECKING:
    from forgegen.plan import FluxPlan, TargetPlan

log = logging.getLogger(__name__)

REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
SOURCE_GROUP = "source.toolkit.fluxcd.io"
KUSTOMIZE_GROUP = "kustomize.toolkit.fluxcd.io"
# kind -> (group, version, plural)
SOURCE_TYPES = {
    "GitRepository": (SOURCE_GROUP, "v1", "gitrepositories"),
    "OCIRepository": (SOURCE_GROUP, "v1beta2", "ocirepositories"),
    "Bucket": (SOURCE_GROUP, "v1", "buckets"),
}
KUSTOMIZATION = (KUSTOMIZE_GROUP, "v1", "kustomizations")
# Ready=False reasons Flux retries by itself within moments: wait on them, do not fail.
TRANSIENT_REASONS = frozenset({"DependencyNotReady", "HealthCheckCanceled", "Progressing", "ProgressingWithRetry"})
# Ready=False reasons set before ``lastAttemptedRevision`` is updated (fetching the artifact).
PRE_ATTEMPT_REASONS = frozenset({"ArtifactFailed", "AccessDenied", "InvalidCELExpression"})
# ArtifactFailed messages in which kustomize-controller says it retries shortly by itself (the
# source's artifact is not there, or not downloadable, yet: a restarted source-controller whose
# storage was emptied; kustomize-controller internal/controller/kustomization_controller.go,
# requeued after --requeue-dependency, 30 s by default): waited on, like DependencyNotReady.
RETRYING_ARTIFACT = re.compile(r"^Source (?:is not ready, )?artifact not found, retrying in ")
# kustomize-controller's Reconciling message while it runs the health checks (spec.wait,
# spec.healthChecks) of a revision it has applied (internal/controller/kustomization_controller.go,
# checkHealth). lastAppliedRevision and lastHandledReconcileAt are written only when they end: for
# a crash-looping Deployment at its progress deadline (600 s), or at spec.timeout.
HEALTH_CHECKS = re.compile(r"^Running health checks for revision (\S+) with a timeout of ")
REQUEST_BACKOFF = (0.25, 4.0)  # re-request of a source that fetched an older commit: first, cap
# A reconcile request that met a concurrent write (409) is read and written again, for this long,
# pausing a little between tries after the first few (Flux writes status often while it works).
CONFLICT_SECONDS = 10.0

VerdictState = Literal["waiting", "done", "failed"]


# =============================================================================================
# Tokens and revisions


_token_lock = threading.Lock()
_last_token_ns = 0


def request_token(now_ns: int | None = None, *, after_ns: int = 0) -> str:
    """A unique reconcile-request token: the time in RFC 3339 with nanoseconds (Flux CLI style).

    Tokens from the clock are unique within the process even when the clock repeats or steps
    back, and later than ``after_ns``; ``now_ns`` formats a given time as is.
    """
    global _last_token_ns
    if now_ns is None:
        with _token_lock:
            now_ns = _last_token_ns = max(time.time_ns(), _last_token_ns + 1, after_ns + 1)
    ns = now_ns
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{frac:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


_HEX = re.compile(r"^[0-9a-f]{7,64}$")
FLUX_DEFAULT_BRANCH = "master"  # what a GitRepository without spec.ref.branch (or any other ref) follows


_TOKEN = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z$")


def token_ns(token: str | None) -> int | None:
    """A request token written as :func:`request_token` (or the Flux CLI) writes it, in ns; else None."""
    m = _TOKEN.match(token or "")
    if m is None:
        return None
    secs = int(datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
    return secs * 1_000_000_000 + int((m.group(2) or "0").ljust(9, "0"))


def handled_token(last_handled: str | None, ours: str | None) -> bool:
    """Flux handled our request: ``lastHandledReconcileAt`` is our token, or a later one (another
    deploy asked after us; the controller handles the latest request, which covers ours)."""
    if ours is None or not last_handled:
        return False
    if last_handled == ours:
        return True
    a, b = token_ns(last_handled), token_ns(ours)
    return a is not None and b is not None and a >= b


def revision_sha(revision: str | None) -> str | None:
    """The commit in a Flux revision: ``main@sha1:<sha>``, ``<sha>`` or ``main/<sha>`` (Flux < 2.0)."""
    if not revision:
        return None
    rev = revision.strip().lower()
    for marker in ("@sha1:", "@sha256:"):
        if marker in rev:
            rev = rev.rsplit(marker, 1)[1]
            break
    else:
        if "/" in rev:
            rev = rev.rsplit("/", 1)[1]
    return rev if _HEX.fullmatch(rev) else None


def git_revision(branch: str, sha: str) -> str:
    """The revision Flux writes for ``sha`` on ``branch`` (Flux >= 2.0)."""
    return f"{branch}@sha1:{sha}"


# =============================================================================================
# The pure part: snapshot -> verdict


@dataclass
class FluxSnapshot:
    """What the watches have seen: the source object and the Kustomizations by name."""

    source: FluxObject | None = None
    kustomizations: dict[str, FluxObject] = field(default_factory=dict)

    def apply(self, resource: str, kind: str, wire: dict[str, Any]) -> None:
        """Apply one watch event (``ADDED``/``MODIFIED``/``DELETED``) of ``resource``."""
        obj = cast(FluxObject, wire)
        name = (obj.get("metadata") or {}).get("name", "")
        if resource == "source":
            if kind == "DELETED":
                self.source = None
            elif self.source is None or rv(self.source) <= rv(obj):
                self.source = obj
            return
        if kind == "DELETED":
            self.kustomizations.pop(name, None)
            return
        held = self.kustomizations.get(name)
        if held is None or rv(held) <= rv(obj):
            self.kustomizations[name] = obj

    def replace(self, resource: str, items: Iterable[dict[str, Any]]) -> None:
        """Replace a collection with a fresh list (after the first list or a 410)."""
        objs = [cast(FluxObject, o) for o in items]
        if resource == "source":
            self.source = objs[0] if objs else None
        else:
            self.kustomizations = {o["metadata"]["name"]: o for o in objs}


@dataclass(frozen=True)
class Expectation:
    """What we wait for: our commit on ``branch``, and the tokens we have sent."""

    namespace: str
    source_kind: str
    source_name: str
    kustomizations: tuple[str, ...]
    branch: str
    sha: str
    source_token: str | None = None
    kustomization_token: str | None = None  # None until the source serves our commit
    accept: Callable[[str], bool] | None = None  # is this (other) commit one that contains ours?
    rollout_follows: bool = False  # a rollout watch follows: applied, with health checks running, is enough

    def ours(self, revision: str | None) -> bool:
        sha = revision_sha(revision)
        if sha is None:
            return False
        mine = self.sha.lower()
        if sha.startswith(mine) or mine.startswith(sha):
            return True
        return bool(self.accept is not None and self.accept(sha))

    @property
    def revision(self) -> str:
        return git_revision(self.branch, self.sha)

    @property
    def sha7(self) -> str:
        return self.sha[:7]


@dataclass(frozen=True)
class ObjectStatus:
    """One Flux object as last seen, for the report and for messages."""

    kind: str
    namespace: str
    name: str
    found: bool = True
    ready: str | None = None  # "True" / "False" / "Unknown" / None (no Ready condition)
    reason: str | None = None
    message: str | None = None
    revision: str | None = None  # source: artifact revision; Kustomization: lastAppliedRevision
    attempted_revision: str | None = None  # Kustomization: lastAttemptedRevision
    last_handled: str | None = None
    generation: int | None = None
    observed_generation: int | None = None
    suspended: bool = False
    reconciling: str | None = None  # the Reconciling condition's message, while True

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.kind}/{self.name}"

    @property
    def observed(self) -> bool:
        return self.observed_generation is not None and (self.generation or 0) <= self.observed_generation

    def describe(self) -> str:
        """``Ready=False HealthCheckFailed: <message>`` or ``Ready=Unknown``."""
        if not self.found:
            return "not found"
        text = f"Ready={self.ready or 'Unknown'}"
        if self.reason:
            text += f" {self.reason}"
        if self.message:
            text += f": {self.message}"
        return text

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "kind": self.kind, "namespace": self.namespace, "name": self.name, "found": self.found,
            "ready": self.ready, "reason": self.reason, "message": self.message,
            "last_handled_reconcile_at": self.last_handled, "suspended": self.suspended,
            "generation": self.generation, "observed_generation": self.observed_generation,
        }
        if self.kind == "Kustomization":
            doc["last_applied_revision"] = self.revision
            doc["last_attempted_revision"] = self.attempted_revision
        else:
            doc["revision"] = self.revision
        return doc


def object_status(kind: str, namespace: str, name: str, obj: FluxObject | None) -> ObjectStatus:
    if obj is None:
        return ObjectStatus(kind, namespace, name, found=False)
    meta: ObjectMeta = obj.get("metadata") or {}
    spec: FluxSpec = obj.get("spec") or {}
    st: FluxStatus = obj.get("status") or {}
    ready = _condition(st, "Ready")
    reconciling = _condition(st, "Reconciling")
    if kind == "Kustomization":
        revision, attempted = st.get("lastAppliedRevision") or None, st.get("lastAttemptedRevision") or None
    else:
        revision, attempted = (st.get("artifact") or {}).get("revision") or None, None
    return ObjectStatus(
        kind, namespace, name, True,
        ready=ready.get("status") if ready else None, reason=ready.get("reason") if ready else None,
        message=ready.get("message") if ready else None, revision=revision, attempted_revision=attempted,
        last_handled=st.get("lastHandledReconcileAt") or None, generation=meta.get("generation"),
        observed_generation=st.get("observedGeneration"), suspended=bool(spec.get("suspend")),
        reconciling=reconciling.get("message") if reconciling and reconciling.get("status") == "True" else None)


def _condition(status: FluxStatus, type_: str) -> Condition | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


@dataclass(frozen=True)
class Failure:
    where: str  # namespace/Kind/name
    reason: str
    message: str
    hint: str


@dataclass(frozen=True)
class Verdict:
    state: VerdictState
    message: str  # the progress line (waiting), or what happened (done / failed)
    failure: Failure | None = None
    source_ours: bool = False
    request: Literal["source", "kustomizations"] | None = None  # what to annotate next
    unmet: tuple[str, ...] = ()  # for a timeout: each condition not yet met, with what was seen
    source: ObjectStatus | None = None
    kustomizations: tuple[ObjectStatus, ...] = ()
    revision: str | None = None  # done: the revision the Kustomizations applied (ours, or one containing it)
    health_checks: tuple[str, ...] = ()  # done: Kustomizations whose health checks of it were still running


def assess(snap: FluxSnapshot, exp: Expectation) -> Verdict:
    """Where the reconcile stands, from one snapshot."""
    ns = exp.namespace
    src = object_status(exp.source_kind, ns, exp.source_name, snap.source)
    kss = tuple(object_status("Kustomization", ns, k, snap.kustomizations.get(k)) for k in exp.kustomizations)
    v = _Verdicts(src, kss)
    refused = _refused(snap, exp, v)
    if refused is not None:
        return refused
    if not exp.ours(src.revision):
        return _source_waiting(exp, v)
    return _kustomizations_verdict(exp, v)


@dataclass(frozen=True)
class _Verdicts:
    """Verdicts that carry the objects as seen (for the report)."""

    src: ObjectStatus
    kss: tuple[ObjectStatus, ...]

    def verdict(self, state: VerdictState, message: str, **kw: Any) -> Verdict:
        return Verdict(state, message, source=self.src, kustomizations=self.kss, **kw)

    def fail(self, obj: ObjectStatus, reason: str, message: str, hint: str) -> Verdict:
        return self.verdict("failed", message, failure=Failure(obj.where, reason, message, hint))


def _refused(snap: FluxSnapshot, exp: Expectation, v: _Verdicts) -> Verdict | None:
    """A failure no waiting can cure: an object gone or suspended, a source on another ref."""
    ns, src, kss, fail = exp.namespace, v.src, v.kss, v.fail
    if snap.source is None:
        return fail(src, "NotFound", f"{src.kind} {ns}/{src.name} was deleted while Forge waited for it",
                    _missing_hint(src.kind))
    if src.suspended:
        return fail(src, "Suspended", f"{src.kind} {ns}/{src.name} is suspended: Flux will not fetch commit {exp.sha7}",
                    f"resume it: `flux resume source {_cli_kind(src.kind)} {src.name} -n {ns}`, then deploy again")
    pinned = _pinned_elsewhere((snap.source.get("spec") or {}).get("ref") or {}, exp.branch)
    source_ours = exp.ours(src.revision)
    if pinned and not source_ours:
        return fail(src, "RefMismatch", f"{src.kind} {ns}/{src.name} follows {pinned}, but Forge pushed commit "
                    f"{exp.sha7} to branch {exp.branch}: Flux will never fetch it",
                    f"point spec.ref of {src.kind} {ns}/{src.name} at branch {exp.branch}, or set gitops.branch "
                    "in deploy.yaml to the branch Flux follows")
    for ks, obj in zip(kss, (snap.kustomizations.get(k) for k in exp.kustomizations)):
        if obj is None:
            continue
        ref = (obj.get("spec") or {}).get("sourceRef") or {}
        if ref.get("name") and (ref.get("name") != exp.source_name or (ref.get("namespace") or ns) != ns
                                or (ref.get("kind") or exp.source_kind) != exp.source_kind):
            other = f"{ref.get('namespace') or ns}/{ref.get('kind') or exp.source_kind}/{ref.get('name')}"
            return fail(ks, "SourceMismatch", f"Kustomization {ns}/{ks.name} takes its manifests from {other}, "
                        f"not from {src.where} that Forge asked to fetch commit {exp.sha7}",
                        "fix flux.source (or the environment's flux.source) in deploy.yaml to name the source "
                        f"the Kustomization uses: `kubectl -n {ns} get kustomization {ks.name} -o yaml`")
        if ks.suspended:
            return fail(ks, "Suspended", f"Kustomization {ns}/{ks.name} is suspended: Flux will not apply commit {exp.sha7}",
                        f"resume it: `flux resume kustomization {ks.name} -n {ns}`, then deploy again")
    return None


def _source_waiting(exp: Expectation, v: _Verdicts) -> Verdict:
    """The source does not serve our commit yet: wait, ask again, or fail on its error."""
    ns, src, verdict, fail = exp.namespace, v.src, v.verdict, v.fail
    handled = handled_token(src.last_handled, exp.source_token) and src.observed
    seen = src.revision or "no artifact yet"
    if handled and src.ready == "False":
        return fail(src, src.reason or "NotReady",
                    f"{src.kind} {ns}/{src.name} could not fetch branch {exp.branch}: "
                    f"{src.reason or 'Ready=False'}: {src.message or '(no message)'}",
                    f"check spec.url and the credentials of {src.kind} {ns}/{src.name} "
                    f"(`kubectl -n {ns} describe {_kubectl_kind(src.kind)} {src.name}`, `flux get sources git -A`)")
    unmet = (f"{src.kind} {ns}/{src.name} serves {seen}, not commit {exp.sha7} "
             f"({src.describe()}; last handled request {src.last_handled or 'none'})",)
    if handled:
        return verdict("waiting", f"{src.kind} {ns}/{src.name} fetched {seen}, not our commit {exp.sha7} "
                       "(our push raced its fetch): asking it to fetch again", request="source", unmet=unmet)
    return verdict("waiting", f"waiting for {src.kind} {ns}/{src.name} to fetch {exp.revision} (it serves {seen})",
                   unmet=unmet)


def _retried_by_flux(ks: ObjectStatus) -> bool:
    """Ready=False that Flux itself retries within moments: waited on, named if the deadline passes."""
    reason = ks.reason or ""
    return reason in TRANSIENT_REASONS or (reason == "ArtifactFailed" and bool(RETRYING_ARTIFACT.match(ks.message or "")))


def _kustomizations_verdict(exp: Expectation, v: _Verdicts) -> Verdict:
    """The source serves our commit: ask the Kustomizations, then wait until each applied it."""
    ns, src, kss, verdict, fail = exp.namespace, v.src, v.kss, v.verdict, v.fail
    if exp.kustomization_token is None:
        return verdict("waiting", f"{src.kind} {ns}/{src.name} fetched {src.revision}", source_ours=True,
                       request="kustomizations",
                       unmet=tuple(f"Kustomization {ns}/{k} has not been asked to reconcile yet" for k in exp.kustomizations))
    unmet: list[str] = []
    waiting_line = ""
    checking: dict[str, str] = {}  # Kustomization -> the revision (ours) it applied and checks the health of
    for ks in kss:
        if not ks.found:
            return fail(ks, "NotFound", f"Kustomization {ns}/{ks.name} was deleted while Forge waited for it",
                        _missing_hint("Kustomization"))
        handled = handled_token(ks.last_handled, exp.kustomization_token)
        if handled and ks.observed and ks.ready == "True" and exp.ours(ks.revision):
            continue
        health = HEALTH_CHECKS.match(ks.reconciling or "")
        if exp.rollout_follows and health is not None and exp.ours(health.group(1)):
            checking[ks.name] = health.group(1)  # applied; the rollout watch judges what Flux still waits on
            continue
        if (handled and ks.observed and ks.ready == "False" and not _retried_by_flux(ks)
                and (exp.ours(ks.attempted_revision) or (ks.reason or "") in PRE_ATTEMPT_REASONS)):
            rev = ks.attempted_revision if exp.ours(ks.attempted_revision) else src.revision
            return fail(ks, ks.reason or "NotReady",
                        f"Kustomization {ns}/{ks.name} failed to apply {rev}: {ks.reason or 'Ready=False'}: "
                        f"{ks.message or '(no message)'}", _failure_hint(ks))
        if health is not None and exp.ours(health.group(1)):
            why = f"applied it and runs its health checks ({ks.reconciling}): Ready comes when they pass"
        elif health is not None:  # of another commit: nothing new is applied before they end
            why = (f"is still running the health checks of {health.group(1)} ({ks.reconciling}); it applies "
                   "nothing new until they pass or time out (kustomize-controller's feature gate "
                   "CancelHealthCheckOnNewRevision cancels them when a new revision arrives)")
        elif not handled:
            why = (f"has not handled our reconcile request {exp.kustomization_token} yet "
                   f"(last handled {ks.last_handled or 'none'}; {ks.describe()})")
        elif not ks.observed:
            why = f"has not observed generation {ks.generation} yet (observed {ks.observed_generation})"
        elif ks.ready == "False":
            why = f"is not ready: {ks.reason}: {ks.message}"
        elif ks.ready != "True":
            why = f"is reconciling: {ks.reconciling or ks.message or 'Ready=Unknown'}"
        else:
            why = f"applied {ks.revision or 'nothing'}, not commit {exp.sha7}"
        unmet.append(f"Kustomization {ns}/{ks.name} {why}")
        waiting_line = waiting_line or f"waiting for Kustomization {ns}/{ks.name} to apply {src.revision}"
    if unmet:
        return verdict("waiting", waiting_line, source_ours=True, unmet=tuple(unmet))
    names = ", ".join(k.name for k in kss)
    revision = next((k.revision for k in kss if k.name not in checking), None) or next(iter(checking.values()))
    message = f"Kustomization{'s' if len(kss) > 1 else ''} {names} applied revision {revision}"
    if checking:
        message += (f"; Flux's health checks (spec.wait, spec.healthChecks) still run for {', '.join(checking)}: "
                    "the rollout watch judges the workload")
    return verdict("done", message, source_ours=True, revision=revision, health_checks=tuple(checking))


def _pinned_elsewhere(ref: Mapping[str, Any], branch: str) -> str | None:
    """What a GitRepository's ``spec.ref`` follows, when it is not ``branch`` (Flux's precedence).
    A ref naming none of them (or no ``spec.ref`` at all) follows ``master``: source-controller
    clones ``git.DefaultBranch`` then (fluxcd/pkg ``git/gogit/client.go``), not the remote's HEAD."""
    if ref.get("commit"):
        return f"commit {ref['commit']}"
    if ref.get("name"):
        return None if ref["name"] in (branch, f"refs/heads/{branch}") else f"ref {ref['name']}"
    if ref.get("semver"):
        return f"semver {ref['semver']}"
    if ref.get("tag"):
        return f"tag {ref['tag']}"
    if ref.get("branch"):
        return None if ref["branch"] == branch else f"branch {ref['branch']}"
    if branch != FLUX_DEFAULT_BRANCH:
        return f"branch {FLUX_DEFAULT_BRANCH} (Flux's default: its spec.ref names no branch)"
    return None


def _cli_kind(kind: str) -> str:
    return {"GitRepository": "git", "OCIRepository": "oci", "Bucket": "bucket"}.get(kind, kind.lower())


def _kubectl_kind(kind: str) -> str:
    return kind.lower()


def _missing_hint(kind: str) -> str:
    if kind == "Kustomization":
        return ("check flux.kustomizations in deploy.yaml against `flux get kustomizations -A` "
                "(names support {environment}, {cluster} and {project})")
    return (f"check flux.source (kind, name) and flux.namespace in deploy.yaml against "
            f"`flux get sources {_cli_kind(kind)} -A`")


def _failure_hint(ks: ObjectStatus) -> str:
    ns, name, reason = ks.namespace, ks.name, ks.reason or ""
    events = f"`flux events --for Kustomization/{name} -n {ns}`"
    if reason == "BuildFailed":
        return ("fix the manifests the Kustomization builds (run `kubectl kustomize <spec.path>` in a checkout of the "
                f"GitOps repo), commit, and deploy again; details: {events}")
    if reason == "HealthCheckFailed":
        return (f"the applied workloads did not become healthy: see {events} and `kubectl -n <namespace> describe` "
                "of the objects named in the message (`forge rollout` shows pods, events and logs)")
    if reason == "ArtifactFailed":
        return f"check the source and spec.path: `flux get sources git -A`, `kubectl -n {ns} describe kustomization {name}`"
    if reason in ("ReconciliationFailed", "PruneFailed"):
        return f"the API server refused an object: see {events}; fix the manifest it names and deploy again"
    return f"see `flux get kustomizations -n {ns} {name}` and {events}"


# =============================================================================================
# The result


@dataclass
class ReconcileResult:
    """What the reconcile did and saw; ``to_json()`` is the report's ``reconcile`` section."""

    outcome: Literal["success", "failed", "timeout"]
    message: str
    commit: str
    branch: str
    revision: str | None = None  # the revision Flux applied (ours, or one that contains ours)
    health_checks: tuple[str, ...] = ()  # Kustomizations still checking its health (spec.wait) when we moved on
    reason: str | None = None
    token: str | None = None  # the Kustomizations' request token (or the source's, before that)
    source: ObjectStatus | None = None
    kustomizations: tuple[ObjectStatus, ...] = ()
    requests: list[dict[str, Any]] = field(default_factory=list)
    progress: list[str] = field(default_factory=list)
    started_at: str = ""
    source_after: float | None = None  # seconds until the source served our commit
    applied_after: float | None = None  # seconds until every Kustomization applied it (the verdict)
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == "success"

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 3)

        return {
            "outcome": self.outcome, "reason": self.reason, "message": self.message,
            "commit": self.commit, "branch": self.branch, "revision": self.revision, "token": self.token,
            "health_checks_running": list(self.health_checks),
            "source": self.source.to_json() if self.source else None,
            "kustomizations": [k.to_json() for k in self.kustomizations],
            "requests": [dict(q) for q in self.requests], "progress": list(self.progress),
            "timings": {"started_at": self.started_at, "source_seconds": r(self.source_after),
                        "applied_seconds": r(self.applied_after), "elapsed_seconds": r(self.elapsed)},
        }


# =============================================================================================
# The loop


def _not_found(kind: str, group: str, version: str, namespace: str, name: str, err: Exception) -> ReconcileError:
    _, message, details = api_error(err)
    if not details.get("name"):  # the type itself is not served: Flux is not installed
        return ReconcileError(
            f"the cluster does not serve Flux's {kind} API ({group}/{version}) looking for {namespace}/{kind}/{name}: "
            f"{message}", hint="install Flux in the cluster (`flux check`), or check the kube context Forge uses")
    return ReconcileError(f"Flux {kind} {namespace}/{name} not found (at {namespace}/{kind}/{name}): {message}",
                          hint=_missing_hint(kind))


def reconcile(api: Any, flux: FluxPlan, *, commit: str, branch: str, timeout: float | None = None,
              accept: Callable[[str], bool] | None = None, progress: Callable[[str], None] | None = None,
              watch_seconds: int = 60, rollout_follows: bool = False) -> ReconcileResult:
    """Ask Flux to apply ``commit`` (pushed to ``branch``) and wait until every Kustomization has.

    ``api`` is a :class:`forgegen.runtime.kubeapi.Client` (or a ``kubernetes`` ApiClient); ``flux``
    the target's :class:`FluxPlan`;
    ``timeout`` overrides ``flux.timeout`` (seconds). ``accept(sha)`` may say that another commit
    Flux fetched contains ours (a later push on top of ours); by default only our commit counts.
    ``progress`` gets each new status line. Returns a :class:`ReconcileResult` on success; raises
    :class:`ReconcileError` (with ``.result``) when Flux fails, an object is missing, or the
    deadline passes.

    ``rollout_follows``: the caller watches the rollout next (deploy, rollback, release). A
    Kustomization with health checks (spec.wait, spec.healthChecks) has applied our commit when
    its health checks of it begin, but is Ready only when they end: a crash-looping Deployment
    keeps it waiting up to its progress deadline (600 s) or spec.timeout, which would hide the
    rollout's reason behind a reconcile timeout. With ``rollout_follows``, applied with health
    checks running is enough (the result's ``health_checks`` names those Kustomizations) and the
    rollout watch judges the workload, fast and with its reason.
    """
    from forgegen.runtime import kubeapi

    _check_source_kind(flux)
    run = _Reconcile(kubeapi.CustomObjectsApi(api), flux, commit=commit, branch=branch, accept=accept,
                     progress=progress, seconds=flux.timeout if timeout is None else timeout,
                     watch_seconds=watch_seconds, rollout_follows=rollout_follows)
    run.check_kustomizations()  # every Kustomization must exist before we wait (fail fast on a typo)
    run.say(f"annotating {flux.source_kind} {flux.source_name} in {flux.namespace} namespace")
    try:
        run.exp = run.requests.source(run.exp)
    except ReconcileError:
        raise
    except Exception as err:  # noqa: BLE001
        raise run.fail(_unreachable(err, f"{flux.namespace}/{flux.source_kind}/{flux.source_name}")) from err
    with run.streams as streams:
        run.open_streams()
        done = watch_until(streams, run, run.judge, lambda: run.end, wake=run.wake, on_fatal=run.fatal)
        if done is None:
            raise run.fail(_timeout(run.exp, run.verdict, run.seconds, streams.trouble, streams.synced, run.result))
        return done


def _check_source_kind(flux: FluxPlan) -> None:
    where = f"{flux.namespace}/{flux.source_kind}/{flux.source_name}"
    if flux.source_kind not in SOURCE_TYPES:
        raise ReconcileError(f"unknown Flux source kind {flux.source_kind!r} (at {where})",
                             hint="use GitRepository, OCIRepository or Bucket in flux.source.kind")
    if flux.source_kind != "GitRepository":
        raise ReconcileError(
            f"Forge can wait for a pushed commit only through a GitRepository, not a {flux.source_kind} (at {where})",
            hint="point flux.source in deploy.yaml at the GitRepository that follows the GitOps repository")


class _Requester:
    """Sends reconcile requests: the annotation with a fresh token each time, a backoff between
    re-requests of a source that fetched an older commit, a short retry after a request the
    API lost on the wire."""

    def __init__(self, co: Any, flux: FluxPlan, result: ReconcileResult, t0: float,
                 say: Callable[[str], None]) -> None:
        self.co, self.flux, self.result, self.t0, self.say = co, flux, result, t0, say
        self.backoff = REQUEST_BACKOFF[0]
        self.next_source = 0.0  # no re-request of the source before then
        self.retry_at: float | None = None  # a request that failed on the wire is retried then

    def ready(self, request: str | None, now: float) -> bool:
        if self.retry_at is not None and now < self.retry_at:
            return False
        return request == "kustomizations" or (request == "source" and now >= self.next_source)

    def wake(self, request: str | None) -> float | None:
        times = [t for t in (self.next_source if request == "source" else None, self.retry_at) if t is not None]
        return min(times) if times else None

    def source(self, exp: Expectation, known: FluxObject | None = None) -> Expectation:
        token = self.annotate(self.flux.source_kind, SOURCE_TYPES[self.flux.source_kind], self.flux.source_name,
                              request_token(), known)
        self.result.token = token
        return replace(exp, source_token=token)

    def resend_source(self, exp: Expectation, known: FluxObject | None) -> Expectation:
        exp = self.source(exp, known)
        self.retry_at = None
        self.next_source = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, REQUEST_BACKOFF[1])
        return exp

    def kustomizations(self, exp: Expectation, known: Mapping[str, FluxObject]) -> Expectation:
        first = request_token()
        written = []
        for name in self.flux.kustomizations:
            self.say(f"annotating Kustomization {name} in {self.flux.namespace} namespace")
            written.append(self.annotate("Kustomization", KUSTOMIZATION, name, first, known.get(name)))
        # One was already asked later than our first token: its later token is what it must handle,
        # and any request handled at or after the earliest one we wrote came after our commit was fetched.
        token = min(written, key=lambda t: token_ns(t) or 0)
        self.result.token, self.retry_at = token, None
        return replace(exp, kustomization_token=token)

    def annotate(self, kind: str, gvp: tuple[str, str, str], name: str, token: str,
                 known: FluxObject | None = None) -> str:
        """Write a reconcile request to one object (``known``: as last seen); returns the token written.

        A token is a time taken before its write, so two deploys annotating one object at once could
        land out of order, the older token last: Flux would handle that one, and nothing would ever
        handle the newer (its deploy would wait out ``flux.timeout``). So the write carries the
        ``resourceVersion`` it read, a concurrent write fails it (409) and we read again, and a
        token the object carries that is not older than ours is answered with a later one.
        """
        from forgegen.runtime.kubeapi import ApiException

        (group, version, plural), ns = gvp, self.flux.namespace
        obj = known
        give_up = time.monotonic() + CONFLICT_SECONDS
        for attempt in itertools.count():
            try:
                if obj is None:
                    obj = self.co.get_namespaced_custom_object(group, version, ns, plural, name,
                                                               _request_timeout=(5, 15))
                meta: ObjectMeta = obj.get("metadata") or {}
                theirs = token_ns((meta.get("annotations") or {}).get(REQUESTED_AT))
                if theirs is not None and theirs >= (token_ns(token) or 0):
                    token = request_token(after_ns=theirs)
                body: dict[str, Any] = {"metadata": {"annotations": {REQUESTED_AT: token}}}
                if meta.get("resourceVersion"):
                    body["metadata"]["resourceVersion"] = meta["resourceVersion"]
                self.co.patch_namespaced_custom_object(group, version, ns, plural, name, body,
                                                       _content_type="application/merge-patch+json",
                                                       _request_timeout=(5, 15))
                break
            except ApiException as err:
                if err.status == 404:
                    raise _fail(_not_found(kind, group, version, ns, name, err), self.result, self.t0) from err
                if err.status != 409 or time.monotonic() > give_up:
                    raise
                obj = None  # written meanwhile (another deploy, Flux's status): read it again
                if attempt >= 3:
                    time.sleep(random.uniform(0.01, 0.05))
        self.result.requests.append({"object": f"{ns}/{kind}/{name}", "token": token,
                                     "at_seconds": round(time.monotonic() - self.t0, 3)})
        return token


class _Reconcile:
    """One reconcile wait: the snapshot the watches feed (:class:`FluxSnapshot`, only our
    Kustomizations), the expectation, the last verdict, the result and the clocks."""

    def __init__(self, co: Any, flux: FluxPlan, *, commit: str, branch: str, accept: Callable[[str], bool] | None,
                 progress: Callable[[str], None] | None, seconds: float, watch_seconds: int,
                 rollout_follows: bool = False) -> None:
        self.co, self.flux, self.progress, self.seconds = co, flux, progress, seconds
        self.t0, wall0 = time.monotonic(), time.time()
        self.end = self.t0 + seconds
        self.exp = Expectation(flux.namespace, flux.source_kind, flux.source_name, tuple(flux.kustomizations),
                               branch, commit.lower(), accept=accept, rollout_follows=rollout_follows)
        self.result = ReconcileResult("timeout", "", commit, branch, started_at=iso(wall0))
        self.requests = _Requester(co, flux, self.result, self.t0, self.say)
        self.snap = FluxSnapshot()
        self.verdict: Verdict | None = None
        self.streams = Streams(watch_seconds)

    def say(self, msg: str) -> None:
        lines = self.result.progress
        if not lines or lines[-1] != msg:
            lines.append(msg)
            log.info("%s", msg)
            if self.progress is not None:
                self.progress(msg)

    def fail(self, err: ReconcileError) -> ReconcileError:
        return _fail(err, self.result, self.t0)

    def check_kustomizations(self) -> None:
        from forgegen.runtime.kubeapi import ApiException

        kgroup, kversion, kplural = KUSTOMIZATION
        ns = self.flux.namespace
        for name in self.flux.kustomizations:
            try:
                self.co.get_namespaced_custom_object(kgroup, kversion, ns, kplural, name, _request_timeout=(5, 15))
            except ApiException as err:
                if err.status == 404:
                    raise self.fail(_not_found("Kustomization", kgroup, kversion, ns, name, err)) from err
                raise self.fail(_unreachable(err, f"{ns}/Kustomization/{name}")) from err
            except Exception as err:  # noqa: BLE001 - connection refused, TLS, DNS: say which object
                raise self.fail(_unreachable(err, f"{ns}/Kustomization/{name}")) from err

    def open_streams(self) -> None:
        f, list_fn = self.flux, self.co.list_namespaced_custom_object
        sgroup, sversion, splural = SOURCE_TYPES[f.source_kind]
        kgroup, kversion, kplural = KUSTOMIZATION
        self.streams.open("source", list_fn, group=sgroup, version=sversion, namespace=f.namespace, plural=splural,
                          field_selector=f"metadata.name={f.source_name}")
        one = {"field_selector": f"metadata.name={f.kustomizations[0]}"} if len(f.kustomizations) == 1 else {}
        self.streams.open("kustomizations", list_fn, group=kgroup, version=kversion, namespace=f.namespace,
                          plural=kplural, **one)

    # The sink watch_until feeds: the source, and only our Kustomizations.
    def replace(self, resource: str, items: Iterable[dict[str, Any]]) -> None:
        self.snap.replace(resource, [o for o in items
                                     if resource == "source" or o["metadata"]["name"] in self.flux.kustomizations])

    def apply(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        if resource == "kustomizations" and obj.get("metadata", {}).get("name") not in self.flux.kustomizations:
            return
        self.snap.apply(resource, kind, obj)

    def judge(self) -> ReconcileResult | None:
        """Judge the snapshot; send the request the verdict asks for and judge again at once."""
        if not self.streams.listed("source", "kustomizations"):
            return None
        while True:
            now = time.monotonic()
            verdict = self.verdict = assess(self.snap, self.exp)
            self.say(verdict.message)
            result = self.result
            result.source, result.kustomizations = verdict.source, verdict.kustomizations
            if verdict.source_ours and result.source_after is None:
                result.source_after = now - self.t0
            if verdict.state == "done":
                result.outcome, result.message = "success", verdict.message
                result.revision, result.health_checks = verdict.revision, verdict.health_checks
                result.applied_after = result.elapsed = time.monotonic() - self.t0
                return result
            if verdict.state == "failed":
                f = verdict.failure
                assert f is not None
                result.outcome, result.reason, result.message = "failed", f.reason, f.message
                raise self.fail(ReconcileError(f"{f.message} (at {f.where})", hint=f.hint))
            if not self.request(verdict, now):
                return None

    def request(self, verdict: Verdict, now: float) -> bool:
        """Send the request ``verdict`` asks for, if it is due; True if one was sent."""
        if not self.requests.ready(verdict.request, now):
            return False
        try:
            if verdict.request == "kustomizations":
                self.exp = self.requests.kustomizations(self.exp, self.snap.kustomizations)
            else:
                self.exp = self.requests.resend_source(self.exp, self.snap.source)
            return True
        except ReconcileError:
            raise
        except Exception as err:  # noqa: BLE001 - the API went away mid-request: retry shortly
            self.streams.trouble = api_error(err)[1]
            log.debug("reconcile request failed: %s; retrying", self.streams.trouble)
            self.requests.retry_at = time.monotonic() + 0.2
            return False

    def wake(self) -> float | None:
        return self.requests.wake(self.verdict.request if self.verdict is not None else None)

    def fatal(self, event: Fatal) -> ReconcileError:
        f, err, resource = self.flux, event.error, event.resource
        what = f"{f.namespace}/{f.source_kind}/{f.source_name}" if resource == "source" else f"{f.namespace}/Kustomizations"
        return self.fail(ReconcileError(
            f"cannot watch Flux {resource} in {f.namespace}: {err.status} {err.reason} (at {what})",
            hint="check the Kubernetes credentials and RBAC (get, list, watch and patch on "
                 "gitrepositories and kustomizations), and that Flux is installed (`flux check`)"))


def _fail(err: ReconcileError, result: ReconcileResult, t0: float) -> ReconcileError:
    result.elapsed = time.monotonic() - t0
    if result.outcome == "success":
        result.outcome = "failed"
    if not result.message:
        result.message = err.message
    err.result = result
    return err


RBAC_HINT = ("grant the credentials Forge uses the ClusterRole of examples/rbac/forge.yaml (get, list, watch and "
             "patch on GitRepositories and Kustomizations) with a RoleBinding in Flux's namespace")


def _unreachable(err: Exception, where: str) -> ReconcileError:
    status, message, _ = api_error(err)
    what = f"{status} {message}" if status else message
    if status in (401, 403):  # reached, but refused: say so, not "cannot reach"
        return ReconcileError(f"the Kubernetes API did not allow Forge to reconcile Flux: {what} (at {where})",
                              hint=RBAC_HINT)
    return ReconcileError(f"cannot reach the Kubernetes API to reconcile Flux: {what} (at {where})",
                          hint="check the kube context and credentials Forge uses (`kubectl get kustomizations -A`)")


def _timeout(exp: Expectation, verdict: Verdict | None, seconds: float, trouble: str | None, synced: set[str],
             result: ReconcileResult) -> ReconcileError:
    result.outcome = "timeout"
    ns = exp.namespace
    if verdict is None or not synced >= {"source", "kustomizations"}:
        result.reason = "ApiUnavailable"
        result.message = (f"Flux did not apply commit {exp.sha7} within {seconds:g}s: the Kubernetes API could not "
                          f"be watched ({trouble or 'no answer'})")
        return ReconcileError(f"{result.message} (at {ns}/{exp.source_kind}/{exp.source_name})",
                              hint="check that the cluster is reachable with the kube context Forge uses")
    unmet = "; ".join(verdict.unmet) or verdict.message
    if not verdict.source_ours:
        src = verdict.source
        result.reason = "SourceNotUpdated"
        requests = sum(1 for q in result.requests if f"/{exp.source_kind}/" in q["object"])
        result.message = (f"Flux did not fetch commit {exp.sha7} ({exp.revision}) within {seconds:g}s: {unmet} "
                          f"after {requests} reconcile request(s)")
        hint = (f"check that {exp.source_kind} {ns}/{exp.source_name} follows the repository and branch Forge "
                f"pushed to ({exp.branch}) and that source-controller runs: `flux get sources git -A`, "
                f"`kubectl -n {ns} describe gitrepository {exp.source_name}`; raise flux.timeout in deploy.yaml "
                "if Flux is only slow")
        where = src.where if src else f"{ns}/{exp.source_kind}/{exp.source_name}"
    else:
        result.reason = "KustomizationNotApplied"
        result.message = f"Flux did not apply commit {exp.sha7} within {seconds:g}s: {unmet}"
        first = next((k for k in verdict.kustomizations if any(f"Kustomization {ns}/{k.name} " in u for u in verdict.unmet)),
                     verdict.kustomizations[0] if verdict.kustomizations else None)
        where = first.where if first else f"{ns}/Kustomization"
        name = first.name if first else "<name>"
        hint = (f"see `flux get kustomizations -n {ns}` and `flux events --for Kustomization/{name} -n {ns}`; "
                "check that kustomize-controller runs; raise flux.timeout in deploy.yaml if Flux is only slow")
    if trouble:
        result.message += f" (the API connection also reported: {trouble})"
    return ReconcileError(f"{result.message} (at {where})", hint=hint)


# =============================================================================================
# `forge status`


def flux_status(api: Any, target: TargetPlan) -> dict[str, Any]:
    """The Flux side of ``forge status`` for one environment: one GET per object, no waiting.

    ``{"namespace", "source": {...}, "kustomizations": [{...}], "ready": bool}`` where each object
    has ``found``, ``ready`` / ``reason`` / ``message`` of its Ready condition, and the source's
    artifact ``revision`` or the Kustomization's ``last_applied_revision`` /
    ``last_attempted_revision``. A missing object is reported (``found: false``), not raised;
    an unreachable API raises :class:`ReconcileError`.
    """
    from forgegen.runtime import kubeapi
    from forgegen.runtime.kubeapi import ApiException

    f = target.flux
    co = kubeapi.CustomObjectsApi(api)

    def get(group: str, version: str, plural: str, name: str, kind: str) -> FluxObject | None:
        try:
            obj: Any = co.get_namespaced_custom_object(group, version, f.namespace, plural, name,
                                                       _request_timeout=(5, 15))
            return cast("FluxObject", obj)
        except ApiException as err:
            if err.status == 404:
                return None
            raise ReconcileError(_unreachable(err, f"{f.namespace}/{kind}/{name}").message,
                                 hint="check the kube context and credentials (`kubectl get kustomizations -A`)") from err
        except Exception as err:  # noqa: BLE001
            raise _unreachable(err, f"{f.namespace}/{kind}/{name}") from err

    group, version, plural = SOURCE_TYPES.get(f.source_kind, SOURCE_TYPES["GitRepository"])
    source = object_status(f.source_kind, f.namespace, f.source_name,
                           get(group, version, plural, f.source_name, f.source_kind))
    kss = [object_status("Kustomization", f.namespace, k, get(*KUSTOMIZATION, k, "Kustomization"))
           for k in f.kustomizations]
    return {
        "namespace": f.namespace,
        "source": source.to_json(),
        "kustomizations": [k.to_json() for k in kss],
        "ready": source.ready == "True" and all(k.ready == "True" for k in kss),
    }
