"""Image scripts delivered through a ConfigMap, so tests in any process can script the kubelet.

The simulation reads ConfigMap ``forge-sim/images`` (:data:`NAMESPACE`, :data:`CONFIGMAP`): one
key per image, the value JSON ``{"image": "<reference>", "script": {<ImageScript fields>}}``. An
image reference is looked up as given, then without its tag or digest; the entry whose image is
``*`` is the default (unknown images otherwise become ready at once). ConfigMap keys cannot hold
``/`` or ``:``, hence :func:`entry_key`.

From a test, with a ``kubernetes`` ApiClient::

    publish_script(api, "registry.test/api:bad", crash(exit_code=3))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

from tests.kube_standin import ImageScript

NAMESPACE = "forge-sim"
CONFIGMAP = "images"
DEFAULT = "*"


def entry_key(image: str) -> str:
    """A valid ConfigMap key for ``image`` (readable prefix, hash for uniqueness)."""
    readable = re.sub(r"[^-._a-zA-Z0-9]", "_", image)[:200]
    return f"{readable}.{hashlib.sha256(image.encode()).hexdigest()[:12]}"


def encode(image: str, script: ImageScript) -> tuple[str, str]:
    """The ConfigMap ``(key, value)`` scripting ``image``."""
    return entry_key(image), json.dumps({"image": image, "script": dataclasses.asdict(script)}, sort_keys=True)


def decode(value: str) -> tuple[str, ImageScript]:
    doc = json.loads(value)
    fields = {f.name for f in dataclasses.fields(ImageScript)}
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in (doc.get("script") or {}).items() if k in fields}
    return doc["image"], ImageScript(**kw)


def scripts_of(configmap: dict | None) -> tuple[dict[str, ImageScript], ImageScript | None]:
    """``(image -> script, default script)`` from the ConfigMap object (None: no scripts)."""
    book: dict[str, ImageScript] = {}
    for value in ((configmap or {}).get("data") or {}).values():
        try:
            image, script = decode(value)
        except (ValueError, KeyError, TypeError):
            continue
        book[image] = script
    return book, book.pop(DEFAULT, None)


def publish_script(api: Any, image: str, script: ImageScript | None) -> None:
    """Script ``image`` (``None``: forget it) through a ``kubernetes`` ApiClient.

    Synchronous and linearizable: the simulation reads the ConfigMap before it admits each pod,
    so a pod created after this returns runs the script."""
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException

    core = CoreV1Api(api)
    key, value = encode(image, script or ImageScript())
    body = {"data": {key: None if script is None else value}}
    try:
        core.patch_namespaced_config_map(CONFIGMAP, NAMESPACE, body)
        return
    except ApiException as e:
        if e.status != 404:
            raise
    try:
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as e:
        if e.status != 409:
            raise
    try:
        core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": CONFIGMAP}, "data": {} if script is None else {key: value}})
    except ApiException as e:
        if e.status != 409:
            raise
        core.patch_namespaced_config_map(CONFIGMAP, NAMESPACE, body)
