"""Attic settings from the environment (the variables of the tool Forge replaces), with one precedence.

* ``ATTIC_CACHE_URL`` and ``ATTIC_CACHE_NAME`` override deploy.yaml's ``attic.endpoint`` and
  ``attic.cache`` (CI points a build at another cache without editing deploy.yaml); with both set
  and no ``attic:`` in deploy.yaml they configure Attic on their own.
* The push token: ``$<attic.token_env>`` (``ATTIC_TOKEN`` by default), else the Kubernetes Secret
  named by ``attic.token_secret`` (``{namespace, name, key: token, kube_context}``), read with the
  kube connection Forge uses (``KUBECONFIG``, then ``~/.kube/config``, then in-cluster).
* Without a token, ``ATTIC_SERVER_NAME`` names a server of the user's own attic client
  configuration (``attic login NAME URL TOKEN``); Forge then runs ``attic push NAME:<cache>``
  with that configuration and never sees the token.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from forgegen.errors import UsageError
from forgegen.plan import AtticPlan


def effective_attic(attic: AtticPlan | None, env: Mapping[str, str]) -> AtticPlan | None:
    url, name = env.get("ATTIC_CACHE_URL", "").strip(), env.get("ATTIC_CACHE_NAME", "").strip()
    if attic is None:
        if url and name:
            return AtticPlan(endpoint=url, cache=name, public_key=None, token_env="ATTIC_TOKEN", token_secret=None)
        return None
    update = {k: v for k, v in (("endpoint", url), ("cache", name)) if v}
    from forgegen.runtime.ops import replaced

    return replaced(attic, **update) if update else attic


def attic_token(attic: AtticPlan, env: Mapping[str, str]) -> tuple[str | None, str]:
    """(token, where it came from) — (None, "ATTIC_SERVER_NAME=<name>") when the user's attic
    configuration is to be used; raises UsageError when there is no way to authenticate."""
    token = env.get(attic.token_env, "")
    if token:
        return token, attic.token_env
    if attic.token_secret:
        ref = attic.token_secret
        return secret_value(ref), f"Secret {ref['namespace']}/{ref['name']} key {ref.get('key') or 'token'}"
    server = env.get("ATTIC_SERVER_NAME", "").strip()
    if server:
        return None, f"ATTIC_SERVER_NAME={server}"
    raise UsageError(f"cannot push to Attic cache {attic.cache}: {attic.token_env} is not set",
                     hint=f"export {attic.token_env} with a token that may push to {attic.cache}, name a Kubernetes "
                          "Secret in attic.token_secret, or set ATTIC_SERVER_NAME to a server of your attic login")


def secret_value(ref: Mapping[str, Any]) -> str:
    """The token in a Kubernetes Secret (``data`` is base64; ``stringData`` never comes back)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from forgegen.runtime import kube

    key = ref.get("key") or "token"
    where = f"Secret {ref['namespace']}/{ref['name']}"
    try:
        api = kube.api_client(None, ref.get("kube_context"))
        secret = client.CoreV1Api(api).read_namespaced_secret(ref["name"], ref["namespace"], _request_timeout=(5, 15))
    except ApiException as err:
        raise UsageError(f"cannot read the Attic token from {where}: HTTP {err.status} {err.reason}",
                         hint="create it (`kubectl create secret generic … --from-literal=token=…`) or export "
                              "ATTIC_TOKEN") from err
    data = secret.data or {}
    if key not in data:
        raise UsageError(f"{where} has no key {key!r} (it has: {', '.join(sorted(data)) or 'none'})",
                         hint="set attic.token_secret.key to the key that holds the token")
    return base64.b64decode(data[key]).decode("utf-8").strip()
