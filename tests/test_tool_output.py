"""What Forge shows of the tools it runs: `nix build` / `nix copy` progress on a terminal (build
logs as they come, one replaceable progress line) and quiet whole lines elsewhere; and, when a tool
fails, its name, exit code and last lines in the error, secrets scrubbed. Real Nix, skopeo and
registry; real failing invocations."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from forgegen.errors import BuildError, PushError
from forgegen.runtime import build, oci, registry
from forgegen.runtime.registry_api import RetryPolicy
from tests.fixtures.registry import FaultProxy, ImageFlake, forge_plan
from tests.test_registry_progress import _run_on_a_terminal

pytestmark = pytest.mark.nix

CODE = "import sys; from forgegen.runtime.cli import main; sys.exit(main())"


def _log_flake(root: Path, script: str) -> str:
    """A flake whose ``api-image`` is a file made by a builder running ``script`` (fresh each
    test: a unique marker, so Nix really builds it and prints its log)."""
    root.mkdir(parents=True, exist_ok=True)
    marker = uuid.uuid4().hex[:10]
    (root / "flake.nix").write_text(
        "{ outputs = { self }: { packages.x86_64-linux.api-image = derivation {\n"
        f'  name = "api-image"; system = "x86_64-linux"; builder = "/bin/sh"; marker = "{marker}";\n'
        f"  args = [ \"-c\" ''{script}'' ];\n"
        "}; }; }\n")
    return marker


def _build_args(tmp_path: Path, flake: Path, binary_cache: str | None = None) -> list[str]:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(forge_plan("127.0.0.1:1", binary_cache=binary_cache).to_json())
    return [sys.executable, "-c", CODE, "build", "--plan", str(plan_file), "--source", str(flake), "api"]


STEPS = "echo step-one-$marker; echo step-two >&2; echo image > $out"


def test_build_on_a_terminal_shows_build_logs_and_a_progress_line(tmp_path: Path) -> None:
    marker = _log_flake(tmp_path / "flake", STEPS)
    args = _build_args(tmp_path, tmp_path / "flake", binary_cache=f"file://{tmp_path / 'cache'}")
    code, shown = _run_on_a_terminal(args, dict(os.environ))
    assert code == 0, shown
    assert "building api-image" in shown
    assert f"api-image> step-one-{marker}" in shown and "api-image> step-two" in shown  # as `nix build -L`
    assert "\r\x1b[Knix: built 0 of 1" in shown  # the replaceable progress line of the build
    assert "\r\x1b[Knix: copying api-image" in shown  # and of the closure push (nix copy)
    assert "pushing 1 of 1 store paths" in shown
    assert "@nix {" not in shown


def test_build_off_a_terminal_is_quiet_and_line_based(tmp_path: Path) -> None:
    marker = _log_flake(tmp_path / "flake", STEPS)
    args = _build_args(tmp_path, tmp_path / "flake", binary_cache=f"file://{tmp_path / 'cache'}")
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "building api-image" in done.stderr and "pushing 1 of 1 store paths" in done.stderr
    assert "\r" not in done.stderr and "\x1b[" not in done.stderr and "@nix {" not in done.stderr
    assert f"step-one-{marker}" not in done.stderr  # build logs only with -v, or in a failure's error


def test_failed_build_error_names_nix_its_exit_code_and_the_last_log_lines(tmp_path: Path) -> None:
    _log_flake(tmp_path / "flake", "i=0; while [ $i -lt 40 ]; do i=$((i+1)); echo log-line-$i; done; exit 3")
    plan = forge_plan("127.0.0.1:1")
    with pytest.raises(BuildError) as info:
        build.run_build(plan, "api", flake=str(tmp_path / "flake"), push_cache=False)
    message = info.value.message
    assert "nix build exited with 1; its last lines:" in message
    assert "api-image> log-line-40" in message and "api-image> log-line-30" in message
    assert "api-image> log-line-5\n" not in message  # the tail, not the whole log
    assert "failed with exit code 3" in message  # Nix's own error, colours removed
    assert "\x1b[" not in message and "@nix" not in message


class _RefusingCache(http.server.SimpleHTTPRequestHandler):
    """A Nix binary cache over HTTP that serves reads from a directory and refuses every upload."""

    def do_PUT(self) -> None:  # noqa: N802 (http.server naming)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"upload refused: the cache is full\n"
        self.send_response(403)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_failed_nix_copy_error_shows_its_last_lines(tmp_path: Path) -> None:
    _log_flake(tmp_path / "flake", "echo image > $out")
    root = tmp_path / "http-cache"
    root.mkdir()
    (root / "nix-cache-info").write_text("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             lambda *a, **k: _RefusingCache(*a, directory=str(root), **k))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(BuildError) as info:
            build.run_build(forge_plan("127.0.0.1:1", binary_cache=url), "api", flake=str(tmp_path / "flake"))
    finally:
        server.shutdown()
        server.server_close()
    message = info.value.message
    assert message.startswith(f"cannot push the image closure to the binary cache {url}: ")
    assert "nix copy exited with 1; its last lines:" in message
    assert "403" in message and "\x1b[" not in message


def _layout(image_flake: ImageFlake, tmp_path: Path) -> oci.OciImage:
    built = build.run_build(forge_plan("127.0.0.1:1"), "api", flake=image_flake.ref, push_cache=False)
    return oci.oci_layout(built.images[0], tmp_path / "layouts")


def test_failed_skopeo_error_names_it_with_exit_code_and_its_whole_last_line(image_flake: ImageFlake,
                                                                             fault_proxy: FaultProxy,
                                                                             tmp_path: Path) -> None:
    image = _layout(image_flake, tmp_path)
    repository = f"{fault_proxy.host}/forge/refused"
    fault_proxy.inject("403", 50)  # every request skopeo makes is refused (permanent)
    with pytest.raises(PushError) as info:
        registry.skopeo_copy(image.transport_ref, f"{repository}:x86_64-abc1234", insecure=True, authfile=None,
                             secrets=[], policy=RetryPolicy(attempts=3), timeout=300, repository=repository)
    message = str(info.value)
    assert "not retried (attempt 1)" in message
    tail = message.split("skopeo exited with 1; its last lines:\n", 1)[1]
    assert 'level=fatal msg="' in tail and "403 (Forbidden)" in tail  # skopeo's own line, whole


def test_a_streamed_tools_error_has_its_name_exit_code_and_scrubbed_tail(tmp_path: Path) -> None:
    from forgegen import process
    from forgegen.errors import CommandError

    secret = f"s3cret-{uuid.uuid4().hex[:8]}"
    script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25; do echo said-$i >&2; done; " \
             "echo \"login as forge:$FORGE_T failed at https://forge:$FORGE_T@cache.example/x\" >&2; exit 4"
    seen: list[str] = []
    with pytest.raises(CommandError) as info:
        process.stream(["sh", "-c", script], lambda line: seen.append(line) or line, env={"FORGE_T": secret},
                       secrets=[secret], what="push the closure")
    message = info.value.message
    assert message.startswith("cannot push the closure: `sh -c ")
    assert "sh exited with 4; its last lines:" in message
    assert "said-25" in message and "said-7\n" in message and "said-6\n" not in message  # the last 20 lines
    assert secret not in message and "login as forge:*** failed" in message
    assert all(secret not in line for line in seen) and len(seen) == 26  # each line as it came, scrubbed


def test_skopeo_that_keeps_failing_shows_its_tail_after_the_last_attempt(image_flake: ImageFlake,
                                                                         fault_proxy: FaultProxy,
                                                                         tmp_path: Path) -> None:
    image = _layout(image_flake, tmp_path)
    repository = f"{fault_proxy.host}/forge/flaky"
    fault_proxy.inject("503", 200)
    with pytest.raises(PushError) as info:
        registry.skopeo_copy(image.transport_ref, f"{repository}:x86_64-abc1234", insecure=True, authfile=None,
                             secrets=[], policy=RetryPolicy(attempts=2, initial_delay=0.01), timeout=300,
                             repository=repository)
    message = str(info.value)
    assert "gave up after 2 attempts" in message
    assert "skopeo exited with 1; its last lines:" in message and "503" in message
