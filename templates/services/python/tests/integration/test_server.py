"""The real server on a loopback port, spoken to over HTTP."""

import threading
import urllib.error
import urllib.request

import pytest
from __IDENT__.app import make_server


@pytest.fixture
def base_url():
    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_healthz_over_http(base_url: str) -> None:
    with urllib.request.urlopen(base_url + "/healthz") as resp:
        assert resp.status == 200 and resp.read() == b"ok\n"


def test_missing_path_over_http(base_url: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(base_url + "/missing")
    assert err.value.code == 404
