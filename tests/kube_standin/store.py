"""The object store: what etcd plus the apiserver's registry and watch cache do, in memory.

Every method runs on the stand-in's event-loop thread (controllers and HTTP handlers share it),
so there are no locks. One global ``resourceVersion`` counter orders every change; a bounded
history of changes serves watches from a resourceVersion, and a watch from a version older than
the history answers ``410 Gone`` (``Expired``), as the real watch cache does.
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .patch import PatchError, apply_patch
from .resources import Registry, ResourceType, type_from_crd


def timestamp(t: float | None = None, *, precise: bool = False) -> str:
    """RFC 3339 UTC, whole seconds as metav1.Time serializes; ``precise`` keeps microseconds (MicroTime)."""
    dt = datetime.fromtimestamp(time.time() if t is None else t, tz=UTC)
    if precise:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An API error answered as a ``metav1.Status`` document."""

    def __init__(self, code: int, reason: str, message: str, *, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        doc = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            doc["details"] = self.details
        return doc


def not_found(rt: ResourceType, name: str) -> ApiError:
    group = f".{rt.group}" if rt.group else ""
    return ApiError(404, "NotFound", f'{rt.plural}{group} "{name}" not found',
                    details={"name": name, "group": rt.group, "kind": rt.plural})


# ---------------------------------------------------------------------------------------------
# Selectors

_REQ_SET = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_requirements(selector: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(selector: str | None) -> Callable[[dict], bool]:
    """Equality- and set-based label selectors (``a=b,c!=d,e in (f,g),h,!i``)."""
    if not selector:
        return lambda labels: True
    preds: list[Callable[[dict], bool]] = []
    for req in _split_requirements(selector):
        m = _REQ_SET.match(req)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                preds.append(lambda l, k=key, vs=values: l.get(k) in vs)
            else:
                preds.append(lambda l, k=key, vs=values: l.get(k) not in vs)
        elif "!=" in req:
            k, v = (s.strip() for s in req.split("!=", 1))
            preds.append(lambda l, k=k, v=v: l.get(k) != v)
        elif "=" in req:
            k, v = (s.strip() for s in req.replace("==", "=").split("=", 1))
            preds.append(lambda l, k=k, v=v: l.get(k) == v)
        elif req.startswith("!"):
            preds.append(lambda l, k=req[1:].strip(): k not in l)
        else:
            preds.append(lambda l, k=req: k in l)
    return lambda labels: all(p(labels) for p in preds)


def _field(obj: dict, path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def parse_field_selector(selector: str | None) -> Callable[[dict], bool]:
    """Field selectors on dotted paths (``metadata.name=x``, ``involvedObject.uid!=y``)."""
    if not selector:
        return lambda obj: True
    preds = []
    for req in _split_requirements(selector):
        if "!=" in req:
            k, v = (s.strip() for s in req.split("!=", 1))
            preds.append(lambda o, k=k, v=v: _field(o, k) != v)
        else:
            k, v = (s.strip() for s in req.replace("==", "=").split("=", 1))
            preds.append(lambda o, k=k, v=v: _field(o, k) == v)
    return lambda obj: all(p(obj) for p in preds)


def selector_from_label_selector(sel: dict | None) -> str:
    """``metav1.LabelSelector`` (matchLabels + matchExpressions) -> selector string."""
    sel = sel or {}
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for expr in sel.get("matchExpressions") or []:
        op, key, values = expr["operator"], expr["key"], expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


# ---------------------------------------------------------------------------------------------
# The store


@dataclass
class Change:
    type: str  # ADDED, MODIFIED, DELETED
    rt: ResourceType
    obj: dict
    old: dict | None
    rv: int
    at: float = field(default_factory=time.monotonic)  # when it was committed (for benchmarks)


@dataclass(eq=False)
class Watcher:
    rt: ResourceType
    namespace: str | None
    labels: Callable[[dict], bool]
    fields: Callable[[dict], bool]
    send: Callable[[str, dict], None]

    def matches(self, obj: dict | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace and meta.get("namespace") != self.namespace:
            return False
        return self.labels(meta.get("labels") or {}) and self.fields(obj)

    def offer(self, change: Change) -> None:
        if change.rt.key != self.rt.key:
            return
        now, before = self.matches(change.obj), self.matches(change.old)
        if change.type == "DELETED":
            if before or now:
                self.send("DELETED", change.obj)
        elif now and not before:
            self.send("ADDED", change.obj)
        elif now:
            self.send("MODIFIED", change.obj)
        elif before:
            self.send("DELETED", change.obj)


@dataclass
class Store:
    registry: Registry
    schedule: Callable[[Callable[[], None]], None] = lambda fn: fn()
    history_size: int = 10_000
    rv: int = 1000
    objects: dict[str, dict[tuple[str, str], dict]] = field(default_factory=dict)
    history: deque = field(default_factory=deque)
    compacted: int = 1000
    watchers: set = field(default_factory=set)
    listeners: dict[str, list[Callable[[Change], None]]] = field(default_factory=dict)
    any_listeners: list[Callable[[Change], None]] = field(default_factory=list)
    defaulters: dict[str, list[Callable[[dict], None]]] = field(default_factory=dict)
    strategies: dict[str, list[Callable[[dict, dict | None], None]]] = field(default_factory=dict)

    # -- reading ------------------------------------------------------------------------------

    def rt(self, resource: str | ResourceType) -> ResourceType:
        return resource if isinstance(resource, ResourceType) else self.registry.lookup(resource)

    def _bucket(self, rt: ResourceType) -> dict[tuple[str, str], dict]:
        return self.objects.setdefault(rt.key, {})

    def get(self, resource: str | ResourceType, namespace: str | None, name: str) -> dict:
        rt = self.rt(resource)
        obj = self._bucket(rt).get((namespace or "" if rt.namespaced else "", name))
        if obj is None:
            raise not_found(rt, name)
        return copy.deepcopy(obj)

    def find(self, resource: str | ResourceType, namespace: str | None, name: str) -> dict | None:
        try:
            return self.get(resource, namespace, name)
        except ApiError:
            return None

    def list(self, resource: str | ResourceType, namespace: str | None = None, *,
             label_selector: str | None = None, field_selector: str | None = None) -> list[dict]:
        rt = self.rt(resource)
        labels, fields = parse_label_selector(label_selector), parse_field_selector(field_selector)
        return self._copies(rt, namespace, lambda obj: labels(obj["metadata"].get("labels") or {}) and fields(obj))

    def owned_by(self, resource: str | ResourceType, owner: dict) -> list[dict]:
        uid = owner["metadata"]["uid"]
        return self._copies(self.rt(resource), owner["metadata"].get("namespace"),
                            lambda o: any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or []))

    def _copies(self, rt: ResourceType, namespace: str | None, match: Callable[[dict], bool]) -> list[dict]:
        """Copies of the matching objects, in (namespace, name) order: only the matches are copied
        and sorted (events and old ReplicaSets pile up over a long run; lists must not grow with them)."""
        hits = [(key, obj) for key, obj in self._bucket(rt).items()
                if not (namespace and rt.namespaced and key[0] != namespace) and match(obj)]
        hits.sort(key=lambda hit: hit[0])
        return [copy.deepcopy(obj) for _, obj in hits]

    # -- writing ------------------------------------------------------------------------------

    def _commit(self, rt: ResourceType, kind: str, obj: dict, old: dict | None) -> dict:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = (obj["metadata"].get("namespace", "") if rt.namespaced else "", obj["metadata"]["name"])
        if kind == "DELETED":
            self._bucket(rt).pop(key, None)
        else:
            self._bucket(rt)[key] = obj
        change = Change(kind, rt, copy.deepcopy(obj), copy.deepcopy(old) if old else None, self.rv)
        self.history.append(change)
        while len(self.history) > self.history_size:
            self.compacted = self.history.popleft().rv
        for w in list(self.watchers):
            w.offer(change)
        for fn in self.listeners.get(rt.key, []) + self.any_listeners:
            self.schedule(lambda fn=fn, change=change: fn(change))
        if rt.kind == "CustomResourceDefinition" and kind != "DELETED":
            for t in type_from_crd(obj):
                self.registry.add(t)
        return copy.deepcopy(obj)

    def compact(self) -> None:
        """Forget the change history: a watch from any earlier resourceVersion now gets 410 Gone."""
        self.history.clear()
        self.compacted = self.rv

    def create(self, resource: str | ResourceType, obj: dict, namespace: str | None = None) -> dict:
        rt = self.rt(resource)
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(422, "Invalid", f"{rt.kind} is invalid: metadata.name: Required value: name or generateName is required")
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        key = (meta.get("namespace", ""), meta["name"])
        if key in self._bucket(rt):
            group = f".{rt.group}" if rt.group else ""
            raise ApiError(409, "AlreadyExists", f'{rt.plural}{group} "{meta["name"]}" already exists',
                           details={"name": meta["name"], "group": rt.group, "kind": rt.plural})
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = timestamp()
        meta.pop("deletionTimestamp", None)
        if rt.has_spec:
            meta["generation"] = 1
        if rt.status and "status" not in obj:
            obj["status"] = {}
        for fn in self.defaulters.get(rt.key, []):
            fn(obj)
        for fn2 in self.strategies.get(rt.key, []):
            fn2(obj, None)
        return self._commit(rt, "ADDED", obj, None)

    def replace(self, resource: str | ResourceType, obj: dict, *, subresource: str | None = None,
                check_version: bool = True) -> dict:
        """PUT semantics: optimistic concurrency on ``metadata.resourceVersion`` when given."""
        rt = self.rt(resource)
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace") or "" if rt.namespaced else "", meta.get("name", ""))
        if rt.namespaced and not key[0]:
            key = ("default", key[1])
        current = self._bucket(rt).get(key)
        if current is None:
            raise not_found(rt, key[1])
        if check_version and meta.get("resourceVersion") and meta["resourceVersion"] != current["metadata"]["resourceVersion"]:
            group = f".{rt.group}" if rt.group else ""
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.plural}{group} "{key[1]}": '
                           "the object has been modified; please apply your changes to the latest version and try again")
        return self._write(rt, current, copy.deepcopy(obj), subresource)

    def _write(self, rt: ResourceType, current: dict, new: dict, subresource: str | None) -> dict:
        old = copy.deepcopy(current)
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        if subresource == "status":
            merged = copy.deepcopy(current)
            merged["status"] = new.get("status", {})
            new = merged
        else:
            meta = new.setdefault("metadata", {})
            for k in ("uid", "creationTimestamp", "namespace", "name", "generation", "deletionTimestamp",
                      "deletionGracePeriodSeconds"):
                if k in current["metadata"]:
                    meta[k] = current["metadata"][k]
                else:
                    meta.pop(k, None)
            if rt.status:
                new["status"] = copy.deepcopy(current.get("status", {}))
            for fn in self.defaulters.get(rt.key, []):
                fn(new)
            if rt.has_spec and _spec_of(new) != _spec_of(current):
                meta["generation"] = current["metadata"].get("generation", 1) + 1
            for fn2 in self.strategies.get(rt.key, []):
                fn2(new, current)
        new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if _without_rv(new) == _without_rv(current):
            return copy.deepcopy(current)  # a no-op write does not bump the resourceVersion
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return self._commit(rt, "DELETED", new, old)
        return self._commit(rt, "MODIFIED", new, old)

    def patch(self, resource: str | ResourceType, namespace: str | None, name: str, content_type: str,
              body: Any, *, subresource: str | None = None) -> dict:
        rt = self.rt(resource)
        current = self.get(rt, namespace, name)
        try:
            patched = apply_patch(content_type, current, body)
        except (PatchError, KeyError, TypeError, ValueError) as err:
            code = 415 if "unsupported patch type" in str(err) else 422
            raise ApiError(code, "UnsupportedMediaType" if code == 415 else "Invalid", str(err)) from err
        if not isinstance(patched, dict):
            raise ApiError(422, "Invalid", "the patch did not produce an object")
        want_rv = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
        if want_rv and want_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.plural} "{name}": '
                           "the object has been modified; please apply your changes to the latest version and try again")
        stored = self._bucket(rt)[(current["metadata"].get("namespace", ""), name)]
        return self._write(rt, stored, patched, subresource)

    def mutate(self, resource: str | ResourceType, namespace: str | None, name: str,
               fn: Callable[[dict], None], *, subresource: str | None = None) -> dict | None:
        """For controllers: read, let ``fn`` edit in place, write back (no-op edits bump nothing)."""
        rt = self.rt(resource)
        key = (namespace or "" if rt.namespaced else "", name)
        stored = self._bucket(rt).get(key)
        if stored is None:
            return None
        new = copy.deepcopy(stored)
        fn(new)
        if subresource is None and rt.status:
            # controllers write both halves at once: spec first, then status
            status = new.get("status", {})
            out = self._write(rt, stored, new, None)
            stored = self._bucket(rt).get(key)
            if stored is None:
                return out
            with_status = copy.deepcopy(stored)
            with_status["status"] = status
            return self._write(rt, stored, with_status, "status")
        return self._write(rt, stored, new, subresource)

    def delete(self, resource: str | ResourceType, namespace: str | None, name: str, *,
               grace_seconds: float | None = None, force: bool = False) -> dict:
        """Delete; pods on a node and objects with finalizers get a ``deletionTimestamp`` first."""
        rt = self.rt(resource)
        key = (namespace or "" if rt.namespaced else "", name)
        stored = self._bucket(rt).get(key)
        if stored is None:
            raise not_found(rt, name)
        obj = copy.deepcopy(stored)
        meta = obj["metadata"]
        graceful = rt.kind == "Pod" and obj.get("spec", {}).get("nodeName") and grace_seconds != 0
        if not force and (meta.get("finalizers") or graceful):
            if meta.get("deletionTimestamp"):
                return copy.deepcopy(stored)
            meta["deletionTimestamp"] = timestamp()
            meta["deletionGracePeriodSeconds"] = int(
                grace_seconds if grace_seconds is not None
                else obj.get("spec", {}).get("terminationGracePeriodSeconds", 30))
            return self._commit(rt, "MODIFIED", obj, stored)
        out = self._commit(rt, "DELETED", obj, stored)
        self._collect_garbage(meta["uid"])
        return out

    def _collect_garbage(self, uid: str) -> None:
        """Background cascading deletion: dependents whose owner is gone go too."""
        for bucket_key, bucket in list(self.objects.items()):
            rt = self.registry.types.get(bucket_key)
            if rt is None:
                continue
            for (ns, name), obj in list(bucket.items()):
                if any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or []):
                    self.schedule(lambda rt=rt, ns=ns, name=name: self._delete_quietly(rt, ns, name))

    def _delete_quietly(self, rt: ResourceType, ns: str, name: str) -> None:
        try:
            self.delete(rt, ns, name)
        except ApiError:
            pass

    # -- watching -----------------------------------------------------------------------------

    def watch(self, watcher: Watcher, *, since: int | None) -> None:
        """Register ``watcher``; replay history after ``since`` (``None``: current state as ADDED)."""
        if since is None:
            for obj in self.list(watcher.rt, watcher.namespace):
                if watcher.matches(obj):
                    watcher.send("ADDED", obj)
        else:
            if since < self.compacted:
                raise ApiError(410, "Expired", f"too old resource version: {since} ({self.compacted})")
            for change in self.history:
                if change.rv > since:
                    watcher.offer(change)
        self.watchers.add(watcher)

    def default(self, resource: str | ResourceType, fn: Callable[[dict], None]) -> None:
        """Defaulting (mutating admission): ``fn(obj)`` fills in fields on every create and update."""
        self.defaulters.setdefault(self.rt(resource).key, []).append(fn)

    def strategy(self, resource: str | ResourceType, fn: Callable[[dict, dict | None], None]) -> None:
        """The registry's PrepareForCreate/PrepareForUpdate: ``fn(new, old or None)`` on every write
        of the object (not of its status)."""
        self.strategies.setdefault(self.rt(resource).key, []).append(fn)

    def on(self, resource: str | ResourceType | None, fn: Callable[[Change], None]) -> None:
        """Call ``fn(change)`` (on the loop, after the write) for every change of ``resource``."""
        if resource is None:
            self.any_listeners.append(fn)
        else:
            self.listeners.setdefault(self.rt(resource).key, []).append(fn)


def _spec_of(obj: dict) -> str:
    return json.dumps({k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")},
                      sort_keys=True)


def _without_rv(obj: dict) -> str:
    meta = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    return json.dumps({**obj, "metadata": meta}, sort_keys=True)
