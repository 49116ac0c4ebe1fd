"""CI is deterministic (hypothesis draws the same examples on every run) and installs quietly."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from hypothesis import settings


def test_hypothesis_runs_derandomized_by_default() -> None:
    if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci":
        assert settings.default.derandomize is True
        assert settings.default.database is None
        assert settings.default.deadline is None


def test_every_template_directory_is_a_listed_package() -> None:
    """setuptools prints a page of warnings on install for a data directory that is not a listed
    package (a newcomer's first command showed 17 of them); a new template directory must be added."""
    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    templates = root / "templates"
    dirs = [templates, *(d for d in templates.rglob("*") if d.is_dir() and d.name != "__pycache__")]
    wanted = {".".join(("forgegen", *d.relative_to(root).parts)) for d in dirs}
    assert sorted(wanted - listed) == []
