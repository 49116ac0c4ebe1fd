"""Forge: deploy Nix-built services to Kubernetes through FluxCD GitOps.

The public API is small and pinned by a test; everything else is internal.
"""

from forgegen.errors import ConfigError, ForgeError
from forgegen.plan import Plan, build_plan, load_plan
from forgegen.schema import Config, json_schema, load_config, parse_config

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
