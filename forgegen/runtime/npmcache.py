"""Pinned npm packages, installed once per machine outside any checkout.

One way for every Node part of Forge (the supergraph composition helper, a service's code
generator) and its tests: ``npm ci`` of a directory's ``package.json`` + ``package-lock.json`` into
``base/name`` (a temporary sibling renamed into place, so a half-done install is never used and
two processes may race), complete when ``node_modules/<marker>`` exists.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from forgegen import process

INSTALL_TIMEOUT = 900.0
FILES = ("package.json", "package-lock.json")


def lock_key(package_dir: Path, *, with_manifest: bool = True) -> str:
    """16 hex digits of the lockfile's hash (and package.json's, unless ``with_manifest`` is off)."""
    data = (package_dir / "package-lock.json").read_bytes()
    if with_manifest:
        data += b"\0" + (package_dir / "package.json").read_bytes()
    return hashlib.sha256(data).hexdigest()[:16]


def installed(package_dir: Path, target: Path, *, what: str, say: Callable[[str], None],
              marker: str = ".package-lock.json") -> Path:
    """``target/node_modules``, installed from ``package_dir``'s lock the first time (``npm ci``,
    no scripts); :class:`~forgegen.errors.CommandError` when npm fails."""
    modules = target / "node_modules"
    if (modules / marker).exists():
        return modules
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{target.name}.tmp-"
    process.remove_stale_temp(target.parent, prefix)
    tmp = target.parent / f"{prefix}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in FILES:
        shutil.copy2(package_dir / name, tmp / name)
    say(f"installing {what} (npm ci) into {target}")
    try:
        process.run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=tmp, timeout=INSTALL_TIMEOUT,
                    what=f"install {what} (npm ci)")
        if target.exists() and not (modules / marker).exists():
            shutil.rmtree(target, ignore_errors=True)  # an incomplete leftover
        try:
            os.rename(tmp, target)
        except OSError:  # another process installed it meanwhile
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return modules


def link(directory: Path, modules: Path) -> None:
    """``directory/node_modules`` → ``modules`` (a directory of its own is left alone)."""
    here = directory / "node_modules"
    if here.is_symlink():
        here.unlink()
    if not here.exists():
        here.symlink_to(modules, target_is_directory=True)

