"""``forge push``: real docker-registry, real skopeo, images built by real Nix (stand-in dockerTools)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forgegen.errors import PushError, ToolMissing
from forgegen.runtime import build
from forgegen.runtime import registry as forge_registry
from forgegen.runtime.tags import SourceRevision
from tests.fixtures.registry import FaultProxy, ImageFlake, Registry, forge_plan

pytestmark = pytest.mark.registry

BOTH = ("x86_64-linux", "aarch64-linux")
FAST = forge_registry.RetryPolicy(attempts=5, initial_delay=0.01, max_delay=0.05)


def rev(sha: str = "abc1234") -> SourceRevision:
    return SourceRevision(sha, "GIT_SHA")


def skopeo_raw(ref: str) -> dict:
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out)


def skopeo_digest(ref: str) -> str:
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", f"docker://{ref}"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return out.strip()


def list_tags(ref: str) -> set[str]:
    out = subprocess.run(["skopeo", "list-tags", "--tls-verify=false", f"docker://{ref}"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return set(json.loads(out)["Tags"])


def org(unique_repo: str) -> str:
    return unique_repo.replace("/", "-")


# ---------------------------------------------------------------------------------------------
# Pushing, tags, index, verification


def test_push_single_arch_tags_sha_and_latest_and_verifies(registry: Registry, image_flake: ImageFlake,
                                                           unique_repo: str, tmp_path: Path) -> None:
    plan = forge_plan(registry.host, organization=org(unique_repo))
    result = registry_push(plan, image_flake, tmp_path)
    repo = f"{registry.host}/{org(unique_repo)}/api"
    assert result.repository == repo
    (img,) = result.images
    assert img.tags == ("amd64-abc1234", "amd64-latest")
    assert result.index is None and result.deploy_tag == "amd64-abc1234"
    assert list_tags(repo) == {"amd64-abc1234", "amd64-latest"}
    # what skopeo (an independent client) sees is what we pushed and verified
    assert skopeo_digest(f"{repo}:amd64-abc1234") == img.digest == result.deploy_digest
    assert skopeo_digest(f"{repo}:amd64-latest") == img.digest
    assert result.verified == {"amd64-abc1234": img.digest, "amd64-latest": img.digest}
    manifest = skopeo_raw(f"{repo}:amd64-abc1234")
    assert manifest["mediaType"] == forge_registry.MEDIA_OCI_MANIFEST
    assert len(manifest["layers"]) == img.layers == 4  # app, base, payload, and the contents linked into /
    config = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--config", f"docker://{repo}:amd64-latest"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(config)["config"]["Cmd"] == ["/bin/app"]
    doc = result.to_json()
    assert doc["deploy_reference"] == f"{repo}:amd64-abc1234@{img.digest}"
    assert doc["credentials_from"] is None


def test_forge_and_skopeo_send_the_same_image(registry: Registry, image_flake: ImageFlake, unique_repo: str,
                                              tmp_path: Path) -> None:
    """``registry.push_with``: Forge's own client and skopeo leave byte-identical manifests and
    configs, as an independent client (skopeo inspect) reads them."""
    results = {}
    for how in ("forge", "skopeo"):
        plan = forge_plan(registry.host, organization=f"{org(unique_repo)}-{how}", push_with=how)
        results[how] = registry_push(plan, image_flake, tmp_path / how)
        assert results[how].images[0].copied and results[how].images[0].layers_uploaded == 5  # config + 4 layers
    forge, skopeo = results["forge"], results["skopeo"]
    assert forge.deploy_digest == skopeo.deploy_digest
    assert skopeo_raw(f"{forge.repository}:amd64-abc1234") == skopeo_raw(f"{skopeo.repository}:amd64-abc1234")
    assert skopeo_digest(f"{forge.repository}:amd64-latest") == forge.deploy_digest


def test_forge_push_needs_no_skopeo(registry: Registry, image_flake: ImageFlake, unique_repo: str, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    built = build.run_build(forge_plan(registry.host), "api", flake=image_flake.ref, push_cache=False)
    bare = tmp_path / "bin"  # PATH without skopeo
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    plan = forge_plan(registry.host, organization=org(unique_repo))
    result = forge_registry.run_push(plan, "api", revision=rev(), build=built, policy=FAST, cache_dir=tmp_path / "oci")
    assert result.verified["amd64-abc1234"] == result.deploy_digest
    with pytest.raises(ToolMissing, match="skopeo is not on PATH"):
        forge_registry.run_push(forge_plan(registry.host, organization=f"{org(unique_repo)}-s", push_with="skopeo"),
                                "api", revision=rev(), build=built, policy=FAST, cache_dir=tmp_path / "oci")


def registry_push(plan, image_flake: ImageFlake, tmp_path: Path, *, sha: str = "abc1234",
                  cache: str = "oci-cache", **kwargs):
    return forge_registry.run_push(plan, "api", revision=rev(sha), flake=image_flake.ref, policy=FAST,
                             cache_dir=tmp_path / cache, **kwargs)


def test_push_multi_arch_pushes_an_oci_index_as_sha_and_latest(registry: Registry, image_flake: ImageFlake,
                                                               unique_repo: str, tmp_path: Path) -> None:
    plan = forge_plan(registry.host, organization=org(unique_repo), architectures=BOTH)
    result = registry_push(plan, image_flake, tmp_path)
    repo = result.repository
    assert list_tags(repo) == {"amd64-abc1234", "amd64-latest", "arm64-abc1234", "arm64-latest",
                               "abc1234", "latest"}
    assert result.index is not None and result.deploy_tag == "abc1234"
    index = skopeo_raw(f"{repo}:abc1234")
    assert index["mediaType"] == forge_registry.MEDIA_OCI_INDEX
    entries = {(m["platform"]["architecture"], m["digest"]) for m in index["manifests"]}
    amd64, arm64 = result.images
    assert entries == {("amd64", amd64.digest), ("arm64", arm64.digest)}
    assert [m["platform"].get("variant") for m in index["manifests"]] == [None, "v8"]
    assert skopeo_raw(f"{repo}:latest") == index
    assert result.deploy_digest == result.index.digest == result.verified["abc1234"] == result.verified["latest"]
    # each per-arch tag is that architecture's image
    assert skopeo_digest(f"{repo}:arm64-abc1234") == arm64.digest
    arm_config = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--config", f"docker://{repo}:arm64-latest"],
                                capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(arm_config)["architecture"] == "arm64"


def test_stream_and_archive_images_push_the_same_digest(registry: Registry, image_flake: ImageFlake,
                                                        unique_repo: str, tmp_path: Path) -> None:
    archive = registry_push(forge_plan(registry.host, organization=org(unique_repo) + "-a"), image_flake, tmp_path)
    stream_plan = forge_plan(registry.host, organization=org(unique_repo) + "-s", package="api-stream")
    stream = registry_push(stream_plan, image_flake, tmp_path)
    assert stream.images[0].digest == archive.images[0].digest


def test_repush_of_an_unchanged_image_uploads_no_layer_bytes(registry: Registry, fault_proxy: FaultProxy,
                                                             image_flake: ImageFlake, unique_repo: str,
                                                             tmp_path: Path) -> None:
    plan = forge_plan(fault_proxy.host, organization=org(unique_repo))
    first = registry_push(plan, image_flake, tmp_path, sha="1111111")
    assert first.images[0].copied and first.images[0].bytes_uploaded > 0
    blobs_before = registry.blobs()
    fault_proxy.reset_counters()
    # a new commit, and a fresh layout cache, as on a new CI machine: the same layers, the same digests
    second = registry_push(plan, image_flake, tmp_path, sha="2222222", cache="fresh-cache")
    (img,) = second.images
    assert img.digest == first.images[0].digest
    assert (img.layers_uploaded, img.bytes_uploaded, img.copied) == (0, 0, False)
    assert registry.blobs() == blobs_before
    assert fault_proxy.bytes_up < 16 * 1024  # HEADs and two small manifest PUTs, no blob data
    assert second.verified["amd64-2222222"] == img.digest


def test_push_with_one_changed_layer_uploads_only_that_layer(registry: Registry, fault_proxy: FaultProxy,
                                                             image_flake: ImageFlake, unique_repo: str,
                                                             tmp_path: Path) -> None:
    image_flake.set_payload("v1", size=256 * 1024)
    plan = forge_plan(fault_proxy.host, organization=org(unique_repo))
    first = registry_push(plan, image_flake, tmp_path, sha="1111111")
    before = registry.blobs()
    image_flake.set_payload("v2")
    fault_proxy.reset_counters()
    second = registry_push(plan, image_flake, tmp_path, sha="2222222")
    new_blobs = {d: s for d, s in registry.blobs().items() if d not in before}
    manifest = skopeo_raw(f"{second.repository}:amd64-2222222")
    old_manifest = skopeo_raw(f"{second.repository}:amd64-1111111")
    changed = [layer for layer in manifest["layers"] if layer not in old_manifest["layers"]]
    assert len(changed) == 1 and len(manifest["layers"]) == len(old_manifest["layers"])
    layer = changed[0]
    # new in the registry: that layer, the new config, the new manifest; nothing else
    assert set(new_blobs) == {layer["digest"], manifest["config"]["digest"], second.images[0].digest}
    assert second.images[0].bytes_uploaded == layer["size"] + manifest["config"]["size"]
    assert layer["size"] <= fault_proxy.bytes_up <= 1.05 * layer["size"] + 16 * 1024
    assert first.images[0].digest != second.images[0].digest


def test_new_layers_stream_while_they_are_compressed_and_known_ones_are_checked(
        registry: Registry, image_flake: ImageFlake, unique_repo: str, tmp_path: Path) -> None:
    """A layer the repository's current image lacks is uploaded as it is compressed (one chunked
    PATCH); one it has (its diff_id, named in the archive) is only checked."""
    plan = forge_plan(registry.host, organization=org(unique_repo))
    lines: list[str] = []
    first = registry_push(plan, image_flake, tmp_path, sha="1111111", progress=lines.append)
    streamed = [line for line in lines if "bytes, streamed;" in line]
    assert len(streamed) == first.images[0].layers == 4  # every layer: the repository was empty
    assert first.images[0].bytes_uploaded > 0 and first.verified["amd64-1111111"] == first.deploy_digest
    image_flake.set_payload("changed")
    lines.clear()
    second = registry_push(plan, image_flake, tmp_path, sha="2222222", cache="fresh-cache", progress=lines.append)
    assert len([line for line in lines if "bytes, streamed;" in line]) == 1  # only the changed layer
    assert second.images[0].layers_uploaded == 2  # that layer and the config
    assert skopeo_digest(f"{second.repository}:amd64-2222222") == second.deploy_digest
    lines.clear()
    third = registry_push(plan, image_flake, tmp_path, sha="3333333", cache="fresher-cache", progress=lines.append)
    assert not [line for line in lines if "bytes, streamed;" in line] and third.images[0].bytes_uploaded == 0


@pytest.mark.parametrize("fault", ["reset", "500", "405"])
def test_a_registry_that_refuses_streamed_uploads_gets_every_layer_from_its_file(
        fault: str, registry: Registry, fault_proxy: FaultProxy, image_flake: ImageFlake, unique_repo: str,
        tmp_path: Path) -> None:
    fault_proxy.fail_methods = {"PATCH": fault}
    plan = forge_plan(fault_proxy.host, organization=org(unique_repo))
    lines: list[str] = []
    result = registry_push(plan, image_flake, tmp_path, progress=lines.append)
    (img,) = result.images
    assert fault_proxy.faults >= 4  # every layer tried to stream, and was refused
    assert not [line for line in lines if "bytes, streamed;" in line]
    assert len([line for line in lines if line.startswith("uploaded blob")]) == img.layers_uploaded == 5
    assert skopeo_digest(f"{registry.host}/{org(unique_repo)}/api:amd64-abc1234") == result.deploy_digest


def test_verify_refuses_a_tag_that_resolves_to_another_digest(registry: Registry, image_flake: ImageFlake,
                                                              unique_repo: str, tmp_path: Path) -> None:
    plan = forge_plan(registry.host, organization=org(unique_repo))
    pushed = registry_push(plan, image_flake, tmp_path)
    client = forge_registry.RegistryClient(registry.host, insecure=True)
    name = f"{org(unique_repo)}/api"
    other = "sha256:" + "0" * 64
    assert forge_registry.verify_tags(client, name, pushed.repository, {"amd64-abc1234": pushed.deploy_digest}) == {
        "amd64-abc1234": pushed.deploy_digest}
    with pytest.raises(PushError) as info:
        forge_registry.verify_tags(client, name, pushed.repository, {"amd64-abc1234": other})
    assert f"push of {pushed.repository}:amd64-abc1234 not confirmed" in str(info.value)
    assert f"resolves to {pushed.deploy_digest}, not the {other} just pushed" in str(info.value)
    with pytest.raises(PushError, match="resolves to nothing"):
        forge_registry.verify_tags(client, name, pushed.repository, {"no-such-tag": pushed.deploy_digest})


# ---------------------------------------------------------------------------------------------
# Retry: transient failures retried, others not


def test_backoff_doubles_from_250ms_and_caps_at_30s() -> None:
    policy = forge_registry.RetryPolicy()
    assert policy.attempts == 5
    bases = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert [policy.base_delay(n) for n in range(1, 10)] == bases
    assert all(base / 2 <= policy.delay(n) <= base for n, base in enumerate(bases, 1))  # jittered


@pytest.mark.parametrize(("text", "transient", "reason"), [
    ('pinging container registry 127.0.0.1:50312: invalid status code from registry 503 (Service Unavailable)', True, "HTTP 503"),
    ('writing blob: initiating layer upload to /v2/x/blobs/uploads/ in 127.0.0.1:5000: received unexpected HTTP status: 502 Bad Gateway', True, "HTTP 502"),
    ('Get "http://127.0.0.1:44811/v2/": read tcp 127.0.0.1:52474->127.0.0.1:44811: read: connection reset by peer', True, "connection reset"),
    ('Get "http://127.0.0.1:44811/v2/": EOF', True, "eof"),
    ('dial tcp 127.0.0.1:5000: connect: connection refused', True, "connection refused"),
    ('Put "http://x/v2/a/blobs/uploads/1": net/http: TLS handshake timeout', True, "tls handshake timeout"),
    ('toomanyrequests: rate limit exceeded', True, "toomanyrequests"),
    ('invalid status code from registry 408 (Request Timeout)', True, "HTTP 408"),
    ('unexpected EOF', True, "unexpected eof"),
    ('`skopeo copy ...` did not finish within 2s', True, "did not finish within"),
    ('initializing destination docker://x: unable to retrieve auth token: invalid username/password: unauthorized: authentication required', False, "HTTP 401 (unauthorized)"),
    ('invalid status code from registry 403 (Forbidden)', False, "HTTP 403 (denied)"),
    ('denied: requested access to the resource is denied', False, "HTTP 403 (denied)"),
    ('invalid status code from registry 404 (Not Found)', False, "HTTP 404 (not found)"),
    ('writing manifest: uploading manifest x to 127.0.0.1:5000/a: manifest invalid: manifest invalid', False, "manifest invalid"),
    ('Error parsing image name "oci:/nope:image": open /nope/index.json: no such file or directory', False, "error"),
])
def test_diagnose_classifies_failures(text: str, transient: bool, reason: str) -> None:
    diag = forge_registry.diagnose(text, "ghcr.io/acme/api")
    assert (diag.transient, diag.reason) == (transient, reason)
    assert (diag.hint is None) == transient


def test_diagnose_hints_say_what_to_check() -> None:
    plan = forge_plan("ghcr.io")
    assert "check GHCR_TOKEN or FORGE_REGISTRY_USER/FORGE_REGISTRY_PASSWORD" in (
        forge_registry.diagnose("unauthorized: authentication required", "ghcr.io/acme/api", plan.registry).hint or "")
    assert "write:packages" in (forge_registry.diagnose("403 (Forbidden)", "ghcr.io/acme/api").hint or "")
    assert "registry.organization" in (forge_registry.diagnose("404 (Not Found)", "ghcr.io/acme/api").hint or "")


@pytest.fixture
def oci_image(image_flake: ImageFlake, tmp_path: Path) -> forge_registry.OciImage:
    plan = forge_plan("127.0.0.1:1")
    built = build.run_build(plan, "api", flake=image_flake.ref, push_cache=False)
    return forge_registry.oci_layout(built.images[0], tmp_path / "layouts")


def copy_through(proxy: FaultProxy, oci: forge_registry.OciImage, repo: str, *, attempts: int = 5,
                 timeout: float = 60) -> tuple[str, int]:
    return forge_registry.skopeo_copy(oci.transport_ref, f"{proxy.host}/{repo}:t", insecure=True, authfile=None,
                                secrets=(), policy=forge_registry.RetryPolicy(attempts, 0.01, 0.05), timeout=timeout,
                                repository=f"{proxy.host}/{repo}")


@pytest.mark.parametrize("fault", ["503", "500", "reset", "eof"])
def test_skopeo_copy_retries_transient_failures(fault_proxy: FaultProxy, oci_image: forge_registry.OciImage,
                                                unique_repo: str, fault: str) -> None:
    fault_proxy.inject(fault, 2)
    digest, attempts = copy_through(fault_proxy, oci_image, unique_repo)
    assert digest == oci_image.manifest_digest
    # one attempt may meet both faults (skopeo falls back to a second ping), but it was retried
    assert 2 <= attempts <= 3 and fault_proxy.faults == 2


@pytest.mark.parametrize(("fault", "reason", "hint"), [
    ("403", "HTTP 403 (denied)", "write:packages"),
    ("404", "HTTP 404 (not found)", "registry.host"),
    ("401", "HTTP 401 (unauthorized)", "valid login"),
])
def test_skopeo_copy_does_not_retry_permanent_failures(fault_proxy: FaultProxy, oci_image: forge_registry.OciImage,
                                                       unique_repo: str, fault: str, reason: str, hint: str) -> None:
    fault_proxy.inject(fault, 50)
    with pytest.raises(PushError) as info:
        copy_through(fault_proxy, oci_image, unique_repo)
    assert f"{reason}, not retried (attempt 1)" in str(info.value)
    assert hint in str(info.value)
    assert fault_proxy.pending > 0  # one skopeo run met a few of them, and no second run came


def test_skopeo_copy_gives_up_after_the_configured_attempts(fault_proxy: FaultProxy, oci_image: forge_registry.OciImage,
                                                            unique_repo: str) -> None:
    fault_proxy.inject("503", 10)
    with pytest.raises(PushError) as info:
        copy_through(fault_proxy, oci_image, unique_repo, attempts=3)
    assert "HTTP 503, gave up after 3 attempts" in str(info.value)
    assert "registry.push_attempts" in str(info.value)
    assert fault_proxy.faults >= 3


def test_skopeo_copy_retries_after_a_stalled_connection(fault_proxy: FaultProxy, oci_image: forge_registry.OciImage,
                                                        unique_repo: str) -> None:
    fault_proxy.inject("stall", 1)
    digest, attempts = copy_through(fault_proxy, oci_image, unique_repo, timeout=2)
    assert digest == oci_image.manifest_digest and attempts == 2


def test_client_retries_transient_statuses_and_returns_permanent_ones(fault_proxy: FaultProxy,
                                                                      unique_repo: str) -> None:
    client = forge_registry.RegistryClient(fault_proxy.host, insecure=True, policy=FAST, timeout=5)
    fault_proxy.inject("429", 1)
    fault_proxy.inject("503", 1)
    fault_proxy.inject("reset", 1)
    assert client.manifest_digest(unique_repo, "nope") is None  # 404 after three transient failures
    assert fault_proxy.faults == 3
    fault_proxy.inject("403", 3)  # the proxy injects on new connections; the client keeps its one alive
    client = forge_registry.RegistryClient(fault_proxy.host, insecure=True, policy=FAST, timeout=5)
    with pytest.raises(PushError) as info:
        client.manifest_digest(unique_repo, "nope")
    assert "HTTP 403" in str(info.value) and "(not retried)" in str(info.value)
    assert fault_proxy.faults == 4


def test_run_push_survives_a_flaky_registry(registry: Registry, fault_proxy: FaultProxy, image_flake: ImageFlake,
                                            unique_repo: str, tmp_path: Path) -> None:
    plan = forge_plan(fault_proxy.host, organization=org(unique_repo), architectures=BOTH)
    for fault in ("503", "reset", "502", "eof"):  # four in a row: the fifth attempt gets through
        fault_proxy.inject(fault)
    result = registry_push(plan, image_flake, tmp_path)
    assert fault_proxy.faults == 4
    assert result.index is not None and len(result.verified) == 6
    direct = f"{registry.host}/{org(unique_repo)}/api"
    assert skopeo_digest(f"{direct}:abc1234") == result.index.digest


# ---------------------------------------------------------------------------------------------
# The forge CLI runs these for real


def forge_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    code = "import sys; from forgegen.runtime.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, **(env or {})})


def test_forge_build_and_push_commands_print_reports(registry: Registry, image_flake: ImageFlake,
                                                     unique_repo: str, tmp_path: Path) -> None:
    plan = forge_plan(registry.host, organization=org(unique_repo), architectures=BOTH)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan.to_json())
    built = forge_cli("build", "--plan", str(plan_file), "--source", str(image_flake.path), "api")
    assert built.returncode == 0, built.stderr
    assert [Path(p).name.endswith("-api.tar.gz") for p in built.stdout.split()] == [True, True]

    pushed = forge_cli("push", "--plan", str(plan_file), "--source", str(image_flake.path), "--json", "api",
                       env={"RELEASE_GIT_SHA": "0123456789abcdef"})
    assert pushed.returncode == 0, pushed.stderr
    report = json.loads(pushed.stdout)
    assert report["command"] == "push" and report["deploy_tag"] == "0123456"
    assert report["deploy_digest"] == skopeo_digest(f"{report['repository']}:0123456")
    assert set(report["verified"]) == {"amd64-0123456", "amd64-latest", "arm64-0123456", "arm64-latest",
                                       "0123456", "latest"}
    assert "pushed" in pushed.stderr  # progress goes to stderr


def test_forge_push_exits_1_with_the_reason_when_the_registry_refuses(fault_proxy: FaultProxy,
                                                                      image_flake: ImageFlake,
                                                                      unique_repo: str, tmp_path: Path) -> None:
    plan = forge_plan(fault_proxy.host, organization=org(unique_repo))
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan.to_json())
    fault_proxy.inject("403", 50)
    pushed = forge_cli("push", "--plan", str(plan_file), "--source", str(image_flake.path), "api",
                       env={"RELEASE_GIT_SHA": "0123456"})
    assert pushed.returncode == 1
    assert "HTTP 403" in pushed.stderr and "write:packages" in pushed.stderr
    assert "Traceback" not in pushed.stderr
