"""Generated code: GraphQL schema extraction and code generation, and ``Cargo.nix``.

* ``forge extract-schema S`` asks the running service (``codegen.extract.url``) for its schema:
  Apollo Federation's ``{ _service { sdl } }`` when it answers it (``via: auto`` or
  ``federation``), else graphql-js's standard introspection query, printed as SDL by the helper
  ``forgegen/federation/introspect.cjs`` (graphql-js ``buildClientSchema`` +
  ``lexicographicSortSchema`` + ``printSchema``, with the composition helper's pinned packages:
  sorted, because servers answer introspection in their own order, some in another on every
  request, and ``--check`` must find an unchanged schema up to date). It writes the SDL to ``codegen.extract.output``.
* ``forge codegen [S]`` runs each service's ``codegen.command`` with bash in its directory. A
  ``package-lock.json`` there gets its ``node_modules`` from Forge's cache, outside the checkout,
  keyed on the lockfile (``npm ci`` the first time; a symlink in the service's directory, unless
  it has a ``node_modules`` of its own), so the generator is the one the service pins.
* ``forge codegen-sync`` is both for every service that declares them (extractions first: a
  client's generator reads a server's schema). ``--check`` writes nothing and exits 1 naming the
  files that are out of date.

Every run works in a scratch copy of the repository and then writes back only the declared files
(``extract.output`` and ``outputs``) with the writer's verbs, so ``--check`` and a failed command
leave the checkout untouched.

* ``forge update-cargo-nix S`` regenerates ``Cargo.nix`` with ``crate2nix generate`` for a Rust
  service whose directory has one; for any other service it says that its build needs none (exit 0).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from forgegen import process, urls
from forgegen.errors import CommandError, ForgeError, UsageError
from forgegen.plan import CodegenPlan, Plan, ServicePlan
from forgegen.runtime import cache_dir, federation

log = logging.getLogger(__name__)
Say = Callable[[str], None]

SDL_QUERY = "query { _service { sdl } }"
MAX_BYTES = 32 * 1024 * 1024
INSTALL_TIMEOUT = 900.0
HELPER_TIMEOUT = 120.0
SKIP_DIRS = {".git", "node_modules", ".forge", "target", ".venv"}


class CodegenFailed(ForgeError):
    """A schema could not be fetched or a generator failed (exit 1); nothing was written."""


class OutOfDate(ForgeError):
    """``--check`` found generated files that differ from what would be generated (exit 1)."""

    def __init__(self, message: str, *, files: list[dict[str, str]], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.files = files


# -- 1. the schema of a running service --------------------------------------------------------


def _post(url: str, query: str, timeout: float, service: str) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps({"query": query}).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - a configured http(s) URL
            payload = resp.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as err:  # GraphQL servers answer errors with 400 and a JSON body
        payload = err.read(MAX_BYTES + 1)
        if not payload.strip().startswith(b"{"):
            raise CodegenFailed(f"{service} at {urls.redact(url)} answered HTTP {err.code} {err.reason}",
                                hint="check services.<name>.codegen.extract.url in deploy.yaml") from err
    except (urllib.error.URLError, OSError) as err:
        raise CodegenFailed(f"cannot reach {service} at {urls.redact(url)}: {getattr(err, 'reason', None) or err}",
                            hint=f"start it first (e.g. nix run .#dev-up:{service} or its dev command), or fix "
                                 "codegen.extract.url in deploy.yaml; nothing was written") from err
    if len(payload) > MAX_BYTES:
        raise CodegenFailed(f"{service} at {urls.redact(url)} answered more than {MAX_BYTES} bytes")
    try:
        doc = json.loads(payload)
    except ValueError as err:
        raise CodegenFailed(f"{service} at {urls.redact(url)} did not answer JSON: {payload[:200]!r}",
                            hint="is codegen.extract.url the GraphQL endpoint?") from err
    if not isinstance(doc, dict):
        raise CodegenFailed(f"{service} at {urls.redact(url)} answered {type(doc).__name__}, not a GraphQL response")
    return doc


def _federation_sdl(doc: dict[str, Any]) -> str | None:
    sdl = ((doc.get("data") or {}).get("_service") or {}).get("sdl") if isinstance(doc.get("data"), dict) else None
    return sdl if isinstance(sdl, str) and sdl.strip() else None


def _helper(args: list[str], stdin: str | None, say: Say) -> dict[str, Any]:
    nm = federation.node_modules(say)
    try:
        res = process.run(["node", str(federation.HELPER_DIR / "introspect.cjs"), *args], input=stdin,
                          env={"NODE_PATH": str(nm)}, timeout=HELPER_TIMEOUT, what="print the schema as SDL")
        out = json.loads(res.stdout)
    except CommandError as err:
        raise CodegenFailed(err.message, hint=f"check Node (20 or later) and the helper's packages in {nm}") from err
    except ValueError as err:
        raise CodegenFailed(f"the introspection helper answered something else than JSON: {res.stdout[:200]!r}") from err
    return out if isinstance(out, dict) else {}


def fetch_schema(service: str, cg: CodegenPlan, say: Say = log.info) -> tuple[str, str]:
    """The SDL of the running ``service`` and how it was read (``federation`` or ``introspection``)."""
    assert cg.extract_url is not None
    url = cg.extract_url
    if cg.extract_via in ("auto", "federation"):
        sdl = _federation_sdl(_post(url, SDL_QUERY, cg.extract_timeout, service))
        if sdl is not None:
            return sdl.rstrip("\n") + "\n", "federation"
        if cg.extract_via == "federation":
            raise CodegenFailed(f"{service} at {urls.redact(url)} does not answer `_service {{ sdl }}`",
                                hint="set codegen.extract.via: introspection (or auto) in deploy.yaml")
    query = _helper(["--query"], None, say).get("query")
    answer = _post(url, str(query), cg.extract_timeout, service)
    out = _helper([], json.dumps(answer), say)
    if not out.get("ok"):
        raise CodegenFailed(f"cannot read the schema of {service} from {urls.redact(url)} by introspection: "
                            f"{out.get('error')}", hint="the service must allow introspection (or serve _service { sdl })")
    return str(out["sdl"]), "introspection"


# -- 2. the generator's packages ---------------------------------------------------------------


def node_modules_cache() -> Path:
    configured = os.environ.get("FORGE_NODE_MODULES_CACHE")
    return Path(configured) if configured else cache_dir("node-modules")


def ensure_node_modules(service_dir: Path, say: Say = log.info) -> Path | None:
    """``service_dir/node_modules`` from the cache keyed on its ``package-lock.json`` (None: the
    service pins no npm packages, or has a ``node_modules`` of its own, which is used as it is)."""
    from forgegen.runtime import npmcache

    link = service_dir / "node_modules"
    if not (service_dir / "package-lock.json").is_file() or (link.exists() and not link.is_symlink()):
        return None
    try:
        modules = npmcache.installed(service_dir, node_modules_cache() / npmcache.lock_key(service_dir),
                                     what=f"{service_dir.name}'s pinned npm packages", say=lambda m: say(f"codegen: {m}"))
    except CommandError as err:
        raise CodegenFailed(err.message, hint="check package.json and package-lock.json, and that the npm "
                                              "registry is reachable") from err
    npmcache.link(service_dir, modules)
    return modules


def run_generator(service: ServicePlan, service_dir: Path, say: Say = log.info) -> None:
    cg = service.codegen
    assert cg is not None and cg.command is not None
    if not service_dir.is_dir():
        raise UsageError(f"codegen: the directory of {service.name} ({service.path}) does not exist",
                         hint="run this from the repository root, or fix services.<name>.path")
    ensure_node_modules(service_dir, say)
    say(f"codegen: {service.name}: {cg.command}")
    try:
        res = process.run(["bash", "-c", cg.command], cwd=service_dir, timeout=cg.timeout,
                          what=f"run the code generator of {service.name}")
    except CommandError as err:
        raise CodegenFailed(err.message, hint=f"fix services.{service.name}.codegen.command or the generator's "
                                              "configuration; nothing was written") from err
    for line in (res.stdout + res.stderr).strip().splitlines()[-5:]:
        say(f"codegen: {service.name}:   {line}")


# -- 3. a scratch copy, and writing back the declared files -------------------------------------


def _repo_files(root: Path) -> list[str]:
    """The files of the checkout: git's (tracked, and untracked but not ignored), else every file
    outside SKIP_DIRS."""
    if (root / ".git").exists():
        try:
            out = process.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                              what="list the repository's files").stdout
            return sorted(p for p in out.split("\0") if p and (root / p).is_file() and not (root / p).is_symlink())
        except CommandError:
            pass
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and not p.is_symlink() and not SKIP_DIRS & set(p.relative_to(root).parts))


def _snapshot(base: Path, rels: list[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for rel in rels:
        path = base / rel
        if path.is_file():
            out[rel] = path.read_bytes()
        elif path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.is_file() and not SKIP_DIRS & set(p.relative_to(base).parts):
                    out[p.relative_to(base).as_posix()] = p.read_bytes()
    return out


def _diff(before: dict[str, bytes], after: dict[str, bytes]) -> list[dict[str, str]]:
    out = []
    for rel in sorted(set(before) | set(after)):
        verb = ("create" if rel not in before else "remove" if rel not in after
                else "identical" if before[rel] == after[rel] else "overwrite")
        out.append({"path": rel, "verb": verb})
    return out


def _write_back(root: Path, scratch: Path, files: list[dict[str, str]]) -> None:
    for f in files:
        target = root / f["path"]
        if f["verb"] in ("create", "overwrite"):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.forge-tmp")
            shutil.copyfile(scratch / f["path"], tmp)
            os.replace(tmp, target)
        elif f["verb"] == "remove":
            target.unlink()


def _scratch_copy(root: Path, scratch: Path, services: list[ServicePlan], gen: list[ServicePlan]) -> Path:
    """The repository's files in ``scratch``, plus the schema files on disk (also when git ignores
    them: a generator reads them), minus what the generators write (so that a file they no longer
    write shows as removed)."""
    for rel in _repo_files(root):
        (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, scratch / rel)
    schemas = [s.codegen.extract_output for s in services if s.codegen and s.codegen.extract_output]
    for rel, data in _snapshot(root, schemas).items():
        (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
        (scratch / rel).write_bytes(data)
    for rel in _snapshot(scratch, [o for s in gen if s.codegen for o in s.codegen.outputs]):
        (scratch / rel).unlink()
    return scratch


def _jobs(plan: Plan, service: str | None, *, extract: bool, generate: bool) -> tuple[list[ServicePlan], list[ServicePlan]]:
    services = [plan.service(service)] if service else list(plan.services)
    ex = [s for s in services if extract and s.codegen and s.codegen.extract_url]
    gen = [s for s in services if generate and s.codegen and s.codegen.command]
    if service and not ex and not gen:
        key = "extract" if extract and not generate else "command" if generate and not extract else "extract or command"
        raise UsageError(f"{service} declares no codegen {key}",
                         hint=f"set services.{service}.codegen.{key.split()[0]} in deploy.yaml and run forgegen sync")
    return ex, gen


def describe(plan: Plan, service: str | None, *, extract: bool, generate: bool) -> list[dict[str, Any]]:
    """What a run would do (``--dry-run``), in order."""
    ex, gen = _jobs(plan, service, extract=extract, generate=generate)
    steps: list[dict[str, Any]] = [{"step": "extract-schema", "service": s.name, "url": urls.redact(s.codegen.extract_url or ""),
              "via": s.codegen.extract_via, "output": s.codegen.extract_output} for s in ex if s.codegen]
    steps += [{"step": "codegen", "service": s.name, "directory": s.path, "command": s.codegen.command,
               "outputs": list(s.codegen.outputs)} for s in gen if s.codegen]
    return steps


def run(root: Path, plan: Plan, service: str | None, *, extract: bool, generate: bool, check: bool = False,
        say: Say = log.info) -> dict[str, Any]:
    """Extract and/or generate in a scratch copy of ``root``, then write the declared files back
    (``check``: write nothing; :class:`OutOfDate` when any differs). The JSON report."""
    ex, gen = _jobs(plan, service, extract=extract, generate=generate)
    declared = [s.codegen.extract_output for s in ex if s.codegen and s.codegen.extract_output]
    declared += [o for s in gen if s.codegen for o in s.codegen.outputs]
    report: dict[str, Any] = {"extracted": [], "generated": [], "check": check}
    with tempfile.TemporaryDirectory(prefix="forge-codegen-") as tmp:
        scratch = _scratch_copy(root, Path(tmp) / "repo", list(plan.services), gen)
        for s in ex:
            assert s.codegen is not None and s.codegen.extract_output is not None
            sdl, via = fetch_schema(s.name, s.codegen, say)
            say(f"extract-schema: {s.name}: {len(sdl)} bytes of SDL ({via}) from {urls.redact(s.codegen.extract_url or '')}")
            out = scratch / s.codegen.extract_output
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(sdl, encoding="utf-8")
            report["extracted"].append({"service": s.name, "via": via, "file": s.codegen.extract_output,
                                        "sha256": hashlib.sha256(sdl.encode()).hexdigest()})
        for s in gen:
            run_generator(s, scratch / s.path, say)
            report["generated"].append({"service": s.name, "outputs": list(s.codegen.outputs) if s.codegen else []})
        files = _diff(_snapshot(root, declared), _snapshot(scratch, declared))
        stale = [f for f in files if f["verb"] != "identical"]
        report.update(files=files, changed=bool(stale), written=bool(stale) and not check)
        for f in files:
            say(f"{f['verb']:>10}  {f['path']}")
        if check and stale:
            raise OutOfDate(f"{len(stale)} generated file(s) out of date: " + ", ".join(f["path"] for f in stale),
                            files=stale, hint="run `nix run .#codegen-sync` (forge codegen-sync) and commit the result")
        if not check:
            _write_back(root, scratch, stale)
    return report


# -- 4. Cargo.nix (crate2nix) -----------------------------------------------------------------

CARGO_NIX = "Cargo.nix"


def update_cargo_nix(root: Path, service: ServicePlan, *, dry_run: bool = False, say: Say = log.info) -> dict[str, Any]:
    """Regenerate ``Cargo.nix`` with ``crate2nix generate`` in the service's directory, for a
    Rust service whose build uses one; otherwise say why nothing is needed (not an error)."""
    directory = root / service.path
    base = {"service": service.name, "directory": service.path, "file": (PurePosixPath(service.path) / CARGO_NIX).as_posix()}
    if service.type != "rust":
        reason = f"{service.name} is a {service.type} service: its build needs no Cargo.nix; nothing to do"
        say(f"update-cargo-nix: {reason}")
        return {**base, "needed": False, "reason": reason, "changed": False}
    if not (directory / CARGO_NIX).is_file():
        reason = (f"{service.name} builds without a generated Cargo.nix (there is none in {service.path}); nothing to "
                  f"do (to build with crate2nix, run `crate2nix generate` there once and use Cargo.nix in the package)")
        say(f"update-cargo-nix: {reason}")
        return {**base, "needed": False, "reason": reason, "changed": False}
    argv = ["crate2nix", "generate", "-f", "Cargo.toml", "-o", CARGO_NIX]
    if dry_run:
        return {**base, "needed": True, "dry_run": True, "command": argv}
    before = (directory / CARGO_NIX).read_bytes()
    say(f"update-cargo-nix: {service.name}: {' '.join(argv)}")
    try:
        process.run(argv, cwd=directory, timeout=INSTALL_TIMEOUT, what=f"regenerate {CARGO_NIX} of {service.name}")
    except CommandError as err:
        raise CodegenFailed(err.message, hint="install crate2nix (`cargo install crate2nix`, or nix run "
                                              "nixpkgs#crate2nix) and check Cargo.toml and Cargo.lock") from err
    changed = (directory / CARGO_NIX).read_bytes() != before
    say(f"update-cargo-nix: {service.name}: {CARGO_NIX} {'updated' if changed else 'unchanged'}")
    return {**base, "needed": True, "changed": changed}
