"""Write rendered files: one verb per file, ``create`` / ``identical`` / ``overwrite`` / ``remove``.

Only files forgegen generated are ever removed. ``dry_run`` writes nothing; so does ``check``,
which the CLI turns into exit code 1 when anything would change. Every file is staged (a temp
file next to it) before any is moved into place, and nothing is written when any path is unsafe
or any text cannot be encoded, so a failed sync leaves no half state.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from forgegen.errors import RenderError, UsageError

VERBS = ("create", "identical", "overwrite", "remove")


@dataclass(frozen=True)
class Change:
    verb: str
    path: str

    def to_json(self) -> dict[str, str]:
        return {"action": self.verb, "path": self.path}


@dataclass(frozen=True)
class Outcome:
    changes: tuple[Change, ...]
    written: bool

    @property
    def changed(self) -> bool:
        return any(c.verb != "identical" for c in self.changes)

    def count(self, verb: str) -> int:
        return sum(1 for c in self.changes if c.verb == verb)

    def to_json(self) -> dict[str, object]:
        return {"changed": self.changed, "written": self.written,
                "files": [c.to_json() for c in self.changes],
                "summary": {v: self.count(v) for v in VERBS}}


def encoded(files: Mapping[str, str]) -> dict[str, bytes]:
    """The files as UTF-8 bytes, or :class:`RenderError` naming the first that cannot be."""
    out = {}
    for rel, text in files.items():
        try:
            out[rel] = text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise RenderError(f"cannot write {rel}: its text is not valid UTF-8 ({err.reason}); nothing was written") from err
    return out


def plan_changes(root: Path, files: Mapping[str, str], managed_dir: str,
                 is_generated: Callable[[Path], bool]) -> list[Change]:
    """Compare rendered ``files`` with what is on disk under ``root``."""
    data = encoded(files)
    changes: list[Change] = []
    for rel in sorted(files):
        _check_inside(root, rel)
        target = root / rel
        try:
            current = target.read_bytes()
        except FileNotFoundError:
            changes.append(Change("create", rel))
            continue
        except (IsADirectoryError, NotADirectoryError) as err:
            raise RenderError(f"cannot write {rel}: a directory or file is in the way; move it aside") from err
        changes.append(Change("identical" if current == data[rel] else "overwrite", rel))
    managed = root / managed_dir
    if managed.is_dir():
        for path in sorted(managed.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and rel not in files and is_generated(path):
                changes.append(Change("remove", rel))
    return changes


def apply_changes(root: Path, files: Mapping[str, str], changes: list[Change]) -> None:
    """Stage every new file next to its target first, then move them all into place: a failure
    while staging (disk full, a bad path) leaves every file as it was."""
    data = encoded(files)
    staged: list[tuple[str, Path]] = []
    made: list[Path] = []
    try:
        for change in changes:
            if change.verb in ("create", "overwrite"):
                target = root / change.path
                made += _make_parents(target.parent, root)
                staged.append((_stage(target, data[change.path]), target))
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        for directory in reversed(made):
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    for tmp, target in staged:
        os.replace(tmp, target)
    for change in changes:
        if change.verb == "remove":
            target = root / change.path
            target.unlink(missing_ok=True)
            _prune_empty_dirs(target.parent, root)


def write(root: Path, files: Mapping[str, str], managed_dir: str, is_generated: Callable[[Path], bool],
          *, dry_run: bool = False) -> Outcome:
    changes = plan_changes(root, files, managed_dir, is_generated)
    if not dry_run:
        apply_changes(root, files, changes)
    return Outcome(tuple(changes), written=not dry_run and any(c.verb != "identical" for c in changes))


def _check_inside(root: Path, rel: str) -> None:
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise RenderError(f"refusing to write {rel!r}: outside the repository")
    real_root = root.resolve()
    here = root
    for part in p.parts:  # a symlink on the way (nix/forge -> elsewhere) must stay in the project
        here = here / part
        if here.is_symlink() and not here.resolve().is_relative_to(real_root):
            shown = here.relative_to(root).as_posix()
            raise UsageError(f"refusing to write {rel}: {shown} is a symlink to {here.resolve()}, outside the "
                             "project", hint=f"replace {shown} with a directory or file inside the project")


def _make_parents(directory: Path, root: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; return the ones created, outermost first."""
    missing = []
    while directory != root and not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for d in reversed(missing):
        d.mkdir()
    return list(reversed(missing))


def _stage(target: Path, data: bytes) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _prune_empty_dirs(directory: Path, root: Path) -> None:
    while directory != root and directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
        directory = directory.parent
