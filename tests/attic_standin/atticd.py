"""A stand-in ``atticd`` executable: the Attic server's command line and configuration file in
front of :class:`~tests.attic_standin.server.AtticStandIn` (an Attic server cannot run here).

``atticd -f CONFIG [--mode monolithic|api-server]`` reads the TOML file as atticd of
zhaofengli/attic at commit 047060c does (server/src/config.rs): unknown top-level keys are
refused (``deny_unknown_fields``), so is the top-level ``token-hs256-secret-base64`` of older
versions; ``database``, ``storage`` and ``chunking`` are required; the HS256 secret is
``[jwt.signing] token-hs256-secret-base64`` (base64 of the HMAC key); it listens on ``listen``.
Tokens are checked with that secret. Runs until SIGTERM or SIGINT; a bad configuration is
reported on stderr with exit code 1.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import signal
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

from tests.attic_standin.server import AtticStandIn

TOP_LEVEL = {"listen", "allowed-hosts", "api-endpoint", "substituter-endpoint", "soft-delete-caches",
             "require-proof-of-possession", "max-nar-info-size", "database", "storage", "chunking",
             "compression", "garbage-collection", "jwt"}
CHUNKING = ("nar-size-threshold", "min-size", "avg-size", "max-size")


class BadConfig(Exception):
    pass


def _required(doc: dict[str, Any], key: str, where: str) -> Any:
    if key not in doc:
        raise BadConfig(f"missing field `{key}`{where}")
    return doc[key]


def load(path: Path) -> tuple[str, int, bytes]:
    """(host, port, HS256 key) from an atticd configuration file."""
    doc = tomllib.loads(path.read_text())
    if "token-hs256-secret-base64" in doc:
        raise BadConfig("token-hs256-secret-base64 moved to the [jwt.signing] block; update your configuration")
    unknown = sorted(set(doc) - TOP_LEVEL)
    if unknown:
        raise BadConfig(f"unknown field `{unknown[0]}`")
    url = _required(_required(doc, "database", ""), "url", " in database")
    if not url.startswith(("sqlite://", "postgres://", "postgresql://")):
        raise BadConfig(f"unsupported database url {url!r}")
    storage = _required(doc, "storage", "")
    if _required(storage, "type", " in storage") == "local" and not Path(_required(storage, "path", " in storage")).is_dir():
        raise BadConfig(f"local storage path {storage['path']} is not a directory")
    chunking = _required(doc, "chunking", "")
    for key in CHUNKING:
        _required(chunking, key, " in chunking")
    signing = (doc.get("jwt") or {}).get("signing") or {}
    try:
        key = base64.b64decode(_required(signing, "token-hs256-secret-base64", " in jwt.signing"), validate=True)
    except binascii.Error as err:
        raise BadConfig(f"HS256 secret cannot be decoded: {err}") from err
    host, _, port = str(doc.get("listen", "[::]:8080")).rpartition(":")
    return host, int(port), key


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="atticd")
    parser.add_argument("-f", "--config", type=Path, required=True)
    parser.add_argument("--mode", default="monolithic", choices=["monolithic", "api-server"])
    opts = parser.parse_args(argv)
    try:
        host, port, key = load(opts.config)
    except (OSError, tomllib.TOMLDecodeError, BadConfig, ValueError) as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    if host != "127.0.0.1":
        print(f"Error: this stand-in listens on 127.0.0.1 only, not {host}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = AtticStandIn(secret=key, port=port).start()
    except OSError as err:
        print(f"Error: cannot listen on {host}:{port}: {err}", file=sys.stderr)
        return 1
    print(f"Attic Server stand-in listening on {server.endpoint}", file=sys.stderr, flush=True)
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
