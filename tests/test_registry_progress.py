"""`forge push` progress: on a terminal the bytes of each blob as it uploads (one replaceable
line), off a terminal only whole lines (one per blob and step). Real CLI, registry, skopeo, Nix."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.fixtures.registry import ImageFlake, Registry, forge_plan

pytestmark = pytest.mark.registry

CODE = "import sys; from forgegen.runtime.cli import main; sys.exit(main())"


def _push_args(registry: Registry, image_flake: ImageFlake, tmp_path: Path, org: str) -> list[str]:
    plan_file = tmp_path / f"{org}.json"
    plan_file.write_text(forge_plan(registry.host, organization=org).to_json())
    return [sys.executable, "-c", CODE, "push", "--plan", str(plan_file), "--source", str(image_flake.path), "api"]


def _run_on_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=follower, env=env)
    os.close(follower)
    out = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(60), out.decode(errors="replace")


def test_push_shows_bytes_on_a_terminal_and_only_lines_elsewhere(registry: Registry, image_flake: ImageFlake,
                                                                 tmp_path: Path) -> None:
    image_flake.set_payload("progress", size=3 << 20)  # a 3 MiB layer (random bytes: stored as is)
    env = {**os.environ, "RELEASE_GIT_SHA": "0a1b2c3"}
    code, shown = _run_on_a_terminal(_push_args(registry, image_flake, tmp_path, f"tty-{uuid.uuid4().hex[:6]}"), env)
    assert code == 0, shown
    assert "\r\x1b[K" in shown and " MiB" in shown and "uploading sha256:" in shown
    assert "uploaded blob sha256:" in shown and "pushed " in shown

    fresh = {**env, "XDG_CACHE_HOME": str(tmp_path / "fresh-cache")}  # converted again: uploaded early again
    plain = subprocess.run(_push_args(registry, image_flake, tmp_path, f"pipe-{uuid.uuid4().hex[:6]}"),
                           capture_output=True, text=True, timeout=300, env=fresh)
    assert plain.returncode == 0, plain.stderr
    assert "\r" not in plain.stderr and "\x1b[" not in plain.stderr
    assert "uploaded blob sha256:" in plain.stderr and "pushed " in plain.stderr
