"""External git sources: ``services.S.source: {git, ref}`` pinned in ``deploy.lock``.

``forgegen lock`` resolves each source's ``ref`` to a commit (``git ls-remote``) and hashes the
tree at that commit, as Nix does (the NAR hash of the checkout without ``.git``): with
``nix-prefetch-git`` when it is on PATH (its JSON output), otherwise with ``builtins.fetchGit``
through ``nix eval``. Both give the same entry. ``deploy.lock`` is JSON, sorted, one entry per
service; ``forgegen sync`` renders the pins into ``nix/forge/default.nix`` (``sources.<name>``,
fetched by ``forge.lib.sources.fetch`` with the pinned ``rev`` and ``narHash``) and refuses a
source that is not locked, or whose lock entry no longer matches deploy.yaml.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgegen import nix, process, urls
from forgegen.errors import CommandError, ConfigError, ForgeError, Problem, UsageError

if TYPE_CHECKING:
    from forgegen import schema

LOCK_FILE = "deploy.lock"
LOCK_VERSION = 1
GIT_TIMEOUT = 300.0
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SRI = re.compile(r"^sha256-[A-Za-z0-9+/]{43}=$")
_NIX_BASE32 = "0123456789abcdfghijklmnpqrsvwxyz"
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0"}


class SourceError(ForgeError):
    """A source could not be resolved or fetched (exit 1)."""


@dataclass(frozen=True)
class Pin:
    """One locked source: where, what was asked for, and what it resolved to."""

    url: str
    ref: str  # as deploy.yaml says it
    resolved_ref: str | None  # the full ref Nix fetches (refs/heads/main); None for a commit
    rev: str
    nar_hash: str  # SRI sha256 of the tree without .git

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "ref": self.ref, "resolvedRef": self.resolved_ref, "rev": self.rev,
                "narHash": self.nar_hash}

    def fetch_args(self) -> dict[str, Any]:
        """What ``forge.lib.sources.fetch`` takes (and ``builtins.fetchGit`` after it)."""
        return {"url": self.url, "ref": self.resolved_ref, "rev": self.rev, "narHash": self.nar_hash}


def lock_path(config_path: Path) -> Path:
    return config_path.parent / LOCK_FILE


def lock_text(pins: dict[str, Pin]) -> str:
    doc = {"version": LOCK_VERSION, "sources": {name: pins[name].to_json() for name in sorted(pins)}}
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def read_lock(path: Path) -> dict[str, Pin]:
    """The pins in ``path`` ({} when it does not exist); ConfigError (exit 2) when unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise ConfigError.single(path.name, f"cannot read it: {err.strerror or err}") from err
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise ConfigError(f"{path.name}: not JSON: {err}", hint="delete it and run `forgegen lock`") from err
    if not isinstance(doc, dict) or doc.get("version") != LOCK_VERSION or not isinstance(doc.get("sources"), dict):
        raise ConfigError(f'{path.name}: not a version-{LOCK_VERSION} lock file ({{"version": 1, "sources": {{…}}}})',
                          hint="delete it and run `forgegen lock`")
    pins, problems = {}, []
    for name, entry in doc["sources"].items():
        try:
            pins[name] = _pin_of(entry)
        except ValueError as err:
            problems.append(Problem(path.name, None, None, f"sources.{name}", str(err)))
    if problems:
        raise ConfigError(problems, hint="run `forgegen lock --update` to write it again")
    return pins


def _pin_of(entry: object) -> Pin:
    if not isinstance(entry, dict):
        raise ValueError("must be a mapping")
    keys = {"url", "ref", "resolvedRef", "rev", "narHash"}
    if set(entry) != keys:
        raise ValueError(f"needs exactly the keys {', '.join(sorted(keys))}")
    url, ref, resolved, rev, nar_hash = (entry[k] for k in ("url", "ref", "resolvedRef", "rev", "narHash"))
    if not all(isinstance(v, str) for v in (url, ref, rev, nar_hash)) or not isinstance(resolved, (str, type(None))):
        raise ValueError("url, ref, rev and narHash must be strings, resolvedRef a string or null")
    if not _COMMIT.fullmatch(rev):
        raise ValueError(f"rev {rev!r} is not a 40-character commit")
    if not _SRI.fullmatch(nar_hash):
        raise ValueError(f"narHash {nar_hash!r} is not an SRI sha256 hash (sha256-…=)")
    if urls.credential_problem(url):
        raise ValueError(f"url {urls.redact(url)!r} carries a credential")
    return Pin(url, ref, resolved, rev, nar_hash)


# ---------------------------------------------------------------------------------------------
# What sync renders


def stale_problems(config: schema.Config, pins: dict[str, Pin]) -> list[Problem]:
    """Why ``pins`` does not describe deploy.yaml's sources (empty: it does)."""
    out = []
    for name, svc in config.services.items():
        src = svc.source
        if src is None:
            continue
        pin = pins.get(name)
        where = f"services.{name}.source"
        if pin is None:
            out.append(Problem(LOCK_FILE, None, None, where, f"{src.git} ({src.ref}) is not locked; "
                               "run `forgegen lock` and commit deploy.lock"))
        elif (pin.url, pin.ref) != (src.git, src.ref):
            out.append(Problem(LOCK_FILE, None, None, where,
                               f"the lock pins {urls.redact(pin.url)} ({pin.ref}) but deploy.yaml says "
                               f"{urls.redact(src.git)} ({src.ref}); run `forgegen lock` and commit deploy.lock"))
    for name in sorted(set(pins) - {n for n, s in config.services.items() if s.source}):
        out.append(Problem(LOCK_FILE, None, None, f"sources.{name}",
                           f"deploy.yaml has no source for service {name!r} any more; run `forgegen lock` to drop it"))
    return out


def render_pins(config: schema.Config, config_path: Path | None) -> dict[str, dict[str, Any]]:
    """The pinned fetch arguments per service, for the generated Nix; ConfigError (exit 2) when
    a source is not locked or the lock is stale (also when it pins a service without a source)."""
    has_sources = any(s.source for s in config.services.values())
    if config_path is None:
        if has_sources:
            raise ConfigError(f"{LOCK_FILE}: services with a source need deploy.lock, next to deploy.yaml",
                              hint="run forgegen with --config pointing at deploy.yaml")
        return {}
    pins = read_lock(lock_path(config_path))
    problems = stale_problems(config, pins)
    if problems:
        raise ConfigError(problems, hint="`forgegen lock` pins new sources; `forgegen lock --update` moves pins")
    return {name: pins[name].fetch_args() for name in sorted(pins)}


# ---------------------------------------------------------------------------------------------
# Pinning


def resolve(url: str, ref: str) -> tuple[str | None, str]:
    """``ref`` on the remote ``url``: (the full ref name, its commit); a commit is itself."""
    if _COMMIT.fullmatch(ref):
        return None, ref
    wanted = [ref] if ref.startswith("refs/") or ref == "HEAD" else [f"refs/heads/{ref}", f"refs/tags/{ref}"]
    try:
        res = process.run(["git", "ls-remote", "--", url, *wanted, *(f"{w}^{{}}" for w in wanted)],
                          env=_GIT_ENV, timeout=GIT_TIMEOUT, what=f"list the refs of {urls.redact(url)}")
    except CommandError as err:
        raise SourceError(err.message, hint="check the URL and your access to the repository (git's own "
                                            "credential helpers and SSH agent are used)") from err
    found = {}
    for line in res.stdout.splitlines():
        sha, _, name = line.partition("\t")
        found[name] = sha
    for name in wanted:
        if name in found:
            return name, found.get(f"{name}^{{}}", found[name])  # an annotated tag: its commit
    raise SourceError(f"{urls.redact(url)} has no branch or tag {ref!r}",
                      hint="fix services.<name>.source.ref in deploy.yaml (a branch, a tag, refs/… or a commit)")


def nar_hash_via_nix(url: str, resolved_ref: str | None, rev: str) -> str:
    """The NAR hash of ``rev``'s tree as ``builtins.fetchGit`` computes it (``nix eval``)."""
    ref = f"ref = {nix.nix_str(resolved_ref)};" if resolved_ref else "allRefs = true;"
    expr = (f"(builtins.fetchGit {{ url = {nix.nix_str(url)}; rev = {nix.nix_str(rev)}; {ref} }}).narHash")
    try:
        res = process.run(["nix", "--extra-experimental-features", "nix-command", "eval", "--impure", "--raw",
                           "--expr", expr], env=_GIT_ENV, timeout=GIT_TIMEOUT,
                          what=f"fetch {urls.redact(url)} at {rev[:12]} with builtins.fetchGit")
    except CommandError as err:
        raise SourceError(err.message, hint="check the URL, the ref and your access to the repository") from err
    return _checked_sri(res.stdout.strip(), "nix eval")


def nar_hash_via_prefetch(url: str, rev: str) -> str:
    """The NAR hash of ``rev``'s tree from ``nix-prefetch-git``'s JSON (``hash``, or ``sha256``
    in Nix's base-32 in older versions)."""
    try:
        res = process.run(["nix-prefetch-git", "--quiet", "--url", url, "--rev", rev], env=_GIT_ENV,
                          timeout=GIT_TIMEOUT, what=f"fetch {urls.redact(url)} at {rev[:12]} with nix-prefetch-git")
        doc = json.loads(res.stdout)
    except CommandError as err:
        raise SourceError(err.message, hint="check the URL, the ref and your access to the repository") from err
    except ValueError as err:
        raise SourceError(f"nix-prefetch-git printed something else than JSON: {res.stdout[:200]!r}") from err
    if not isinstance(doc, dict) or doc.get("rev") != rev:
        raise SourceError(f"nix-prefetch-git fetched {doc.get('rev') if isinstance(doc, dict) else doc!r}, not {rev}")
    if isinstance(doc.get("hash"), str) and doc["hash"].startswith("sha256-"):
        return _checked_sri(doc["hash"], "nix-prefetch-git")
    return _checked_sri(sri_of_nix_base32(str(doc.get("sha256", ""))), "nix-prefetch-git")


def _checked_sri(value: str, tool: str) -> str:
    if not _SRI.fullmatch(value):
        raise SourceError(f"{tool} gave {value[:80]!r}, not an SRI sha256 hash")
    return value


def sri_of_nix_base32(text: str) -> str:
    """``sha256-<base64>`` of a SHA-256 written in Nix's base-32 (52 characters)."""
    if len(text) != 52 or any(c not in _NIX_BASE32 for c in text):
        raise SourceError(f"{text[:60]!r} is not a SHA-256 in Nix's base-32")
    out = bytearray(32)
    for n, c in enumerate(reversed(text)):
        digit, bit = _NIX_BASE32.index(c), n * 5
        i, j = divmod(bit, 8)
        out[i] |= (digit << j) & 0xFF
        if i + 1 < 32:
            out[i + 1] |= digit >> (8 - j)
        elif digit >> (8 - j):
            raise SourceError(f"{text[:60]!r} is not a SHA-256 in Nix's base-32 (too large)")
    return "sha256-" + base64.b64encode(bytes(out)).decode()


def fetcher() -> str:
    """``nix-prefetch-git`` when it is on PATH, else ``nix`` (builtins.fetchGit)."""
    return "nix-prefetch-git" if process.which("nix-prefetch-git") else "nix"


def pin(url: str, ref: str, *, via: str | None = None) -> Pin:
    resolved_ref, rev = resolve(url, ref)
    via = via or fetcher()
    nar_hash = nar_hash_via_prefetch(url, rev) if via == "nix-prefetch-git" else nar_hash_via_nix(url, resolved_ref, rev)
    return Pin(url, ref, resolved_ref, rev, nar_hash)


# ---------------------------------------------------------------------------------------------
# forgegen lock


@dataclass(frozen=True)
class LockChange:
    service: str
    verb: str  # create | update | identical | remove
    rev: str | None
    previous: str | None

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "verb": self.verb, "rev": self.rev, "previous": self.previous}


@dataclass(frozen=True)
class LockResult:
    path: Path
    changes: tuple[LockChange, ...]
    written: bool
    via: str

    @property
    def changed(self) -> bool:
        return any(c.verb != "identical" for c in self.changes)

    def to_json(self) -> dict[str, Any]:
        return {"lock": str(self.path), "via": self.via, "written": self.written, "changed": self.changed,
                "sources": [c.to_json() for c in self.changes]}


def lock(config: schema.Config, config_path: Path, *, update: Iterable[str] | None = None,
         update_all: bool = False, dry_run: bool = False) -> LockResult:
    """Pin every source of ``config`` that deploy.lock does not pin yet (or pins for another URL
    or ref); ``update``/``update_all``: pin those again at the ref's current commit. Entries of
    services without a source are dropped. Writes deploy.lock atomically unless ``dry_run``."""
    wanted = {n: s.source for n, s in config.services.items() if s.source is not None}
    named = list(update or ())
    bad = [n for n in named if n not in wanted]
    if bad:
        raise UsageError(f"cannot update {', '.join(map(repr, bad))}: not a service with a source",
                         hint=f"name one of: {', '.join(sorted(wanted)) or '(none: no service has a source)'}")
    path = lock_path(config_path)
    current = read_lock(path)
    pins: dict[str, Pin] = {}
    changes = []
    via = fetcher()
    for name in sorted(wanted):
        src, old = wanted[name], current.get(name)
        fresh = update_all or name in named or old is None or (old.url, old.ref) != (src.git, src.ref)
        pins[name] = pin(src.git, src.ref, via=via) if fresh else old  # type: ignore[assignment]
        verb = "create" if old is None else "identical" if old == pins[name] else "update"
        changes.append(LockChange(name, verb, pins[name].rev, old.rev if old else None))
    changes += [LockChange(n, "remove", None, current[n].rev) for n in sorted(set(current) - set(wanted))]
    text = lock_text(pins)
    written = False
    if not dry_run and (not path.exists() or path.read_text(encoding="utf-8") != text) and (pins or path.exists()):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        written = True
    return LockResult(path, tuple(changes), written, via)
