"""CI is deterministic: hypothesis draws the same examples on every run."""

from __future__ import annotations

import os

from hypothesis import settings


def test_hypothesis_runs_derandomized_by_default() -> None:
    if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci":
        assert settings.default.derandomize is True
        assert settings.default.database is None
        assert settings.default.deadline is None
