"""The deploy lifecycle: ``forge deploy``, ``forge rollback`` and ``forge status``.

Composed from the step modules, in DESIGN.md's order:

    build + push (registry) → GitOps edit/commit/push (gitops) → reconcile (flux) → rollout (rollout)

Everything that can be checked before changing anything is checked first (the plan's target,
the Kubernetes connection, registry credentials), so bad input fails with exit 2 and nothing
half-done. Each step's result goes into one report (the ``--json`` document); a failed step ends
the run with the report saying exactly which step failed and why, and the CLI maps the outcome
to the exit code. With ``rollback_on_failure`` a failed rollout writes the previous tag back,
reconciles and watches again, and the report carries both outcomes.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from forgegen.errors import EXIT_PENDING, DeployFailed, ForgeError, GitOpsError, PushError, RolloutFailed, UsageError
from forgegen.plan import Plan, ServicePlan, TargetPlan
from forgegen.runtime import flux, gitops, health, kube, present, registry
from forgegen.runtime import rollout as rollout_mod
from forgegen.runtime.reports import (
    DeployReport,
    GitState,
    RollbackAttempt,
    RollRecord,
    StatusReport,
    StatusRow,
    Unset,
    WorkloadState,
)
from forgegen.runtime.tags import SourceRevision

log = logging.getLogger(__name__)
Say = Callable[[str], None]
T = TypeVar("T")


def _image(service: ServicePlan, tag: str) -> str:
    return f"{service.image.repository}:{tag}"


def preflight(plan: Plan, service: str, environment: str | None) -> tuple[ServicePlan, TargetPlan, kube.Connection]:
    """Everything checkable before any change: target, kube connection, registry credentials."""
    svc = plan.service(service)
    if not svc.targets:
        raise UsageError(f"service {service!r} has no environment to deploy to",
                         hint="list environments under services.<name>.environments in deploy.yaml")
    target = svc.target(environment)
    gitops.check_credentials(target.gitops.repo)  # exit 2 before a token reaches git's argv
    conn = kube.resolve(target.kubeconfig, target.kube_context)
    registry.resolve_credentials(plan.registry)  # raises UsageError for half-set credentials
    return svc, target, conn


def _step(record: RollRecord, name: str, fn: Callable[[], T]) -> T:
    """Run one step, recording how long it took; a ForgeError marks the record failed at it."""
    with record.timed(name):
        try:
            return fn()
        except ForgeError as err:
            record.failed(name, err)
            raise


def roll(plan: Plan, svc: ServicePlan, target: TargetPlan, api: Any, *, tag: str, source_commit: str,
         record: RollRecord, prefix: str, say: Say, cwd: str | Path | None,
         digest: str | None = None, expected_digest: str | None = None,
         accept: Callable[[str], Callable[[str], bool]] | None = None) -> rollout_mod.RolloutResult:
    """GitOps edit → reconcile → rollout for one tag (pinned to ``digest`` when given); each
    result lands in ``record`` under its step name (``prefix`` + gitops/reconcile/rollout).
    ``expected_digest`` (the pushed digest) lets the rollout check what runs by digest (an
    unchanged image under a sibling tag is the same image). ``accept(our_commit)`` may give the
    reconcile a test for later commits that contain ours (parallel deploys to one environment)."""
    since = time.time()
    g = _step(record, f"{prefix}gitops", lambda: gitops.apply_tag(
        plan, svc.name, target.environment, tag=tag, digest=digest, source_commit=source_commit, cwd=cwd))
    record.steps[f"{prefix}gitops"] = g
    say(f"gitops: {'committed ' + g.commit[:7] if g.commit else 'already at ' + tag + ' (no commit)'}"
        f" in {g.repo} {g.branch}:{g.file}" + (f" (one commit with {', '.join(g.shared_with)})" if g.shared_with else ""))
    rec = _step(record, f"{prefix}reconcile", lambda: flux.reconcile(
        api, target.flux, commit=g.revision, branch=target.gitops.branch, progress=lambda m: say(f"flux: {m}"),
        accept=accept(g.revision) if accept else None, rollout_follows=True))
    record.steps[f"{prefix}reconcile"] = rec
    say(f"flux: applied {rec.revision}")
    expected = _image(svc, tag) + (f"@{digest}" if digest else "")
    result = _step(record, f"{prefix}rollout", lambda: rollout_mod.watch_rollout(
        api, namespace=target.namespace, workload=svc.workload, expected_image=expected,
        expected_digest=digest or expected_digest, since=since,
        policy=svc.rollout, progress=lambda m: say(f"rollout: {m}")))
    record.steps[f"{prefix}rollout"] = result
    if not result.ok:  # the evidence, for people: reason, pod, exit code, logs, Warning events
        say(present.rollout_report(result.to_json()))
    return result


# What the cluster steps import (the kubeconfig reader and the HTTP client): loaded in the background
# while the build, push and GitOps steps wait on their subprocesses.
PRELOAD = ("yaml", "urllib3", "forgegen.runtime.kubeapi")


def _preload_cluster_client() -> None:
    """Import :data:`PRELOAD` in a background thread (the import lock makes it safe)."""
    def load() -> None:
        try:
            for name in PRELOAD:
                importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the real import later reports any problem
            pass
    threading.Thread(target=load, name="forge-preload", daemon=True).start()


def run_deploy(plan: Plan, service: str, environment: str | None, *, revision: SourceRevision,
               flake: str = ".", say: Say = log.info, cwd: str | Path | None = None,
               pin_digest: bool = False) -> DeployReport:
    """``forge deploy S[:E]``: returns the report; raises :class:`DeployFailed` (report inside).
    ``pin_digest`` writes the pushed digest next to the tag, so the cluster runs exactly it."""
    svc, target, conn = preflight(plan, service, environment)
    _preload_cluster_client()
    report = DeployReport(command="deploy", service=svc.name, environment=target.environment,
                          source_commit=revision.sha7)
    try:
        pushed = _step(report, "push", lambda: registry.run_push(plan, svc.name, revision=revision, flake=flake,
                                                                  progress=lambda m: say(f"push: {m}")))
        report.steps["push"] = pushed
        report.image, report.digest = _image(svc, pushed.deploy_tag), pushed.deploy_digest
        api = kube.client_for(conn)
        result = roll(plan, svc, target, api, tag=pushed.deploy_tag, source_commit=revision.sha7,
                      record=report, prefix="", say=say, cwd=cwd,
                      digest=pushed.deploy_digest if pin_digest else None, expected_digest=pushed.deploy_digest)
        report.outcome = result.outcome
        if not result.ok:
            report.failed_step = "rollout"
            previous = report.steps["gitops"].previous_tag
            if svc.rollout.rollback_on_failure and result.outcome != "pending-on-delete":  # never for OnDelete
                rollback_after_failure(plan, svc, target, api, previous, pushed.deploy_tag, revision, report, say, cwd)
    except ForgeError as err:
        report.finish()
        step = None if isinstance(report.failed_step, Unset) else report.failed_step
        raise DeployFailed(f"deploy of {svc.name} to {target.environment} failed at {step}: {err.message}",
                           report, hint=err.hint) from err
    report.finish()
    if report.outcome != "success":
        raise DeployFailed(rollout_message(report, report.service, report.environment), report,
                           hint=rollout_hint(report),
                           exit_code=EXIT_PENDING if report.outcome == "pending-on-delete" else None)
    return report


def rollback_after_failure(plan: Plan, svc: ServicePlan, target: TargetPlan, api: Any, previous: str | None,
                           failed_tag: str, revision: SourceRevision, record: RollRecord, say: Say,
                           cwd: str | Path | None) -> None:
    """``rollback_on_failure``: put ``previous`` back (its steps land in ``record`` as ``rollback_…``)."""
    if not previous or previous == failed_tag:
        record.rollback = RollbackAttempt(outcome="skipped", reason="no previous tag in the GitOps history")
        say("rollback: skipped (no previous tag in the GitOps history)")
        return
    say(f"rollback: the rollout failed; putting {previous} back")
    attempt = record.rollback = RollbackAttempt(to=previous)
    try:
        result = roll(plan, svc, target, api, tag=previous, source_commit=revision.sha7,
                      record=record, prefix="rollback_", say=say, cwd=cwd)
        attempt.outcome = result.outcome
    except ForgeError as err:
        attempt.outcome = "failed"
        attempt.error = err.message


LINE = 116


def rollout_message(record: RollRecord, service: str, environment: str) -> str:
    """A short first line (what failed, why in one word, what happened after), the detail below."""
    r = _rollout_result(record)
    text = f"deploy of {service} to {environment}: rollout {r.outcome if r else None}"
    if r and r.reason:
        text += f" ({r.reason})"
    rb = record.rollback
    if not isinstance(rb, Unset):
        to = "-" if isinstance(rb.to, Unset) else rb.to
        outcome = None if isinstance(rb.outcome, Unset) else rb.outcome
        text += f"; rolled back to {to}" if outcome == "success" else f"; rollback to {to}: {outcome}"
    detail = present.without_kubelet_pod(str(r.message or "") if r else "")
    if detail:
        text += "\n  " + (detail if len(detail) <= LINE else detail[:LINE - 1] + "…")
    return text


def rollout_hint(record: RollRecord) -> str:
    r = _rollout_result(record)
    if r and r.outcome == "pending-on-delete":
        return ("the workload uses the OnDelete update strategy: delete its pods to replace them "
                "(nothing was rolled back)")
    if r and r.pod:
        return (f"`kubectl -n {r.namespace} describe pod {r.pod}` shows more; "
                "--json has the whole report with the logs")
    return "run with --json for the full report, or `forge status` to see what runs where"


def _rollout_result(record: RollRecord) -> rollout_mod.RolloutResult | None:
    """The rollout step's result (the first one: not the rollback's)."""
    r = record.steps.get("rollout")
    return r if isinstance(r, rollout_mod.RolloutResult) else None


def run_rollback(plan: Plan, service: str, environment: str, *, to: str | None = None, say: Say = log.info,
                 cwd: str | Path | None = None) -> DeployReport:
    """``forge rollback S:E [--to TAG]``: the GitOps history is the ledger."""
    svc, target, conn = preflight(plan, service, environment)
    report = DeployReport(command="rollback", service=svc.name, environment=target.environment)
    try:
        current = _step(report, "ledger", lambda: gitops.current_tag(plan, svc.name, target.environment, cwd=cwd))
        report.from_tag = current
        chosen = to or _step(report, "ledger", lambda: gitops.previous_tag(
            plan, svc.name, target.environment, current=current or "", cwd=cwd))
        if not chosen:
            raise GitOpsError(f"cannot roll back {svc.name} in {target.environment}: the history of its manifest "
                              f"has no tag other than {current!r}",
                              hint="pass --to TAG to choose the tag explicitly")
        report.to = chosen
        digest = report.digest = _step(report, "verify", lambda: _registry_digest(plan, svc, chosen))
        say(f"rollback: {svc.name} in {target.environment}: {current} → {chosen} ({digest})")
        api = kube.client_for(conn)
        result = roll(plan, svc, target, api, tag=chosen, source_commit=f"rollback-from-{current or 'none'}",
                      record=report, prefix="", say=say, cwd=cwd)
        report.outcome = result.outcome
    except ForgeError as err:
        report.finish()
        raise DeployFailed(f"rollback of {svc.name} in {target.environment} failed: {err.message}", report,
                           hint=err.hint) from err
    report.finish()
    if report.outcome != "success":
        raise DeployFailed(rollout_message(report, report.service, report.environment), report,
                           hint=rollout_hint(report))
    return report


def _registry_digest(plan: Plan, svc: ServicePlan, tag: str) -> str:
    """The digest ``tag`` resolves to; refuses a tag the registry does not have."""
    host, _, name = svc.image.repository.partition("/")
    client = registry.RegistryClient(host, insecure=plan.registry.insecure,
                                     credentials=registry.resolve_credentials(plan.registry),
                                     registry=plan.registry)
    digest = client.manifest_digest(name, tag)
    if digest is None:
        raise PushError(f"cannot roll back to {svc.image.repository}:{tag}: the registry has no such tag",
                                 hint="pick a tag that exists (`skopeo list-tags docker://"
                                      f"{svc.image.repository}`) and pass --to TAG")
    return digest


# ---------------------------------------------------------------------------------------------
# Status


def run_status(plan: Plan, service: str | None = None, *, environments: list[str] | None = None,
               cwd: str | Path | None = None) -> StatusReport:
    """``forge status [S]``: per service and environment, git vs cluster vs Flux. Never raises
    for one unreachable cluster or repository: that row says what went wrong."""
    services = [plan.service(service)] if service else list(plan.services)
    pairs = [(svc, target) for svc in services for target in svc.targets
             if environments is None or target.environment in environments]
    clients: dict[tuple[str | None, str | None], Any] = {}
    lock = threading.Lock()

    def connect(target: TargetPlan) -> Any:
        key = (target.kubeconfig, target.kube_context)
        with lock:
            if key not in clients:
                clients[key] = kube.client_for(kube.resolve(*key))
            return clients[key]

    return StatusReport(project=plan.project, services=status_rows(plan, pairs, connect, cwd=cwd))


def status_rows(plan: Plan, pairs: list[tuple[ServicePlan, TargetPlan]], connect: Callable[[TargetPlan], Any], *,
                cwd: str | Path | None = None, workers: int = 8) -> list[StatusRow]:
    """Each service in each environment: the tag in git, the workload, Flux, and whether they
    agree; ``connect(target)`` gives the environment's ApiClient. Problems become a row's
    ``errors``, never raise. Git is read once per GitOps repository (:func:`gitops.current_states`),
    each Flux object set once, and the clusters ``workers`` requests at a time."""
    rows = [StatusRow(service=svc.name, environment=target.environment, namespace=target.namespace)
            for svc, target in pairs]
    states = gitops.current_states(plan, [(svc.name, target.environment) for svc, target in pairs], cwd=cwd)
    for row in rows:
        state = states[(row.service, row.environment)]
        if isinstance(state, ForgeError):
            row.errors.append(f"git: {state.message}")
        else:
            row.git = GitState(tag=state[0].tag, digest=state[0].digest, commit=state[1])
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="forge-status") as pool:
        fluxes: dict[tuple[Any, ...], Future[dict[str, Any]]] = {}
        for _svc, target in pairs:
            fluxes.setdefault(_flux_key(target), pool.submit(_flux_status, connect, target))
        workloads = [pool.submit(_workload_of, connect, svc, target, row.git) for (svc, target), row in zip(pairs, rows)]
        for (_svc, target), row, workload in zip(pairs, rows, workloads):
            try:
                row.workload = workload.result()
                row.flux = dict(fluxes[_flux_key(target)].result())
            except ForgeError as err:
                row.errors.append(f"cluster: {err.message}")
            row.judge()
    return rows


def _flux_key(target: TargetPlan) -> tuple[Any, ...]:
    """The Flux objects of an environment, and the cluster they are read from."""
    f = target.flux
    return (target.kubeconfig, target.kube_context, f.namespace, f.source_kind, f.source_name, tuple(f.kustomizations))


def _flux_status(connect: Callable[[TargetPlan], Any], target: TargetPlan) -> dict[str, Any]:
    return flux.flux_status(connect(target), target)


def _workload_of(connect: Callable[[TargetPlan], Any], svc: ServicePlan, target: TargetPlan,
                 git: GitState | None) -> WorkloadState:
    return _workload_status(connect(target), svc, target, git)


def _workload_status(api: Any, svc: ServicePlan, target: TargetPlan, git: GitState | None) -> WorkloadState:
    """The workload's counts and image, and the one health judgement (:mod:`forgegen.runtime.health`)
    for the image git deploys."""
    from forgegen.runtime.kubeapi import ApiException

    try:
        snap = health.snapshot_now(api, target.namespace, svc.workload)
    except ApiException as err:
        raise RolloutFailed(f"cannot read {target.namespace}/{svc.workload.kind}/{svc.workload.name}: "
                            f"HTTP {err.status} {err.reason}") from err
    except Exception as err:  # noqa: BLE001 - connection errors of every kind
        raise RolloutFailed(f"cannot reach the cluster for {target.environment}: {err}",
                            hint="check the kube context (`kubectl config current-context`)") from err
    obj = snap.workload
    if obj is None:
        return WorkloadState(found=False, healthy=False)
    tag, digest = (git.tag, git.digest) if git is not None else (None, None)
    expected = f"{_image(svc, tag)}{'@' + digest if digest else ''}" if tag else None
    verdict = health.judge(snap, svc.workload, svc.rollout, expected, digest)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if svc.workload.kind == "DaemonSet":
        counts = {"desired": status.get("desiredNumberScheduled") or 0, "updated": status.get("updatedNumberScheduled") or 0,
                  "ready": status.get("numberReady") or 0, "available": status.get("numberAvailable") or 0}
    else:
        counts = {"desired": spec["replicas"] if spec.get("replicas") is not None else 1,
                  "updated": status.get("updatedReplicas") or 0, "ready": status.get("readyReplicas") or 0,
                  "available": status.get("availableReplicas") or 0}
    generation = (obj.get("metadata") or {}).get("generation")
    return WorkloadState(
        found=True, image=verdict.image, **counts,
        observed=status.get("observedGeneration") is not None and status.get("observedGeneration") == generation,
        verdict=verdict.state, healthy=health.healthy(verdict),
        message=verdict.failure.message if verdict.failure else verdict.message)


def raise_for_status(report: StatusReport) -> None:
    if not report.healthy:
        bad = [f"{r.service}/{r.environment}" for r in report.services if not r.healthy]
        raise DeployFailed(f"not healthy: {', '.join(bad)}", report,
                           hint="`forge rollout S:E` shows why a rollout is stuck; `flux get kustomizations -A` for Flux")
