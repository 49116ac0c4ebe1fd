"""``forge reconcile`` and ``forge migrate``: the pinned Flux reconcile and the migration Jobs on their own.

* ``forge reconcile [S:]E`` asks Flux to apply the GitOps branch head (or ``--revision SHA``) in
  environment E — the Flux objects of every service deployed there, or of S only — and waits
  until every Kustomization applied that commit: the same :func:`forgegen.runtime.flux.reconcile`
  ``forge deploy`` runs, the same evidence in the report, the same exit codes (1 when Flux fails
  or the deadline passes, 2 for bad input).
* ``forge migrate S:E`` runs S's migrations in E as Kubernetes Jobs with the image of the source
  revision (``<arch>-<sha7>``, or ``--tag``): :func:`forgegen.runtime.migrate.run_migration`, so a
  Job that succeeded for that tag is not run again, a failed one is re-created, a running one
  is watched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from forgegen.errors import DeployFailed, ForgeError, GitOpsError, MigrationFailed, ReconcileError, UsageError
from forgegen.plan import Plan, ServicePlan, TargetPlan
from forgegen.runtime import flux, gitops, kube, migrate
from forgegen.runtime.reports import MigrateReport, MigrationFailure, ReconcileEntry, ReconcileReport, StepError

log = logging.getLogger(__name__)
Say = Callable[[str], None]


def replaced(record: Any, **changes: Any) -> Any:
    """A plan record (a frozen dataclass) with ``changes``."""
    import dataclasses

    return dataclasses.replace(record, **changes)


def reconcile_targets(plan: Plan, arg: str) -> tuple[str, list[tuple[TargetPlan, tuple[str, ...]]]]:
    """``E`` or ``S:E`` → the environment and, per Flux source, one target with the union of the
    Kustomizations to wait for (services sharing a source and cluster are reconciled once)."""
    name, sep, env = arg.partition(":")
    if sep:
        svc = plan.service(name)
        target = svc.target(env)
        return target.environment, [(target, tuple(target.flux.kustomizations))]
    if name not in plan.environments:
        hint = (f"use {name}:<environment>" if name in {s.name for s in plan.services}
                else f"use one of: {', '.join(plan.environments)}")
        raise UsageError(f"{arg!r} is not an environment of {plan.project}", hint=hint)
    groups: dict[tuple[Any, ...], tuple[TargetPlan, list[str]]] = {}
    for svc in plan.services:
        for t in svc.targets:
            if t.environment != name:
                continue
            key = (t.kubeconfig, t.kube_context, t.flux.namespace, t.flux.source_kind, t.flux.source_name,
                   t.gitops.repo, t.gitops.branch)
            kept = groups.setdefault(key, (t, []))[1]
            kept.extend(k for k in t.flux.kustomizations if k not in kept)
    if not groups:
        raise UsageError(f"no service is deployed to {name}", hint="list it under services.<name>.environments")
    return name, [(t, tuple(ks)) for t, ks in groups.values()]


def gitops_head(target: TargetPlan, *, cwd: str | Path | None = None) -> str:
    """The commit the GitOps branch points at (``git ls-remote``; no clone)."""
    url = gitops.resolve_remote(target.gitops.repo, cwd=cwd)
    ref = f"refs/heads/{target.gitops.branch}"
    res = gitops._git(("ls-remote", url, ref), check=False, what="read the GitOps branch head", timeout=60)
    line = next((ln for ln in res.stdout.splitlines() if ln.endswith("\t" + ref)), None)
    if res.returncode != 0 or line is None:
        raise GitOpsError(f"cannot read the head of {target.gitops.branch} in the GitOps repository {target.gitops.repo}"
                          + (f": {res.stderr.strip()}" if res.stderr.strip() else ": no such branch"),
                          hint="check gitops.repo and gitops.branch in deploy.yaml, or pass --revision SHA")
    return line.split("\t", 1)[0]


def run_reconcile(plan: Plan, arg: str, *, revision: str | None = None, timeout: float | None = None,
                  say: Say = log.info, cwd: str | Path | None = None) -> ReconcileReport:
    """``forge reconcile [S:]E``: returns the report; raises :class:`DeployFailed` (report inside)."""
    env, groups = reconcile_targets(plan, arg)
    if revision is not None and not flux._HEX.fullmatch(revision.lower()):
        raise UsageError(f"--revision {revision!r} is not a commit SHA (7 to 64 hex digits)",
                         hint="pass the GitOps commit, e.g. `git -C gitops rev-parse HEAD`")
    conns = [kube.resolve(t.kubeconfig, t.kube_context) for t, _ in groups]
    report = ReconcileReport(target=arg, environment=env)
    try:
        for (target, kustomizations), conn in zip(groups, conns):
            commit = revision or gitops_head(target, cwd=cwd)
            say(f"reconcile: {env}: asking Flux to apply {commit[:7]} of {target.gitops.branch} "
                f"({', '.join(kustomizations)})")
            fplan = replaced(target.flux, kustomizations=kustomizations)
            entry = ReconcileEntry(cluster=target.cluster, commit=commit, kustomizations=list(kustomizations))
            report.reconciles.append(entry)
            try:
                rec = flux.reconcile(kube.client_for(conn), fplan, commit=commit, branch=target.gitops.branch,
                                     timeout=timeout, progress=lambda m: say(f"flux: {m}"))
            except ForgeError as err:
                entry.result = err.result if isinstance(err, ReconcileError) else None
                raise
            entry.result = rec
            say(f"flux: applied {rec.revision}")
    except ForgeError as err:
        report.outcome = "failed"
        report.error = StepError.of(err)
        report.finish()
        raise DeployFailed(f"reconcile of {arg} failed: {err.message}", report, hint=err.hint) from err
    report.outcome = "success"
    report.finish()
    return report


def migration_jobs(plan: Plan, svc: ServicePlan, target: TargetPlan, tag: str) -> list[dict[str, Any]]:
    """The Job manifests ``forge migrate`` creates (what ``--dry-run`` prints)."""
    image = f"{svc.image.repository}:{tag}"
    return [migrate.job_manifest(name=migrate.job_name(svc.name, m.name, tag), namespace=target.namespace,
                                 service=svc.name, migration=m, image=m.image or image) for m in svc.migrations]


def run_migrate(plan: Plan, svc: ServicePlan, target: TargetPlan, *, tag: str, say: Say = log.info) -> MigrateReport:
    """``forge migrate S:E``: every migration of S in E, in order; the first failure stops."""
    where = f"{target.environment}/{svc.name}"
    if not svc.migrations:
        raise UsageError(f"service {svc.name} has no migrations",
                         hint=f"declare them under services.{svc.name}.migrations in deploy.yaml")
    conn = kube.resolve(target.kubeconfig, target.kube_context)
    report = MigrateReport(service=svc.name, environment=target.environment, namespace=target.namespace, tag=tag)
    image = f"{svc.image.repository}:{tag}"
    api = kube.client_for(conn)
    for m in svc.migrations:
        try:
            result = migrate.run_migration(api, service=svc.name, migration=m, namespace=target.namespace,
                                           image=m.image or image, tag=tag, progress=lambda msg: say(f"{where}: {msg}"))
        except ForgeError as err:
            report.migrations.append(MigrationFailure(name=m.name, error=err.message))
            report.outcome = "failed"
            report.finish()
            raise DeployFailed(f"migrate {svc.name}:{target.environment}: {err.message}", report, hint=err.hint) from err
        report.migrations.append(result)
        if not result.ok:
            for line in result.logs[-20:]:
                say(f"    | {line}")
            report.outcome = "failed"
            report.finish()
            failure = MigrationFailed(
                f"migration {m.name} of {svc.name} in {target.environment} {result.outcome}: {result.reason}: "
                f"{result.message}" + (f" (exit code {result.exit_code})" if result.exit_code is not None else ""),
                hint=f"`kubectl -n {target.namespace} logs job/{result.job}` shows its logs; re-running "
                     "`forge migrate` deletes the failed Job and runs it again")
            raise DeployFailed(failure.message, report, hint=failure.hint) from failure
    report.outcome = "success"
    report.finish()
    return report
