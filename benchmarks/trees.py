"""Run another checkout's Python code next to this one's, for before/after figures in one run.

The editable install's import hook wins over ``PYTHONPATH``, so each variant runs as
``python -S`` (no site hooks) with ``PYTHONPATH=<code>:<site-packages>``, where ``<code>`` holds
``forgegen`` and ``forge_provision`` (symlinks into the checkout). Both variants run this way, so
neither pays for a start-up path the other skips. Make a checkout of main with
``mkdir /tmp/main && git archive main | tar -x -C /tmp/main``.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path


def code_dir(checkout: Path, where: Path) -> Path:
    """A directory importing ``forgegen`` and ``forge_provision`` from ``checkout``."""
    where.mkdir(parents=True, exist_ok=True)
    for name, target in (("forgegen", "forgegen"), ("forge_provision", "provision")):
        link = where / name
        if not link.exists():
            link.symlink_to(checkout.resolve() / target)
    return where


def variant_env(code: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(code), sysconfig.get_paths()["purelib"]])}


PYTHON_FLAGS = ["-S"]
