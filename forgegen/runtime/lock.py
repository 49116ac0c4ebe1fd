"""The release lock: one Kubernetes ``Lease`` (coordination.k8s.io/v1) per product and environment.

``forge release`` takes the Lease of every environment it covers (in promotion order, so two
releases never wait on each other crosswise) before it pushes anything, renews it every third of
``leaseDurationSeconds`` while it runs, and gives it back at the end (``holderIdentity``
cleared), also when it fails. Another release finding the Lease held waits up to
``--lock-timeout`` seconds for it (polling the Lease), then exits 2 naming the holder
(:class:`ReleaseLocked`). A Lease whose ``renewTime + leaseDurationSeconds`` lies in the past
(its holder died without giving it back) is taken over, and the report says from whom.

Every write carries the ``resourceVersion`` it read, so two releases racing for one Lease cannot
both win: the loser gets HTTP 409 and reads again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from forgegen.errors import ClusterUnreachable, UsageError
from forgegen.runtime.k8stypes import Lease as LeaseObject
from forgegen.runtime.k8stypes import LeaseSpec

log = logging.getLogger(__name__)

DURATION = 30  # seconds; renewed every DURATION / 3
POLL = 0.25


class ReleaseLocked(UsageError):
    """Another release holds the Lease of an environment (exit 2)."""


def lease_name(project: str, environment: str) -> str:
    raw = re.sub(r"[^a-z0-9-]+", "-", f"forge-release-{project}-{environment}".lower()).strip("-")
    return raw if len(raw) <= 63 else f"{raw[:54].rstrip('-')}-{hashlib.sha256(raw.encode()).hexdigest()[:8]}"


def identity() -> str:
    return f"forge@{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


def _now() -> datetime:
    return datetime.now(UTC)


def _micro(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not value:
        return None
    text = str(value).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def expired(spec: LeaseSpec, now: datetime) -> bool:
    """Free, or its holder stopped renewing: ``renewTime + leaseDurationSeconds`` is past."""
    if not spec.get("holderIdentity"):
        return True
    renewed = _parse(spec.get("renewTime") or spec.get("acquireTime"))
    if renewed is None:
        return True
    return (now - renewed).total_seconds() > float(spec.get("leaseDurationSeconds") or DURATION)


@dataclass
class Lease:
    """One held Lease; :meth:`release` gives it back."""

    api: Any
    namespace: str
    name: str
    holder: str
    duration: int
    info: dict[str, Any] = field(default_factory=dict)
    lost: str | None = None

    def _co(self) -> Any:
        from forgegen.runtime import kubeapi

        return kubeapi.CustomObjectsApi(self.api)

    def _read(self) -> LeaseObject | None:
        from forgegen.runtime.kubeapi import ApiException

        try:
            return cast("LeaseObject", self._co().get_namespaced_custom_object(
                "coordination.k8s.io", "v1", self.namespace, "leases", self.name, _request_timeout=(5, 15)))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def _write(self, obj: LeaseObject) -> LeaseObject:
        return cast("LeaseObject", self._co().replace_namespaced_custom_object(
            "coordination.k8s.io", "v1", self.namespace, "leases", self.name, obj, _request_timeout=(5, 15)))

    def renew(self) -> bool:
        """Move ``renewTime`` forward; False (and ``lost`` set) when someone else holds it now."""
        from forgegen.runtime.kubeapi import ApiException

        for _ in range(5):
            obj = self._read()
            if obj is None or (obj.get("spec") or {}).get("holderIdentity") != self.holder:
                self.lost = f"the Lease {self.namespace}/{self.name} was taken by " \
                            f"{((obj or {}).get('spec') or {}).get('holderIdentity') or 'nobody'}"
                return False
            obj["spec"]["renewTime"] = _micro(_now())
            try:
                self._write(obj)
                return True
            except ApiException as err:
                if err.status != 409:
                    raise
        return False

    def release(self) -> None:
        from forgegen.runtime.kubeapi import ApiException

        for _ in range(5):
            try:
                obj = self._read()
                if obj is None or (obj.get("spec") or {}).get("holderIdentity") != self.holder:
                    return
                obj["spec"]["holderIdentity"] = None
                obj["spec"]["renewTime"] = None
                self._write(obj)
                self.info["released_at"] = _micro(_now())
                return
            except ApiException as err:
                if err.status != 409:
                    log.warning("could not give back the Lease %s/%s: HTTP %s", self.namespace, self.name, err.status)
                    return
            except Exception as err:  # noqa: BLE001 - giving back is best effort; it expires anyway
                log.warning("could not give back the Lease %s/%s: %s", self.namespace, self.name, err)
                return


def acquire(api: Any, *, namespace: str, name: str, holder: str, what: str, wait: float,
            duration: int = DURATION, say: Callable[[str], None] = log.info) -> Lease:
    """Take the Lease, waiting up to ``wait`` seconds for its holder; raise :class:`ReleaseLocked`."""
    from forgegen.runtime import kubeapi
    from forgegen.runtime.kubeapi import ApiException

    co = kubeapi.CustomObjectsApi(api)
    lease = Lease(api, namespace, name, holder, duration)
    deadline = time.monotonic() + wait
    t0 = time.monotonic()
    waited_for: str | None = None
    while True:
        obj: LeaseObject | None = None
        try:
            obj = lease._read()
            now = _now()
            spec = (obj or {}).get("spec") or {}
            if obj is not None and not expired(spec, now) and spec.get("holderIdentity") != holder:
                other = spec["holderIdentity"]
                if time.monotonic() >= deadline:
                    raise ReleaseLocked(
                        f"another release holds {namespace}/Lease/{name}: {other}"
                        + (f" ({what_of(obj)})" if what_of(obj) else "")
                        + (f"; waited {time.monotonic() - t0:.0f}s" if wait else ""),
                        hint="wait for it to finish and re-run, or pass --lock-timeout SECONDS to wait for it; "
                             f"a holder that died is taken over {spec.get('leaseDurationSeconds') or duration}s "
                             "after its last renewal")
                if waited_for != other:
                    say(f"lock: {namespace}/Lease/{name} is held by {other}; waiting (up to {wait:g}s)")
                    waited_for = other
                time.sleep(POLL)
                continue
            stamp = _micro(now)
            body_spec: LeaseSpec = {
                "holderIdentity": holder, "leaseDurationSeconds": duration, "acquireTime": stamp, "renewTime": stamp,
                "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (1 if obj is not None else 0)}
            meta = {"name": name, "namespace": namespace,
                    "labels": {"app.kubernetes.io/managed-by": "forge"},
                    "annotations": {"forge.dev/release": what}}
            if obj is None:
                co.create_namespaced_custom_object("coordination.k8s.io", "v1", namespace, "leases",
                                                   {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                                    "metadata": meta, "spec": body_spec}, _request_timeout=(5, 15))
            else:
                obj["metadata"].setdefault("annotations", {})["forge.dev/release"] = what
                obj["spec"] = body_spec
                lease._write(obj)
            stale = spec.get("holderIdentity") if obj is not None and spec.get("holderIdentity") else None
            lease.info = {"lease": f"{namespace}/{name}", "holder": holder, "acquired_at": stamp,
                          "waited_seconds": round(time.monotonic() - t0, 3), "waited_for": waited_for,
                          "taken_over_from": stale}
            if stale:
                say(f"lock: took over {namespace}/Lease/{name} from {stale} (not renewed for over "
                    f"{spec.get('leaseDurationSeconds') or duration}s)")
            return lease
        except ApiException as err:
            if err.status in (409, 422) or (err.status == 404 and obj is not None):
                continue  # someone else wrote it between our read and write: read again
            raise ClusterUnreachable(f"cannot take the release lock {namespace}/Lease/{name}: HTTP {err.status} "
                                     f"{err.reason}",
                                     hint="Forge needs get/create/update on leases.coordination.k8s.io") from err


def what_of(obj: LeaseObject) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get("forge.dev/release")


class Renewer:
    """Renews held Leases every ``duration / 3`` seconds until :meth:`stop`."""

    def __init__(self, leases: list[Lease]) -> None:
        self.leases = leases
        self._stop = threading.Event()
        period = min((lease.duration for lease in leases), default=DURATION) / 3
        self._thread = threading.Thread(target=self._loop, args=(period,), name="forge-lease-renew", daemon=True)
        if leases:
            self._thread.start()

    def _loop(self, period: float) -> None:
        while not self._stop.wait(period):
            for lease in self.leases:
                try:
                    if not lease.renew():
                        log.warning("lock: %s", lease.lost)
                except Exception as err:  # noqa: BLE001 - one failed renewal is retried next period
                    log.warning("lock: cannot renew %s/%s: %s", lease.namespace, lease.name, err)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        for lease in self.leases:
            lease.release()
