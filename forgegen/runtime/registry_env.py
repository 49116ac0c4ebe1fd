"""``FORGE_REGISTRY``: push to another registry than deploy.yaml's, without editing it.

Image references are fixed by ``forgegen sync`` in the plans (``<host>[/<organization>]/<name>``).
``FORGE_REGISTRY=HOST[:PORT][/PATH]`` replaces the ``<host>[/<organization>]`` prefix of every
service's repository when the runtime loads a plan, so every command sees one consistent image
reference: what ``push`` pushes, what ``deploy``/``release`` write to the GitOps repository (the
manifests must name the image there), what the rollout expects, the migration Jobs' default image,
and which credentials apply (``GHCR_TOKEN`` for ghcr.io, ``FORGE_REGISTRY_USER``/``…_PASSWORD``).
The plan's ``insecure`` still applies, so a non-loopback host with an insecure registry is refused.

Precedence: ``FORGE_REGISTRY`` (set and non-empty) > deploy.yaml ``registry.host`` +
``registry.organization``. A malformed value is a usage error (exit 2) before anything runs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from forgegen import urls
from forgegen.errors import UsageError
from forgegen.plan import Plan

VARIABLE = "FORGE_REGISTRY"
_HOST = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?")
_PATH = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")


def parse(value: str) -> tuple[str, str | None]:
    """``HOST[:PORT][/PATH]`` → (host, path or None); UsageError (exit 2) when malformed."""
    host, _, path = value.partition("/")
    if not _HOST.fullmatch(host) or (path and not _PATH.fullmatch(path)) or value.endswith("/"):
        raise UsageError(
            f"{VARIABLE}={value!r} is not a registry: expected HOST[:PORT][/ORGANIZATION] with no scheme, "
            "e.g. ghcr.io/acme or registry.example.com:5000 (the organization in lowercase letters, digits, "
            "'.', '_', '-' and '/')",
            hint=f"fix or unset {VARIABLE} (unset, deploy.yaml's registry.host and registry.organization apply)")
    return host, path or None


def prefix(host: str, organization: str | None) -> str:
    return "/".join(p for p in (host, organization) if p)


def apply(plan: Plan, environ: Mapping[str, str]) -> tuple[Plan, dict[str, Any] | None]:
    """The plan with ``FORGE_REGISTRY`` applied, and what changed (None when it is not set)."""
    value = environ.get(VARIABLE, "").strip()
    if not value:
        return plan, None
    host, organization = parse(value)
    reg = plan.registry
    old = prefix(reg.host, reg.organization)
    new = prefix(host, organization)
    if reg.insecure and not urls.is_loopback(host):
        raise UsageError(f"{VARIABLE}={value!r}: deploy.yaml's registry is `insecure` (plain HTTP), which Forge "
                         f"allows only for a loopback host, and {host} is not one",
                         hint=f"point {VARIABLE} at a loopback registry, or set registry.insecure: false in deploy.yaml")
    services = []
    for svc in plan.services:
        repo = svc.image.repository
        if not repo.startswith(old + "/"):  # a hand-edited plan: say so rather than push somewhere odd
            raise UsageError(f"{VARIABLE}: cannot move {svc.name}'s image {repo}: it is not under {old}",
                             hint="regenerate the plans with `forgegen sync`")
        image = dataclasses.replace(svc.image, repository=new + repo[len(old):])
        services.append(dataclasses.replace(svc, image=image))
    registry = dataclasses.replace(reg, host=host, organization=organization)
    changed = {"variable": VARIABLE, "from": old, "to": new,
               "images": {s.name: s.image.repository for s in services}}
    return dataclasses.replace(plan, registry=registry, services=tuple(services)), changed
