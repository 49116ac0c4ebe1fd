"""Forge: deploy Nix-built services to Kubernetes through FluxCD GitOps.

The public API is small and pinned by a test; everything else is internal. The names are
imported on first use (PEP 562), so ``import forgegen`` (and every CLI's ``--version``) stays
cheap: the schema's pydantic models are built only by code that validates a deploy.yaml.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forgegen.errors import ConfigError, ForgeError
    from forgegen.plan import Plan, build_plan, load_plan
    from forgegen.schema import Config, json_schema, load_config, parse_config

# The package's version, as pyproject.toml says (a test keeps them equal): written here so that
# `--version` does not read the installed metadata (importlib.metadata costs ~20 ms).
__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "ForgeError",
    "Plan",
    "build_plan",
    "json_schema",
    "load_config",
    "load_plan",
    "parse_config",
]

_LAZY = {"ConfigError": "errors", "ForgeError": "errors", "Plan": "plan", "build_plan": "plan", "load_plan": "plan",
         "Config": "schema", "json_schema": "schema", "load_config": "schema", "parse_config": "schema"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"forgegen.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'forgegen' has no attribute {name!r}")
