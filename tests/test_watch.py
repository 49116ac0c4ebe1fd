"""The one watch consumer's bookkeeping (forgegen.runtime.watch.Streams.feed): what reaches the
snapshot, the resourceVersion guard, connection trouble, and a refusal. The list/watch threads
themselves run against the Kubernetes stand-in and the real control plane in the flux, rollout
and migration tests."""

from __future__ import annotations

from typing import Any

from forgegen.runtime.watch import Changed, Fatal, Streams, Synced, Trouble


class Seen:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []

    def replace(self, resource: str, items: Any) -> None:
        self.calls.append(f"replace {resource}")
        self.objects = {o["metadata"]["uid"]: o for o in items}

    def apply(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        self.calls.append(f"{kind} {obj['metadata']['resourceVersion']}")
        if kind == "DELETED":
            self.objects.pop(obj["metadata"]["uid"], None)
        else:
            self.objects[obj["metadata"]["uid"]] = obj


def obj(uid: str, rv: int) -> dict[str, Any]:
    return {"metadata": {"uid": uid, "name": uid, "resourceVersion": str(rv)}}


def test_an_older_version_of_an_object_never_replaces_a_newer_one() -> None:
    streams, seen = Streams(), Seen()
    streams.feed(Synced("pods", [obj("a", 10)]), seen)
    assert streams.listed("pods") and not streams.listed("pods", "job")
    streams.feed(Changed("pods", "MODIFIED", obj("a", 12)), seen)
    streams.feed(Changed("pods", "MODIFIED", obj("a", 11)), seen)  # a resumed watch replaying an older one
    assert seen.objects["a"]["metadata"]["resourceVersion"] == "12"
    assert seen.calls == ["replace pods", "MODIFIED 12"]
    streams.feed(Changed("pods", "DELETED", obj("a", 13)), seen)
    streams.feed(Changed("pods", "ADDED", obj("a", 5)), seen)  # after a delete, any version counts again
    assert seen.objects["a"]["metadata"]["resourceVersion"] == "5"


def test_a_fresh_list_resets_the_guard() -> None:
    streams, seen = Streams(), Seen()
    streams.feed(Changed("job", "ADDED", obj("j", 20)), seen)
    streams.feed(Synced("job", [obj("j", 3)]), seen)  # after 410 Gone the list is the truth
    streams.feed(Changed("job", "MODIFIED", obj("j", 4)), seen)
    assert seen.objects["j"]["metadata"]["resourceVersion"] == "4"


def test_trouble_is_remembered_until_the_streams_reach_the_api_again() -> None:
    streams, seen = Streams(), Seen()
    streams.feed(Trouble("job", "ConnectionRefusedError: refused"), seen)
    since = streams.trouble_since
    assert since is not None and streams.trouble == "ConnectionRefusedError: refused"
    streams.feed(Trouble("pods", "ConnectionRefusedError: refused"), seen)
    assert streams.trouble_since == since  # since when, not since the last complaint
    streams.feed(Changed("job", "ADDED", obj("j", 1)), seen)
    assert streams.trouble_since is None and streams.trouble is not None  # kept for a timeout message
    streams.feed(Synced("job", []), seen)
    assert streams.trouble is None


def test_a_refusal_is_handed_back_to_the_caller() -> None:
    streams, seen = Streams(), Seen()
    refusal = Fatal("pods", RuntimeError("403 Forbidden"))
    assert streams.feed(refusal, seen) is refusal
    assert seen.calls == []
