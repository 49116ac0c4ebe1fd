"""Deterministic image tags (DESIGN.md, "Tags").

``<arch>-<sha7>`` and ``<arch>-latest`` per architecture; with more than one architecture an OCI
index is pushed as ``<sha7>`` (and ``latest``), and that is what gets deployed. The sha comes from
``RELEASE_GIT_SHA``, then ``GIT_SHA``, then ``git rev-parse --short=7 HEAD``; a dirty tree is
refused unless ``allow_dirty``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from forgegen import process
from forgegen.errors import CommandError, UsageError

SYSTEM_TO_ARCH = {
    "x86_64-linux": "amd64",
    "aarch64-linux": "arm64",
    "armv7l-linux": "arm",
    "i686-linux": "386",
    "riscv64-linux": "riscv64",
    "powerpc64le-linux": "ppc64le",
    "s390x-linux": "s390x",
}
_SHA = re.compile(r"^[0-9a-f]{7,40}$")


@dataclass(frozen=True)
class SourceRevision:
    sha7: str
    origin: str  # "RELEASE_GIT_SHA", "GIT_SHA" or "git"
    dirty: bool = False


@dataclass(frozen=True)
class ImageTags:
    sha7: str
    per_arch: Mapping[str, tuple[str, str]]  # system -> (<arch>-<sha7>, <arch>-latest)
    index: tuple[str, str] | None  # (<sha7>, latest) when multi-arch
    deploy_tag: str  # what the GitOps repo gets


def arch_of(system: str) -> str:
    try:
        return SYSTEM_TO_ARCH[system]
    except KeyError:
        raise UsageError(
            f"unsupported system {system!r}: Forge knows {', '.join(sorted(SYSTEM_TO_ARCH))}"
        ) from None


def source_revision(cwd: str | Path = ".", env: Mapping[str, str] | None = None,
                    *, allow_dirty: bool = False) -> SourceRevision:
    """The commit the image is built from, as 7 hex digits."""
    env = os.environ if env is None else env
    for var in ("RELEASE_GIT_SHA", "GIT_SHA"):
        value = env.get(var, "").strip().lower()
        if value:
            if not _SHA.fullmatch(value):
                raise UsageError(
                    f"{var}={value!r} is not a git commit hash (7 to 40 hex digits)",
                    hint=f"unset {var} or set it to the output of `git rev-parse HEAD`",
                )
            return SourceRevision(value[:7], var)
    try:
        head = process.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=cwd, timeout=30,
                           what="read the source commit").stdout.strip()
        status = process.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                             timeout=30, what="check the source tree").stdout
    except CommandError as err:
        raise UsageError(
            f"cannot tell which commit to tag: {Path(cwd).resolve()} is not a git checkout with a commit",
            hint="run from your repository, or set RELEASE_GIT_SHA (or GIT_SHA) to the commit",
        ) from err
    dirty = bool(status.strip())
    if dirty and not allow_dirty:
        raise UsageError(
            f"the source tree has uncommitted changes, so tag {head[:7]} would not describe the image",
            hint="commit or stash them, or pass --allow-dirty to deploy them anyway",
        )
    return SourceRevision(head[:7], "git", dirty)


def image_tags(sha7: str, systems: Sequence[str]) -> ImageTags:
    if not systems:
        raise UsageError("a service needs at least one architecture to tag")
    per_arch = {s: (f"{arch_of(s)}-{sha7}", f"{arch_of(s)}-latest") for s in systems}
    if len(systems) == 1:
        return ImageTags(sha7, per_arch, None, per_arch[systems[0]][0])
    return ImageTags(sha7, per_arch, (sha7, "latest"), sha7)
