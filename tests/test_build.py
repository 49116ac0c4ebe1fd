"""``forge build``: real Nix builds of images made by the stand-in dockerTools; real binary caches."""

from __future__ import annotations

import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from forgegen.errors import BuildError, UsageError
from forgegen.runtime import build
from tests.fixtures.registry import ImageFlake, forge_plan

pytestmark = pytest.mark.nix

BOTH = ("x86_64-linux", "aarch64-linux")


class _CacheHandler(http.server.SimpleHTTPRequestHandler):
    """A Nix binary cache over HTTP: files from a directory; PUT writes them (as nix copy does)."""

    def do_PUT(self) -> None:  # noqa: N802 (http.server naming)
        target = Path(self.directory) / self.path.lstrip("/").split("?")[0]
        target.parent.mkdir(parents=True, exist_ok=True)
        length = int(self.headers.get("Content-Length", 0))
        target.write_bytes(self.rfile.read(length))
        self.server.puts.append(self.path)  # type: ignore[attr-defined]
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_cache(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    root = tmp_path / "http-cache"
    root.mkdir()
    (root / "nix-cache-info").write_text("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n")
    handler = lambda *a, **k: _CacheHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.puts = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root, server.puts  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def test_build_reports_store_path_closure_and_time_for_each_system(image_flake: ImageFlake) -> None:
    plan = forge_plan("127.0.0.1:1", architectures=BOTH)
    result = build.run_build(plan, "api", flake=image_flake.ref)
    assert [i.system for i in result.images] == list(BOTH)
    assert [i.arch for i in result.images] == ["amd64", "arm64"]
    for img in result.images:
        assert img.installable == f"{image_flake.ref}#packages.{img.system}.api-image"
        assert img.store_path.startswith("/nix/store/") and img.store_path.endswith("-api.tar.gz")
        assert os.path.isfile(img.store_path)
        assert img.kind == "docker-archive"
        assert img.closure_size >= img.nar_size > 0
    assert result.images[0].store_path != result.images[1].store_path
    assert result.seconds >= 0
    assert result.cache is None  # neither attic nor a binary cache is configured
    doc = json.loads(json.dumps(result.to_json()))
    assert doc["images"][1]["store_path"] == result.images[1].store_path
    assert {"build_seconds", "cache", "images", "package", "service"} <= set(doc)


def test_build_recognises_stream_images(image_flake: ImageFlake) -> None:
    plan = forge_plan("127.0.0.1:1", package="api-stream")
    (img,) = build.run_build(plan, "api", flake=image_flake.ref).images
    assert img.kind == "stream"
    assert os.access(img.store_path, os.X_OK)
    # the stream script refers to the whole image closure, so its closure is bigger than itself
    assert img.closure_size > img.nar_size


def test_build_refuses_a_system_without_builder_naming_it(image_flake: ImageFlake,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIX_CONFIG", os.environ["NIX_CONFIG"].replace("extra-platforms = aarch64-linux\n", "")
                       + "builders =\n")
    plan = forge_plan("127.0.0.1:1", architectures=BOTH)
    with pytest.raises(BuildError) as info:
        build.run_build(plan, "api", flake=image_flake.ref)
    message = str(info.value)
    assert "cannot build the aarch64-linux image of api" in message
    assert "no remote builder is configured for aarch64-linux" in message
    assert "builders = ssh-ng://user@host aarch64-linux" in message
    assert "extra-platforms = aarch64-linux" in message
    # the local system alone still builds
    (img,) = build.run_build(plan, "api", flake=image_flake.ref, systems=["x86_64-linux"]).images
    assert img.system == "x86_64-linux"


def test_build_counts_remote_builders_for_their_systems(tmp_path: Path) -> None:
    machines = tmp_path / "machines"
    machines.write_text("# remote builders\nssh-ng://builder@arm aarch64-linux,armv7l-linux - 4 1\n")
    env = {"NIX_CONFIG": os.environ["NIX_CONFIG"] + f"builders = @{machines}\n"}
    builders = build.nix_builders(env)
    assert builders.can_build("aarch64-linux") and builders.can_build("armv7l-linux")
    assert builders.remote["aarch64-linux"] == ("ssh-ng://builder@arm",)
    assert builders.can_build("x86_64-linux")
    assert not builders.can_build("riscv64-linux")


def test_build_unknown_package_says_what_to_define(image_flake: ImageFlake) -> None:
    plan = forge_plan("127.0.0.1:1", package="no-such-image")
    with pytest.raises(BuildError) as info:
        build.run_build(plan, "api", flake=image_flake.ref)
    assert "the flake has no image package 'no-such-image' for api" in str(info.value)
    assert "services.api.image.package" in str(info.value)


def test_build_rejects_a_system_the_service_does_not_list(image_flake: ImageFlake) -> None:
    plan = forge_plan("127.0.0.1:1")
    with pytest.raises(UsageError, match="not built for aarch64-linux"):
        build.run_build(plan, "api", flake=image_flake.ref, systems=["aarch64-linux"])


def test_cache_push_to_file_cache_sends_only_missing_paths(image_flake: ImageFlake, tmp_path: Path) -> None:
    cache = tmp_path / "file-cache"
    plan = forge_plan("127.0.0.1:1", package="api-stream", binary_cache=f"file://{cache}")
    first = build.run_build(plan, "api", flake=image_flake.ref)
    assert first.cache is not None and first.cache.via == "nix copy"
    # script, docker-archive.py, app, base, payload: the whole closure goes the first time
    assert first.cache.paths_total == first.cache.paths_sent == 5
    narinfos = {p.name for p in cache.glob("*.narinfo")}
    assert len(narinfos) == 5

    again = build.run_build(plan, "api", flake=image_flake.ref)
    assert again.cache is not None and (again.cache.paths_total, again.cache.paths_sent) == (5, 0)

    image_flake.set_payload("two")
    changed = build.run_build(plan, "api", flake=image_flake.ref)
    assert changed.cache is not None
    # a new payload and a new stream script; app, base and the helper are already there
    assert (changed.cache.paths_total, changed.cache.paths_sent) == (5, 2)
    assert changed.cache.to_json()["paths_present"] == 3
    assert len(list(cache.glob("*.narinfo"))) == 7


def test_cache_push_to_http_binary_cache(image_flake: ImageFlake,
                                         http_cache: tuple[str, Path, list[str]]) -> None:
    url, root, puts = http_cache
    plan = forge_plan("127.0.0.1:1", architectures=BOTH, binary_cache=url)
    result = build.run_build(plan, "api", flake=image_flake.ref)
    assert result.cache is not None and (result.cache.paths_total, result.cache.paths_sent) == (2, 2)
    for img in result.images:
        assert (root / (Path(img.store_path).name.split("-")[0] + ".narinfo")).is_file()
    sent = len(puts)
    again = build.run_build(plan, "api", flake=image_flake.ref)
    assert again.cache is not None and again.cache.paths_sent == 0
    assert len(puts) == sent  # nothing uploaded the second time


def test_cache_push_skips_attic_without_client_and_says_why(image_flake: ImageFlake, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"  # a PATH with nix but surely no attic
    bin_dir.mkdir()
    import shutil
    (bin_dir / "nix").symlink_to(shutil.which("nix") or "/usr/bin/nix")
    monkeypatch.setenv("PATH", str(bin_dir))
    plan = forge_plan("127.0.0.1:1", attic={"endpoint": "http://127.0.0.1:1", "cache": "main"})
    lines: list[str] = []
    result = build.run_build(plan, "api", flake=image_flake.ref, progress=lines.append)
    assert result.cache is not None and result.cache.via == "none"
    assert result.cache.skipped == "the attic client is not on PATH (install attic-client)"
    assert any("the `attic` client is not on PATH" in line for line in lines)


def _plan_of(services: dict[str, dict]):
    from forgegen import plan, schema

    return plan.build_plan(schema.Config.model_validate({
        "version": 1, "project": "shop", "registry": {"host": "127.0.0.1:1", "insecure": True},
        "gitops": {"repo": "./gitops"}, "environments": [{"name": "staging"}], "services": services}))


def test_builds_of_several_services_share_one_nix_build(image_flake: ImageFlake) -> None:
    plan = _plan_of({"a": {"architectures": list(BOTH), "image": {"package": "api-image"}},
                     "b": {"image": {"package": "api-stream"}},
                     "d": {"image": {"package": "api-image"}}})
    shared: list[str] = []
    own: dict[str, list[str]] = {}
    results = build.run_builds(plan, ["a", "b", "d"], flake=image_flake.ref, progress=shared.append,
                               progress_for=lambda name: own.setdefault(name, []).append)
    assert list(results) == ["a", "b", "d"]
    a, b, d = (results[n] for n in ("a", "b", "d"))
    assert isinstance(a, build.BuildResult) and isinstance(b, build.BuildResult) and isinstance(d, build.BuildResult)
    assert [i.system for i in a.images] == list(BOTH) and [i.kind for i in b.images] == ["stream"]
    assert d.images[0].store_path == a.images[0].store_path  # the same installable, built once
    assert all(os.path.exists(i.store_path) for r in (a, b, d) for i in r.images)
    assert a.seconds == b.seconds == d.seconds  # one shared build
    # a's two systems and b's one: d's installable is a's first
    assert [line for line in shared if line.startswith("building")] == [
        "building the images of 3 services (3 installables) with one nix build"]
    assert all(any(line.startswith("built x86_64-linux: /nix/store/") for line in own[n]) for n in "abd")


def test_a_failed_shared_build_names_the_service_and_stops_there(image_flake: ImageFlake) -> None:
    plan = _plan_of({"a": {"image": {"package": "api-image"}}, "c": {"image": {"package": "no-such-image"}},
                     "d": {"image": {"package": "api-stream"}}})
    results = build.run_builds(plan, ["a", "c", "d"], flake=image_flake.ref)
    assert list(results) == ["a", "c"]  # d is not built after the failure
    assert isinstance(results["a"], build.BuildResult)
    err = results["c"]
    assert isinstance(err, BuildError)
    assert "the flake has no image package 'no-such-image' for c" in str(err)
