"""``forgegen import OLD_DEPLOY_YAML…``: the per-service files of the tool Forge replaces → one deploy.yaml.

An old file describes one service::

    service: {name: api, type: rust}
    registry: {host: ghcr.io, organization: acme, project: shop}
    cache: {server: https://attic.example.com, name: shop}      # or a server *name* from attic's config
    manifests: {kustomization: deploy/api/overlays/production}

What carries over is written as YAML; what Forge cannot know from these files is written with a
``# DECIDE:`` comment next to a value that validates, so ``forgegen check`` passes and a reviewer
finds each decision by searching for DECIDE. The result is validated with the deploy.yaml schema
before anything is written.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgegen.errors import ConfigError, Problem, UsageError

TYPES = {"rust", "python", "go", "node"}
ALIASES = {"golang": "go", "nodejs": "node", "javascript": "node", "typescript": "node", "py": "python"}
ENV_WORDS = ("staging", "production", "prod", "dev", "development", "test", "qa", "preview", "sandbox")


@dataclass
class OldService:
    file: Path
    name: str
    type: str
    raw_type: str | None
    registry: dict[str, str]
    cache: dict[str, str]
    kustomization: str | None


@dataclass
class Result:
    text: str
    carried: list[str] = field(default_factory=list)
    decide: list[str] = field(default_factory=list)


def _problem(file: Path, where: str, message: str) -> Problem:
    return Problem(file=str(file), line=None, column=None, path=where, message=message)


def read_old(path: Path) -> OldService:
    """One old per-service file; every problem at once (ConfigError, exit 2)."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file", hint="pass the old per-service deploy.yaml files") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError([_problem(path, "", f"cannot read it as YAML: {err}")]) from err
    problems: list[Problem] = []
    if not isinstance(doc, dict):
        raise ConfigError([_problem(path, "", "expected a mapping with service, registry, cache and manifests")])

    def section(key: str, required: bool) -> dict[str, Any]:
        value = doc.get(key)
        if value is None:
            if required:
                problems.append(_problem(path, key, f"missing `{key}:`"))
            return {}
        if not isinstance(value, dict):
            problems.append(_problem(path, key, f"`{key}` must be a mapping"))
            return {}
        return value

    service, registry, cache, manifests = (section("service", True), section("registry", False),
                                           section("cache", False), section("manifests", False))
    name = service.get("name")
    if service and not (isinstance(name, str) and re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name)):
        problems.append(_problem(path, "service.name", f"service.name {name!r} is not a DNS label "
                                                       "(lowercase letters, digits, '-')"))
    for key, sec in (("registry", registry), ("cache", cache), ("manifests", manifests)):
        for k, v in sec.items():
            if not isinstance(v, (str, int)):
                problems.append(_problem(path, f"{key}.{k}", f"`{key}.{k}` must be a string"))
    if problems:
        raise ConfigError(problems)
    raw = service.get("type")
    kind = ALIASES.get(str(raw).lower(), str(raw).lower()) if raw else "generic"
    return OldService(path, str(name), kind if kind in TYPES else "generic", None if raw is None else str(raw),
                      {k: str(v) for k, v in registry.items()}, {k: str(v) for k, v in cache.items()},
                      str(manifests["kustomization"]) if manifests.get("kustomization") else None)


def _environment_of(path: str | None) -> str | None:
    for part in reversed(Path(path or "").parts):
        if part in ENV_WORDS:
            return part
    return None


def _one(values: list[str], what: str, decide: list[str]) -> str | None:
    distinct = sorted(set(v for v in values if v))
    if len(distinct) > 1:
        decide.append(f"{what}: the old files disagree ({', '.join(distinct)}); {distinct[0]} was taken")
    return distinct[0] if distinct else None


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def convert(olds: list[OldService], *, base: Path) -> Result:
    """The deploy.yaml text for ``olds`` (relative paths from ``base``, where deploy.yaml goes)."""
    names = [o.name for o in olds]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(f"service {', '.join(dupes)} is described by more than one file: "
                         + ", ".join(str(o.file) for o in olds if o.name in dupes),
                         hint="import each service once")
    res = Result("")
    carried, decide = res.carried, res.decide
    project = _one([o.registry.get("project", "") for o in olds], "project (registry.project)", decide)
    host = _one([o.registry.get("host", "") for o in olds], "registry.host", decide)
    org = _one([o.registry.get("organization", "") for o in olds], "registry.organization", decide)
    out: list[str] = ["# Imported by `forgegen import` from: " + ", ".join(str(o.file) for o in olds),
                      "# Search for DECIDE: each marks a value Forge could not take from the old files.",
                      "version: 1"]
    if project:
        out.append(f"project: {project}  # from registry.project")
        carried.append(f"project {project} (registry.project)")
    else:
        project = Path(base.resolve()).name.lower() or "project"
        project = re.sub(r"[^a-z0-9-]+", "-", project).strip("-") or "project"
        out.append(f"project: {project}  # DECIDE: no registry.project in the old files; the directory's name")
        decide.append("project: no registry.project in the old files")
    out.append("registry:")
    if host:
        out.append(f"  host: {host}")
        carried.append(f"registry.host {host}")
    else:
        out.append("  host: ghcr.io  # DECIDE: no registry.host in the old files")
        decide.append("registry.host")
    if org:
        out.append(f"  organization: {org}")
        carried.append(f"registry.organization {org}")
    out.append('  image_name: "{project}/{service}"  # DECIDE: the old images were <host>/<organization>/'
               '<project>/<service>? check one with `skopeo list-tags`')
    decide.append("registry.image_name: how the old tool named images under the organization")
    out += _cache_lines(olds, carried, decide)
    out += _gitops_lines(olds, base, carried, decide)
    envs = sorted({e for o in olds if (e := _environment_of(o.kustomization))}, key=ENV_WORDS.index)
    out.append("environments:")
    if envs:
        for e in envs:
            out.append(f"  - name: {e}  # from manifests.kustomization")
        carried.append(f"environments {', '.join(envs)} (from the kustomization paths)")
    else:
        out.append("  - name: production  # DECIDE: the old files name no environment")
        decide.append("environments: the old files name none")
    out.append("services:")
    for o in olds:
        out += _service_lines(o, base, envs, carried, decide)
    res.text = "\n".join(out) + "\n"
    return res


def _cache_lines(olds: list[OldService], carried: list[str], decide: list[str]) -> list[str]:
    server = _one([o.cache.get("server", "") for o in olds], "cache.server", decide)
    name = _one([o.cache.get("name", "") for o in olds], "cache.name", decide)
    if not server and not name:
        return []
    cache = re.sub(r"[^a-z0-9-]+", "-", (name or "cache").lower()).strip("-") or "cache"
    if server and re.match(r"^https?://", server):
        carried.append(f"attic {server} cache {cache} (cache.server, cache.name)")
        return ["attic:", f"  endpoint: {server}", f"  cache: {cache}",
                "  # token: $ATTIC_TOKEN (see the README for ATTIC_CACHE_URL, ATTIC_CACHE_NAME, ATTIC_SERVER_NAME)"]
    decide.append(f"attic.endpoint: cache.server {server!r} names a server of attic's client config, not a URL")
    return [f"# DECIDE: cache.server {server!r} is a server name from attic's client configuration; Forge needs",
            "# its URL. Uncomment with the endpoint (or set ATTIC_CACHE_URL):",
            "# attic:", "#   endpoint: https://attic.example.com", f"#   cache: {cache}"]


def _pattern(olds: list[OldService]) -> str | None:
    """One gitops.path pattern that gives every old kustomization path, if there is one."""
    found: set[str] = set()
    for o in olds:
        if not o.kustomization:
            return None
        p = o.kustomization.strip("/")
        if p.endswith("kustomization.yaml"):
            p = os.path.dirname(p)
        env = _environment_of(p)
        parts = [("{service}" if x == o.name else "{environment}" if x == env else x) for x in Path(p).parts]
        found.add("/".join(parts))
    return found.pop() if len(found) == 1 else None


def _gitops_lines(olds: list[OldService], base: Path, carried: list[str], decide: list[str]) -> list[str]:
    out = ["gitops:", "  repo: ./gitops.git  # DECIDE: the repository Flux follows (the old tool applied the "
                      "manifests from each service's repository)"]
    decide.append("gitops.repo: the GitOps repository Flux follows")
    pattern = _pattern(olds)
    if pattern:
        out.append(f"  path: {_q(pattern)}  # from manifests.kustomization")
        carried.append(f"gitops.path {pattern} (the manifests.kustomization paths)")
    else:
        listed = "; ".join(f"{o.name}: {o.kustomization or '(none)'}" for o in olds)
        out.append(f'  path: "clusters/{{cluster}}/{{service}}"  # DECIDE: the old paths follow no one pattern ({listed})')
        decide.append("gitops.path: the old kustomization paths follow no one pattern")
    out += ["flux:", '  kustomizations: ["apps-{environment}"]  # DECIDE: the Flux Kustomizations to wait for']
    decide.append("flux.kustomizations")
    return out


def _service_lines(o: OldService, base: Path, envs: list[str], carried: list[str], decide: list[str]) -> list[str]:
    rel = os.path.relpath(o.file.resolve().parent, base.resolve())
    out = [f"  {o.name}:  # from {o.file}", f"    type: {o.type}" + (
        f"  # DECIDE: old type {o.raw_type!r} has no Forge builder; generic" if o.type == "generic" and o.raw_type
        else "")]
    if o.type == "generic" and o.raw_type:
        decide.append(f"services.{o.name}.type: {o.raw_type!r}")
    if not rel.startswith(".."):
        out.append(f"    path: {_q(rel)}")
    else:
        out.append(f"    path: \".\"  # DECIDE: {o.file} lies outside this directory")
        decide.append(f"services.{o.name}.path")
    env = _environment_of(o.kustomization)
    if env and len(envs) > 1:
        out.append(f"    environments: [{env}]  # only {env} had manifests")
    carried.append(f"service {o.name} ({o.type})")
    return out


def run_import(files: list[Path], *, base: Path) -> Result:
    """Read every old file (all problems at once), convert, validate the result; nothing written."""
    from forgegen.schema import parse_config

    olds: list[OldService] = []
    problems: list[Problem] = []
    for f in files:
        try:
            olds.append(read_old(f))
        except ConfigError as err:
            problems += err.problems
    if problems:
        raise ConfigError(problems)
    result = convert(olds, base=base)
    parse_config(result.text, "deploy.yaml (imported)")
    return result
