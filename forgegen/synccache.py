"""A no-op ``forgegen sync`` without parsing deploy.yaml or importing the schema.

Rendering is a pure function of deploy.yaml's bytes (and deploy.lock's), and Forge's own code (the ``forgegen``
modules and the templates). After each sync that leaves ``nix/forge`` equal to what was
rendered, a stamp in the user's cache records a key of those inputs and the SHA-256 of every
file under ``nix/forge``. The next sync with the same key checks the files on disk against the
stamp (the same set of regular files, no symlinks, the same bytes); only then does it report
every file ``identical`` without rendering. Anything else (an edited, added or removed file, a
new deploy.yaml, another Forge) takes the full path, which validates, renders and compares.
This module imports only the standard library and ``writer``.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from forgegen import writer
from forgegen.runtime import cache_dir

OUTPUT_DIR = "nix/forge"  # render.OUTPUT_DIR (tests/test_sync_cache.py keeps them equal)
LOCK_FILE = "deploy.lock"  # sources.LOCK_FILE (tests/test_sources.py keeps them equal)
STAMP_VERSION = 1
_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class SyncResult:
    config_path: Path
    outcome: writer.Outcome
    services: int

    def to_json(self) -> dict[str, object]:
        return {"config": str(self.config_path), "services": self.services, **self.outcome.to_json()}


def _code_digest() -> str:
    """Forge's rendering code: every ``forgegen/*.py`` and every template file."""
    h = hashlib.sha256()
    templates = _HERE / "templates" if (_HERE / "templates").is_dir() else _HERE.parent / "templates"
    paths = sorted(_HERE.glob("*.py")) + sorted(p for p in templates.rglob("*") if p.is_file())
    for path in paths:
        h.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _key(config_path: Path, root: Path, config: bytes) -> str:
    h = hashlib.sha256(f"forgegen-sync-{STAMP_VERSION}\0{config_path.resolve()}\0{root.resolve()}\0".encode())
    h.update(_code_digest().encode() + b"\0" + config)
    try:  # the pins of external sources are rendered too (forgegen/sources.py)
        h.update(b"\0lock\0" + (config_path.parent / LOCK_FILE).read_bytes())
    except OSError:
        h.update(b"\0no-lock")
    return h.hexdigest()


def _stamp_path(root: Path) -> Path:
    name = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:32]
    return cache_dir("sync") / f"{name}.json"


def _on_disk(root: Path) -> dict[str, str] | None:
    """SHA-256 of every file under ``nix/forge``; None if anything there is not a plain file or
    directory (a symlink goes the full path, which knows what to do with it)."""
    out: dict[str, str] = {}
    managed = root / OUTPUT_DIR
    skip = len(str(managed))  # os.walk's paths are str(managed) + "/…"
    try:
        if not stat.S_ISDIR(os.lstat(managed).st_mode):
            return None
        for directory, dirs, files in os.walk(managed):
            for name in dirs + files:
                path = os.path.join(directory, name)
                mode = os.lstat(path).st_mode
                if stat.S_ISREG(mode):
                    with open(path, "rb") as handle:
                        out[OUTPUT_DIR + path[skip:]] = hashlib.sha256(handle.read()).hexdigest()
                elif not stat.S_ISDIR(mode):
                    return None
    except OSError:
        return None
    return out


def noop(config_path: Path, root: Path | None = None) -> SyncResult | None:
    """The result of a sync that would change nothing, if the stamp proves it; else None."""
    root = root or config_path.resolve().parent
    try:
        config = config_path.read_bytes()
        stamp = json.loads(_stamp_path(root).read_text(encoding="utf-8"))
        if stamp.get("key") != _key(config_path, root, config):
            return None
        files, services = dict(stamp["files"]), int(stamp["services"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if _on_disk(root) != files:
        return None
    changes = tuple(writer.Change("identical", rel) for rel in sorted(files))
    return SyncResult(config_path, writer.Outcome(changes, written=False), services)


def record(config_path: Path, root: Path, config: bytes, services: int, files: dict[str, str]) -> None:
    """Remember that ``nix/forge`` holds exactly ``files`` (rendered from ``config``). Best effort:
    a cache that cannot be written only means the next sync takes the full path."""
    on_disk = _on_disk(root)
    expected = {rel: hashlib.sha256(text.encode("utf-8")).hexdigest() for rel, text in files.items()}
    if on_disk != expected:  # other files are there too (or the write raced): no stamp
        return
    path = _stamp_path(root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": _key(config_path, root, config), "services": services,
                                   "files": on_disk}), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        return
