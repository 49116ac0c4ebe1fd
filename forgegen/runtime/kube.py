"""Connecting to a cluster: a client from kubeconfig, context or in-cluster config.

Where the connection comes from, first match wins (kubectl's order, plus deploy.yaml):

1. the environment's ``kubeconfig`` in ``deploy.yaml`` (the plan's ``TargetPlan.kubeconfig``),
2. ``KUBECONFIG`` (a ``:``-separated list, merged as kubectl does) when one of its files exists,
3. ``~/.kube/config`` when it exists,
4. in-cluster config (``KUBERNETES_SERVICE_HOST`` and the service-account token) inside a pod.

The context is the environment's ``kube_context``, else the kubeconfig's current context.
Forge's own calls go through :mod:`forgegen.runtime.kubeapi` (:func:`client_for`); :func:`api_client`
gives a ``kubernetes`` ``ApiClient`` (imported inside the functions only: ``import forgegen.cli``
must stay light).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgegen.errors import ConfigError

if TYPE_CHECKING:
    from forgegen.plan import TargetPlan

SERVICE_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
SERVICE_CA = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")


@dataclass(frozen=True)
class Connection:
    """Where a client connects: ``source`` is one of deploy.yaml, KUBECONFIG, default, in-cluster."""

    source: str
    kubeconfig: str | None
    context: str | None

    def describe(self) -> str:
        if self.source == "in-cluster":
            return "in-cluster service account"
        ctx = f", context {self.context}" if self.context else ", current context"
        return f"kubeconfig {self.kubeconfig} ({self.source}{ctx})"


def resolve(kubeconfig: str | None = None, context: str | None = None, *,
            environ: Mapping[str, str] | None = None, token_file: Path = SERVICE_TOKEN) -> Connection:
    """Pick the kubeconfig (or in-cluster) a client should use, without connecting."""
    env = os.environ if environ is None else environ
    if kubeconfig:
        path = str(Path(kubeconfig).expanduser())
        if not Path(path).is_file():
            raise ConfigError(f"the kubeconfig {path} named in deploy.yaml does not exist",
                              hint="fix environments[].kubeconfig in deploy.yaml, or remove it to use KUBECONFIG")
        return Connection("deploy.yaml", path, context)
    listed = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if any(Path(p).expanduser().is_file() for p in listed):
        return Connection("KUBECONFIG", os.pathsep.join(listed), context)
    home = env.get("HOME")
    default = Path(home) / ".kube" / "config" if home else Path("~/.kube/config").expanduser()
    if default.is_file():
        return Connection("default", str(default), context)
    if env.get("KUBERNETES_SERVICE_HOST") and token_file.is_file():
        return Connection("in-cluster", None, None)
    tried = ", ".join(listed + [str(default)]) or str(default)
    raise ConfigError(f"no Kubernetes connection configured: no kubeconfig found (looked at {tried}) "
                      "and not running inside a cluster",
                      hint="set KUBECONFIG, or environments[].kubeconfig / kube_context in deploy.yaml")


def api_client(kubeconfig: str | None = None, context: str | None = None, *,
               environ: Mapping[str, str] | None = None) -> Any:
    """A ``kubernetes.client.ApiClient`` for the resolved connection (see :func:`resolve`)."""
    return kubernetes_client_for(resolve(kubeconfig, context, environ=environ), environ=environ)


def client_for(conn: Connection, *, environ: Mapping[str, str] | None = None) -> Any:
    """The client Forge's own calls use (:mod:`forgegen.runtime.kubeapi`): plain HTTP for the
    kubeconfigs it reads itself, else on a ``kubernetes`` ``ApiClient`` (exec plugins, in-cluster…)."""
    from forgegen.runtime import kubeapi

    if conn.kubeconfig is not None:
        try:
            client = kubeapi.from_kubeconfig(conn.kubeconfig, conn.context)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):  # an unreadable token or key file,
            client = None  # bad base64, a malformed entry: the kubernetes loader words the error
        if client is not None:
            return client
    return kubeapi.of(kubernetes_client_for(conn, environ=environ))


def kubernetes_client_for(conn: Connection, *, environ: Mapping[str, str] | None = None) -> Any:
    """A ``kubernetes.client.ApiClient`` for ``conn`` (the ``kubernetes`` package's loader)."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = type.__call__(client.Configuration)  # not the process-wide default
    try:
        if conn.source == "in-cluster":
            from kubernetes.config import incluster_config

            loader: Any = incluster_config.InClusterConfigLoader  # the kubernetes package is untyped
            loader(str(SERVICE_TOKEN), str(SERVICE_CA),
                                  environ=dict(os.environ if environ is None else environ)).load_and_set(configuration)
        else:
            load: Any = config.load_kube_config
            load(config_file=conn.kubeconfig, context=conn.context,
                                    client_configuration=configuration, persist_config=False)
    except ConfigException as err:
        hint = ("check environments[].kube_context in deploy.yaml against `kubectl config get-contexts`"
                if conn.context else "check the kubeconfig with `kubectl config view`")
        raise ConfigError(f"cannot use {conn.describe()}: {err}", hint=hint) from err
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"cannot read {conn.describe()}: {err}",
                          hint="check the kubeconfig with `kubectl config view`") from err
    return client.ApiClient(configuration=configuration)


def client_for_target(target: TargetPlan, *, environ: Mapping[str, str] | None = None) -> Any:
    """The client (:func:`client_for`) for one environment of a service plan (its kubeconfig and context)."""
    return client_for(resolve(target.kubeconfig, target.kube_context, environ=environ), environ=environ)


# =============================================================================================
# Small helpers shared by the watchers (Flux reconcile, rollout, migrations)


def api_error(err: Exception) -> tuple[int | None, str, dict[str, Any]]:
    """(HTTP status, message, details) of a kubernetes ApiException (or any error)."""
    status = getattr(err, "status", None)
    body = getattr(err, "body", None)
    if body:
        try:
            doc = json.loads(body)
            return status, doc.get("message") or str(body), doc.get("details") or {}
        except (ValueError, AttributeError):
            return status, str(body), {}
    return status, f"{type(err).__name__}: {err}", {}


def iso(t: float) -> str:
    """A wall-clock time as RFC 3339 UTC with microseconds (the reports' ``started_at``)."""
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
