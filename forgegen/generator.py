"""The generator's operations: sync, check, init. Typed functions the CLI calls.

``sync`` loads and validates ``deploy.yaml``, renders ``nix/forge/**`` and writes it with the
writer's verbs. ``init`` writes a commented ``deploy.yaml`` and a ``flake.nix`` wired to
``nix/forge`` into a repository that has neither, and never overwrites an existing ``flake.nix``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from forgegen import render, schema, sources, synccache, writer
from forgegen.errors import UsageError
from forgegen.synccache import SyncResult

__all__ = ["SyncResult", "check", "init", "lock", "sync"]


def sync(config_path: Path, *, root: Path | None = None, dry_run: bool = False, stamp: bool = False) -> SyncResult:
    """Render ``nix/forge/**`` next to ``config_path`` (or under ``root``). ``stamp``: remember
    the result in the user's cache, so that the next no-op ``forgegen sync`` is quick."""
    read = _bytes(config_path) if stamp else None
    config = schema.load_config(config_path)
    root = root or config_path.resolve().parent
    files = render.render(config, sources.render_pins(config, config_path))
    outcome = writer.write(root, files, render.OUTPUT_DIR, render.is_generated, dry_run=dry_run)
    if read is not None and not (dry_run and outcome.changed) and _bytes(config_path) == read:
        synccache.record(config_path, root, read, len(config.services), files)  # the next no-op is quick
    return SyncResult(config_path, outcome, len(config.services))


@dataclass(frozen=True)
class LockOutcome:
    lock: sources.LockResult
    sync: SyncResult | None  # None with --dry-run

    def to_json(self) -> dict[str, object]:
        return {**self.lock.to_json(), "sync": self.sync.to_json() if self.sync else None}


def lock(config_path: Path, *, update: tuple[str, ...] = (), update_all: bool = False,
         dry_run: bool = False) -> LockOutcome:
    """Pin the external sources in deploy.lock (``forgegen lock``), then sync nix/forge to it."""
    config = schema.load_config(config_path)
    result = sources.lock(config, config_path, update=update, update_all=update_all, dry_run=dry_run)
    return LockOutcome(result, None if dry_run else sync(config_path, stamp=True))


def _bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def check(config_path: Path) -> schema.Config:
    """Validate ``deploy.yaml`` and render it in memory, so that check fails on whatever sync
    would fail on (the schema already checks every rendered name; this catches the rest)."""
    config = schema.load_config(config_path)
    writer.encoded(render.render(config, sources.render_pins(config, config_path)))
    return config


@dataclass(frozen=True)
class InitResult:
    written: tuple[str, ...]
    flake_snippet: str | None  # lines to add to an existing flake.nix
    sync: SyncResult

    def to_json(self) -> dict[str, object]:
        return {"written": list(self.written), "flake_snippet": self.flake_snippet, "sync": self.sync.to_json()}


def default_project_name(root: Path) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", root.resolve().name.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"app-{name}".strip("-")
    return name[:63].rstrip("-") or "app"


# Where Forge's flake lives, and the nixpkgs a new project starts from (flake references:
# `github:OWNER/REPO[/REF]`, `git+file:///abs/checkout`, `path:/abs/dir`, ...).
DEFAULT_FORGE_URL = "github:forge-deploy/forge"
DEFAULT_NIXPKGS_URL = "github:NixOS/nixpkgs/nixos-unstable"
_FLAKE_REF = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s\"'\\$`]+$")


def _flake_ref(option: str, value: str) -> str:
    if not _FLAKE_REF.match(value):
        raise UsageError(f"{option} {value!r} is not a flake reference",
                         hint=f"use e.g. {option} github:owner/repo/v1.2.3, git+file:///abs/checkout or "
                              "path:/abs/dir (a scheme, then no spaces or quotes)")
    return value


def init_files(project: str, *, forge_url: str = DEFAULT_FORGE_URL,
               nixpkgs_url: str = DEFAULT_NIXPKGS_URL) -> dict[str, str]:
    """The starter's ``deploy.yaml`` and ``flake.nix`` (the root flake's ``templates.default`` too)."""
    schema._dns_label(project)  # noqa: SLF001 - the same rule as deploy.yaml's project
    values = dict(project=project, forge_url=forge_url, nixpkgs_url=nixpkgs_url, schema_url=schema.SCHEMA_ID)
    return {
        "deploy.yaml": render.render_template("init/deploy.yaml.jinja", **values),
        "flake.nix": render.render_template("init/flake.nix.jinja", **values),
    }


def init(root: Path, *, project: str | None = None, forge_url: str = DEFAULT_FORGE_URL,
         nixpkgs_url: str = DEFAULT_NIXPKGS_URL) -> InitResult:
    root = root.resolve()
    project = project or default_project_name(root)
    forge_url = _flake_ref("--forge-url", forge_url)
    nixpkgs_url = _flake_ref("--nixpkgs-url", nixpkgs_url)
    try:
        files = init_files(project, forge_url=forge_url, nixpkgs_url=nixpkgs_url)
    except ValueError as err:
        raise UsageError(f"cannot use {project!r} as the project name: {err}",
                         hint="pass --project with a DNS-1123 label, e.g. --project shop") from None
    config_path = root / schema.DEFAULT_FILE
    if config_path.exists():
        raise UsageError(f"{config_path} already exists; init only starts new projects",
                         hint="edit deploy.yaml and run `forgegen sync`")
    written = []
    snippet = None
    config_path.write_text(files["deploy.yaml"], encoding="utf-8")
    written.append(schema.DEFAULT_FILE)
    flake = root / "flake.nix"
    if flake.exists():
        snippet = render.render_template("init/flake-snippet.nix.jinja", project=project, forge_url=forge_url)
    else:
        flake.write_text(files["flake.nix"], encoding="utf-8")
        written.append("flake.nix")
    result = sync(config_path, root=root)
    return InitResult(tuple(written), snippet, result)
