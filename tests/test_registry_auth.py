"""Registry credentials: from the variables deploy.yaml names, to skopeo through a 0600 auth file only.

Against a real docker-registry with htpasswd (bcrypt) authentication.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
import threading
from pathlib import Path

import pytest

from forgegen.errors import PushError, UsageError
from forgegen.runtime import registry as forge_registry
from forgegen.runtime.tags import SourceRevision
from tests.fixtures.registry import ImageFlake, Registry, forge_plan

pytestmark = pytest.mark.registry

FAST = forge_registry.RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.05)


class ProcessWatch(threading.Thread):
    """Samples every process's command line (and environment) and the auth files while a push runs."""

    def __init__(self, secret: str, auth_dir: Path) -> None:
        super().__init__(daemon=True)
        self.secret = secret.encode()
        self.auth_dir = auth_dir
        self.stop = threading.Event()
        self.skopeo_cmdlines: list[list[str]] = []
        self.leaks: list[str] = []
        self.auth_modes: set[int] = set()

    def run(self) -> None:
        me = str(os.getpid())
        while not self.stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or pid == me:
                    continue
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    environ = Path(f"/proc/{pid}/environ").read_bytes()
                except OSError:
                    continue
                argv = cmdline.split(b"\0")
                # Only our own skopeo: the machine may be shared with other test sessions.
                if argv and argv[0].endswith(b"skopeo") and _descends_from(pid, me):
                    self.skopeo_cmdlines.append([a.decode() for a in argv if a])
                    if self.secret in environ:
                        self.leaks.append(f"environment of skopeo {pid}")
                if self.secret in cmdline:
                    self.leaks.append(f"command line of {pid}: {cmdline!r}")
            for f in self.auth_dir.glob("forge-auth-*"):
                try:
                    self.auth_modes.add(stat.S_IMODE(f.stat().st_mode))
                except OSError:
                    pass


def _descends_from(pid: str, ancestor: str) -> bool:
    for _ in range(64):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        pid = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), "0")
        if pid == ancestor:
            return True
        if pid in ("0", "1"):
            return False
    return False


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary files (the auth file among them) go to a directory this test can watch."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


@pytest.mark.parametrize("push_with", ["forge", "skopeo"])
def test_password_is_absent_from_process_list_logs_and_report(push_with: str, auth_registry: Registry,
                                                              image_flake: ImageFlake, private_tmp: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    assert auth_registry.password is not None
    monkeypatch.setenv("FORGE_REGISTRY_USER", auth_registry.username or "")
    monkeypatch.setenv("FORGE_REGISTRY_PASSWORD", auth_registry.password)
    caplog.set_level(logging.DEBUG)
    plan = forge_plan(auth_registry.host, organization=f"auth-{push_with}", push_with=push_with,
                      architectures=("x86_64-linux", "aarch64-linux"))
    lines: list[str] = []
    watch = ProcessWatch(auth_registry.password, private_tmp)
    watch.start()
    try:
        result = forge_registry.run_push(plan, "api", revision=SourceRevision("feed123", "GIT_SHA"),
                                         flake=image_flake.ref, policy=FAST, cache_dir=tmp_path / "oci",
                                         progress=lines.append)
    finally:
        watch.stop.set()
        watch.join(10)
    assert len(result.verified) == 6
    assert result.credentials == "FORGE_REGISTRY_USER/FORGE_REGISTRY_PASSWORD"
    if push_with == "skopeo":  # skopeo ran, was seen, and got the credentials only as a file
        assert watch.skopeo_cmdlines, "the watcher never saw skopeo run"
        for argv in watch.skopeo_cmdlines:
            assert "--authfile" in argv, " ".join(argv)
            assert not any(a.startswith("--creds") or a.startswith("--dest-creds") for a in argv)
        assert watch.auth_modes == {0o600}
    else:  # Forge's own client sent everything: no skopeo, and no auth file was ever written
        assert watch.skopeo_cmdlines == [] and watch.auth_modes == set()
    assert watch.leaks == []
    assert list(private_tmp.glob("forge-auth-*")) == []  # removed afterwards
    report = json.dumps(result.to_json())
    logged = "\n".join(r.getMessage() for r in caplog.records) + "\n".join(lines)
    for secret in (auth_registry.password, forge_registry.Credentials("forge-ci", auth_registry.password, "").basic):
        assert secret not in report
        assert secret not in logged
        assert secret not in repr(result)


def test_wrong_password_fails_at_once_naming_the_variables(auth_registry: Registry, image_flake: ImageFlake,
                                                           private_tmp: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI_REGISTRY_USER", "forge-ci")
    monkeypatch.setenv("CI_REGISTRY_PASSWORD", "not-the-password-123")
    plan = forge_plan(auth_registry.host, organization="auth-wrong",
                      credentials={"username_env": "CI_REGISTRY_USER", "password_env": "CI_REGISTRY_PASSWORD"})
    with pytest.raises(PushError) as info:
        forge_registry.run_push(plan, "api", revision=SourceRevision("feed123", "GIT_SHA"), flake=image_flake.ref,
                                policy=FAST, cache_dir=tmp_path / "oci")
    message = str(info.value)
    assert "HTTP 401" in message and "not retried" in message
    assert "check GHCR_TOKEN or CI_REGISTRY_USER/CI_REGISTRY_PASSWORD" in message
    assert "not-the-password-123" not in message
    assert list(private_tmp.glob("forge-auth-*")) == []


def test_push_without_credentials_is_refused_by_an_authenticated_registry(auth_registry: Registry,
                                                                          image_flake: ImageFlake,
                                                                          tmp_path: Path) -> None:
    plan = forge_plan(auth_registry.host, organization="auth-none")
    with pytest.raises(PushError, match=r"HTTP 401.*not retried"):
        forge_registry.run_push(plan, "api", revision=SourceRevision("feed123", "GIT_SHA"), flake=image_flake.ref,
                                policy=FAST, cache_dir=tmp_path / "oci")


def test_auth_file_is_private_and_removed(private_tmp: Path) -> None:
    creds = forge_registry.Credentials("u", "p@ss:word", "TEST")
    with forge_registry.auth_file("registry.example:5000", creds) as path:
        assert path is not None
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        doc = json.loads(Path(path).read_text())
        assert doc == {"auths": {"registry.example:5000": {"auth": creds.basic}}}
    assert not os.path.exists(path)
    with forge_registry.auth_file("registry.example:5000", None) as none:
        assert none is None
    assert "p@ss:word" not in repr(creds)


def test_ghcr_falls_back_to_the_github_cli_token(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gh = bin_dir / "gh"  # a GitHub CLI that is logged in
    gh.write_text('#!/bin/sh\n[ "$1 $2" = "auth token" ] && echo gho_from_gh_cli\n')
    gh.chmod(0o755)
    creds = forge_registry.resolve_credentials(forge_plan("ghcr.io").registry, {"PATH": str(bin_dir)})
    assert creds is not None and (creds.password, creds.source) == ("gho_from_gh_cli", "gh auth token")
    gh.write_text("#!/bin/sh\necho 'not logged in' >&2; exit 1\n")  # logged out: anonymous
    assert forge_registry.resolve_credentials(forge_plan("ghcr.io").registry, {"PATH": str(bin_dir)}) is None


def test_credentials_come_from_the_variables_deploy_yaml_names() -> None:
    ghcr = forge_plan("ghcr.io").registry
    assert forge_registry.resolve_credentials(ghcr, {"PATH": ""}) is None
    token = forge_registry.resolve_credentials(ghcr, {"GHCR_TOKEN": "t0k", "FORGE_REGISTRY_USER": "me", "PATH": ""})
    assert token is not None and (token.username, token.password, token.source) == ("me", "t0k", "GHCR_TOKEN")
    # the token wins over user/password; without it, user/password
    both = {"GHCR_TOKEN": "t0k", "FORGE_REGISTRY_USER": "me", "FORGE_REGISTRY_PASSWORD": "pw"}
    assert forge_registry.resolve_credentials(ghcr, both).source == "GHCR_TOKEN"  # type: ignore[union-attr]
    other = forge_plan("registry.example:5000").registry
    assert forge_registry.resolve_credentials(other, {"GHCR_TOKEN": "t0k"}) is None  # not ghcr.io
    basic = forge_registry.resolve_credentials(other, {"FORGE_REGISTRY_USER": "me", "FORGE_REGISTRY_PASSWORD": "pw"})
    assert basic is not None and (basic.username, basic.password) == ("me", "pw")
    named = forge_plan("registry.example:5000", credentials={"token_env": "REG_TOKEN"}).registry
    assert forge_registry.resolve_credentials(named, {"REG_TOKEN": "abc"}).source == "REG_TOKEN"  # type: ignore[union-attr]
    with pytest.raises(UsageError, match="FORGE_REGISTRY_PASSWORD is set but FORGE_REGISTRY_USER is not"):
        forge_registry.resolve_credentials(other, {"FORGE_REGISTRY_PASSWORD": "pw"})
    with pytest.raises(UsageError, match="FORGE_REGISTRY_USER is set but FORGE_REGISTRY_PASSWORD is not"):
        forge_registry.resolve_credentials(other, {"FORGE_REGISTRY_USER": "me"})
