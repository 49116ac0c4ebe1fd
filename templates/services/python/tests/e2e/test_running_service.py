"""End to end: the service started by `forge e2e prepare` (its dev.start), at $FORGE_BASE_URL."""

import json
import os
import urllib.request


def base_url() -> str:
    url = os.environ.get("FORGE_BASE_URL")
    assert url, "FORGE_BASE_URL is not set: run these tests with `forge test __NAME__:e2e`"
    return url.rstrip("/")


def test_running_service_is_healthy() -> None:
    with urllib.request.urlopen(base_url() + "/healthz") as resp:
        assert resp.status == 200 and resp.read() == b"ok\n"


def test_running_service_names_itself() -> None:
    with urllib.request.urlopen(base_url() + "/") as resp:
        assert json.loads(resp.read()) == {"service": "__NAME__"}
