"""The Forge runtime: what the generated flake apps run (``forge <command> --plan plan.json``).

Runtime modules never import the renderer or the generator CLI.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(name: str = "") -> Path:
    """Forge's cache directory ``name``: ``$XDG_CACHE_HOME/forge/<name>`` (``~/.cache`` without it;
    no ``name``: ``forge`` itself)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "forge" / name
