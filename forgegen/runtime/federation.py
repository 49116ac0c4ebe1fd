"""The federation step of ``forge release``: compose the GraphQL supergraph and commit it.

After the services of an environment are deployed, for every service with ``graphql`` in
deploy.yaml (and a target in that environment):

1. **Fetch** its subgraph SDL: Apollo Federation's ``query { _service { sdl } }`` over HTTP POST to
   ``graphql.endpoint`` (a pattern over ``{project} {service} {environment} {cluster}``), with a
   per-request timeout and ``retries`` further attempts when it does not answer; or read
   ``graphql.schema_file`` from the source repository.
2. **Compose** the supergraph with `@theguild/federation-composition` (MIT; pinned in
   ``forgegen/federation/package-lock.json``), run by the Node helper
   ``forgegen/federation/compose.cjs`` (JSON subgraphs on stdin, JSON supergraph or errors on
   stdout). Its packages live outside the checkout, in ``~/.cache/forge/federation-<lock hash>``
   (``.ci/setup`` installs them with ``npm ci``; Forge does the same on first use;
   ``FORGE_FEDERATION_NODE_MODULES`` points elsewhere). If it does not compose,
   :class:`FederationFailed` (exit 1) carries every error's code and message; nothing is committed.
3. **Commit** the supergraph to the GitOps repository at ``federation.router_config_path`` /
   ``federation.file`` (with the same fetch-reset-retry push as a deploy; no commit when the file
   already holds it), and **reconcile** Flux to that commit like any deploy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgegen import pattern, process, urls
from forgegen.errors import CommandError, ForgeError, GitOpsError
from forgegen.plan import Plan, ServicePlan, TargetPlan
from forgegen.runtime import cache_dir, flux, gitops

log = logging.getLogger(__name__)
Say = Callable[[str], None]

HELPER_DIR = Path(__file__).resolve().parent.parent / "federation"
SDL_QUERY = "query { _service { sdl } }"
COMPOSE_TIMEOUT = 120.0
MAX_SDL_BYTES = 32 * 1024 * 1024
STEP = "federation"


class FederationFailed(ForgeError):
    """The supergraph could not be fetched, composed or committed (exit 1); ``errors`` lists the
    composition errors (code and message) when it did not compose."""

    def __init__(self, message: str, *, errors: list[dict[str, str]] | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.errors = errors or []


@dataclass(frozen=True)
class Subgraph:
    service: str
    name: str
    url: str  # what the router calls
    source: str  # the endpoint fetched, or the schema file read
    sdl: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "name": self.name, "url": self.url, "source": self.source,
                "sdl_sha256": hashlib.sha256(self.sdl.encode()).hexdigest() if self.sdl else None}


# -- what takes part -------------------------------------------------------------------------


def members(plan: Plan, environment: str) -> list[tuple[ServicePlan, TargetPlan]]:
    """The subgraph services deployed to ``environment`` (plan order)."""
    if plan.federation is None:
        return []
    return [(s, t) for s in plan.services if s.graphql is not None
            for t in s.targets if t.environment == environment]


def _values(plan: Plan, svc: ServicePlan, target: TargetPlan) -> dict[str, str]:
    return {"project": plan.project, "service": svc.name, "environment": target.environment, "cluster": target.cluster}


def subgraph(plan: Plan, svc: ServicePlan, target: TargetPlan) -> Subgraph:
    g = svc.graphql
    assert g is not None
    values = _values(plan, svc, target)
    endpoint = pattern.fill(g.endpoint, values) if g.endpoint else None
    routing = pattern.fill(g.routing_url, values) if g.routing_url else endpoint
    return Subgraph(service=svc.name, name=g.subgraph_name, url=routing or "", source=endpoint or g.schema_file or "")


def supergraph_path(plan: Plan, target: TargetPlan) -> str:
    fed = plan.federation
    assert fed is not None
    directory = pattern.fill(fed.router_config_path, {"project": plan.project, "environment": target.environment,
                                                      "cluster": target.cluster})
    return f"{directory.rstrip('/')}/{fed.file}"


# -- 1. fetch --------------------------------------------------------------------------------


def fetch_sdl(url: str, *, timeout: float, retries: int, service: str) -> str:
    """The SDL ``url`` answers to ``{ _service { sdl } }``; retries when it does not answer."""
    body = json.dumps({"query": SDL_QUERY}).encode()
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(0.2 * 2 ** attempt, 5.0))
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - a configured http(s) URL
                payload = resp.read(MAX_SDL_BYTES + 1)
            if len(payload) > MAX_SDL_BYTES:
                raise FederationFailed(f"{service} at {urls.redact(url)} answered more than {MAX_SDL_BYTES} bytes",
                                       hint="check graphql.endpoint in deploy.yaml; nothing was committed")
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code} {err.reason}"
            if err.code < 500:
                break
            continue
        except (urllib.error.URLError, OSError) as err:
            last = f"{type(err).__name__}: {getattr(err, 'reason', None) or err}"
            continue
        return _sdl_of(payload, url, service)
    raise FederationFailed(
        f"cannot fetch the subgraph SDL of {service} from {urls.redact(url)}: {last} "
        f"(after {attempt + 1} attempt(s))",
        hint="check that the service is up and serves Apollo Federation's `_service { sdl }` at graphql.endpoint "
             "in deploy.yaml; nothing was committed")


def _sdl_of(payload: bytes, url: str, service: str) -> str:
    try:
        doc = json.loads(payload)
    except ValueError:
        doc = None
    sdl = ((doc.get("data") or {}).get("_service") or {}).get("sdl") if isinstance(doc, dict) else None
    if not isinstance(sdl, str) or not sdl.strip():
        errors = doc.get("errors") if isinstance(doc, dict) else None
        detail = ("; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)
                  if isinstance(errors, list) and errors else payload[:200].decode(errors="replace"))
        raise FederationFailed(
            f"{service} at {urls.redact(url)} did not answer `_service {{ sdl }}` with an SDL: {detail}",
            hint="a federation subgraph must serve the `_service` field (Apollo Federation subgraph spec); "
                 "nothing was committed")
    return sdl


def read_sdl(sub: Subgraph, svc: ServicePlan, cwd: str | Path | None) -> Subgraph:
    g = svc.graphql
    assert g is not None
    if g.endpoint:
        sdl = fetch_sdl(sub.source, timeout=g.timeout, retries=g.retries, service=svc.name)
    else:
        path = Path(cwd or ".") / sub.source
        try:
            sdl = path.read_text(encoding="utf-8")
        except OSError as err:
            raise FederationFailed(f"cannot read the subgraph schema of {svc.name} ({sub.source}): {err.strerror or err}",
                                   hint="fix services.<name>.graphql.schema_file in deploy.yaml") from err
    return Subgraph(**{**sub.__dict__, "sdl": sdl})


# -- 2. compose ------------------------------------------------------------------------------


def _lock_hash() -> str:
    return hashlib.sha256((HELPER_DIR / "package-lock.json").read_bytes()).hexdigest()[:16]


def node_modules(say: Say = log.info) -> Path:
    """The helper's pinned packages: ``FORGE_FEDERATION_NODE_MODULES``, else the cache keyed on the
    lockfile (installed with ``npm ci`` the first time)."""
    from forgegen.runtime import npmcache

    configured = os.environ.get("FORGE_FEDERATION_NODE_MODULES")
    if configured:
        return Path(configured)
    return npmcache.installed(HELPER_DIR, cache_dir() / f"federation-{_lock_hash()}",
                              what="the supergraph composition helper's packages",
                              say=lambda m: say(f"federation: {m}"), marker="@theguild/federation-composition")


def compose(subgraphs: list[Subgraph], *, say: Say = log.info) -> dict[str, Any]:
    """``{"ok": True, "supergraph": SDL}`` or ``{"ok": False, "errors": [{code, message}]}``."""
    doc = {"subgraphs": [{"name": s.name, "url": s.url, "sdl": s.sdl} for s in subgraphs]}
    nm = node_modules(say)
    try:
        res = process.run(["node", str(HELPER_DIR / "compose.cjs")], input=json.dumps(doc), env={"NODE_PATH": str(nm)},
                          timeout=COMPOSE_TIMEOUT, what="compose the supergraph")
    except CommandError as err:
        raise FederationFailed(err.message, hint=err.hint or "check Node (20 or later) and the helper's packages "
                                                             f"in {nm}; nothing was committed") from err
    try:
        out = json.loads(res.stdout)
        assert isinstance(out, dict) and isinstance(out.get("ok"), bool)
    except (ValueError, AssertionError):
        raise FederationFailed(f"the composition helper answered something else than JSON: {res.stdout[:200]!r}",
                               hint="run .ci/setup again; nothing was committed") from None
    return out


# -- 3. commit and reconcile -----------------------------------------------------------------


def commit_file(target: TargetPlan, relpath: str, content: str, message: str, *, dry_run: bool = False,
                cache: str | Path | None = None, cwd: str | Path | None = None) -> dict[str, Any]:
    """Write ``content`` to ``relpath`` in the GitOps repository of ``target``, commit and push
    (fetch-reset-rewrite on a race, as :func:`gitops.apply_tag`). No commit when identical."""
    g = target.gitops
    repo = gitops.GitOpsRepo.open(g.repo, g.branch, cache=cache, cwd=cwd)
    with repo.locked():
        for attempt in range(1, g.push_attempts + 1):
            cycle_start = time.perf_counter()
            head = repo.sync()
            path = repo.path_of(relpath)
            before = path.read_text(encoding="utf-8") if path.is_file() else None
            base = {"repo": repo.url, "branch": g.branch, "file": relpath, "attempts": attempt, "dry_run": dry_run}
            if before == content:
                return {**base, "changed": False, "commit": None, "revision": head}
            if dry_run:
                return {**base, "changed": True, "commit": None, "revision": head}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
            try:
                repo.git("add", "--", relpath, what="stage the supergraph")
                repo.git("commit", "--quiet", "--no-verify", "-F", "-", "--", relpath, input=message,
                         what="commit the supergraph")
                commit = repo.git("rev-parse", "HEAD", what="read the new commit").stdout.strip()
                push = repo.git("push", "--quiet", "--porcelain", "origin", f"HEAD:refs/heads/{g.branch}",
                                check=False, what="push the supergraph", timeout=gitops.NETWORK_TIMEOUT)
            except BaseException:
                gitops._reset_quietly(repo)
                raise
            if push.returncode == 0:
                repo.git("update-ref", repo.remote_ref, commit, what="record the pushed commit")
                return {**base, "changed": True, "commit": commit, "revision": commit}
            gitops._reset_quietly(repo)
            if not any(m in f"{push.stdout}\n{push.stderr}" for m in gitops._RACE_MARKERS):
                raise GitOpsError(f"cannot push {relpath} to {repo.display} (branch {g.branch}): git push exited with "
                                  f"{push.returncode}: {(push.stderr or push.stdout).strip()[-500:]}",
                                  hint="check your push rights and branch protection; nothing was pushed")
            time.sleep(gitops.backoff(attempt, time.perf_counter() - cycle_start))
    raise GitOpsError(f"cannot push {relpath} to {repo.display} (branch {g.branch}): the branch moved under every "
                      f"one of {g.push_attempts} attempts", hint="release again, or raise gitops.push_attempts")


def run_federation(plan: Plan, environment: str, *, api: Any, source_commit: str, dry_run: bool = False,
                   say: Say = log.info, cache: str | Path | None = None,
                   cwd: str | Path | None = None) -> dict[str, Any] | None:
    """Fetch, compose, commit and reconcile the supergraph of ``environment``; the report entry,
    or None when no subgraph is deployed there. ``api`` None: no reconcile (nothing to talk to).
    Raises :class:`FederationFailed` (composition errors inside) or a GitOps/Flux error."""
    pairs = members(plan, environment)
    if not pairs:
        return None
    fed = plan.federation
    assert fed is not None
    target = pairs[0][1]
    relpath = supergraph_path(plan, target)
    report: dict[str, Any] = {"environment": environment, "outcome": "running", "file": relpath,
                              "subgraphs": [], "errors": [], "gitops": None, "reconcile": None}
    subs = []
    for svc, t in pairs:
        sub = read_sdl(subgraph(plan, svc, t), svc, cwd)
        say(f"federation: {environment}: {sub.name}: {len(sub.sdl)} bytes of SDL from {urls.redact(sub.source)}")
        subs.append(sub)
        report["subgraphs"].append(sub.to_json())
    result = compose(subs, say=say)
    if not result["ok"]:
        report.update(outcome="failed", errors=result.get("errors") or [])
        lines = [f"  {e.get('code')}: {e.get('message')}" for e in report["errors"]]
        raise FederationFailed(
            f"the supergraph of {environment} does not compose ({len(lines)} error(s)):\n" + "\n".join(lines),
            errors=report["errors"],
            hint=f"fix the subgraphs' schemas ({', '.join(s.name for s in subs)}); nothing was committed to "
                 f"{relpath}")
    sdl = result["supergraph"].rstrip("\n") + "\n"
    report["supergraph_sha256"] = hashlib.sha256(sdl.encode()).hexdigest()
    message = pattern.fill(fed.commit_message, {"project": plan.project, "environment": environment,
                                                "cluster": target.cluster, "source_commit": source_commit})
    g = commit_file(target, relpath, sdl, message, dry_run=dry_run, cache=cache, cwd=cwd)
    report["gitops"] = g
    say(f"federation: {environment}: " + (f"committed {g['commit'][:7]}" if g["commit"] else
                                           "would commit" if g["changed"] else "supergraph unchanged (no commit)")
        + f" {g['file']}")
    if api is not None and not dry_run:
        rec = flux.reconcile(api, target.flux, commit=g["revision"], branch=target.gitops.branch,
                             progress=lambda m: say(f"federation: flux: {m}"))
        report["reconcile"] = rec.to_json()
    report["outcome"] = "success"
    return report


def dry_run_steps(plan: Plan, environment: str) -> list[dict[str, Any]]:
    """What the step will do in ``environment`` (for ``--dry-run``): [] when nothing."""
    pairs = members(plan, environment)
    if not pairs:
        return []
    subs = [subgraph(plan, s, t) for s, t in pairs]
    return [{"environment": environment, "file": supergraph_path(plan, pairs[0][1]),
             "subgraphs": [{"name": s.name, "service": s.service, "source": s.source, "url": s.url} for s in subs]}]
