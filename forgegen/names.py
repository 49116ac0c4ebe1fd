"""Name rules shared by deploy.yaml's schema and forge-provision's, in a module that imports
nothing heavy (forge-provision validates its files without building deploy.yaml's models)."""

from __future__ import annotations

import re

ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def env_var(value: str) -> str:
    """An environment variable's name (the variable that holds a secret), or ValueError."""
    if not ENV_VAR.fullmatch(value):
        raise ValueError(f"{value!r} is not an environment variable name (e.g. 'GHCR_TOKEN'); name the "
                         "variable that holds the secret, never the secret itself")
    return value
