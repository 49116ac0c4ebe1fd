"""Push Nix-built images to an OCI registry, under deterministic tags, and prove they are there.

How a push goes (``run_push``):

1. **Image layout.** The build output (a docker-archive, gzip'd or not, or a ``streamLayeredImage``
   script's stream) is read once and written as an OCI image layout with gzip'd layers
   (deterministic: same layer, same bytes, same digest, on any machine). It is cached under
   ``$XDG_CACHE_HOME/forge/oci/<store path name>``, so a re-push does no work at all. Because the
   compressed digests are known before pushing, the layers of the repository's current image are
   never uploaded again, even from a fresh CI machine (a layer only an older image has is: it is
   streamed before its digest is known), and the manifest digest is known before the registry sees it.
2. **Send.** While the layout is written, layers go up: one the repository's current images
   (``<arch>-latest``) do not have, by its diff_id (the archive names each layer after it), is
   streamed as it is compressed (a chunked ``PATCH``, its digest ``PUT`` at the end; on any
   failure it is uploaded from its file instead); every other one is checked once it is complete
   and uploaded when the registry lacks it. Then, with ``registry.push_with: forge`` (the default), Forge's own
   client uploads what is still missing (usually only the config) and puts the manifest under
   ``<arch>-<sha7>``: the registry must store it under the digest computed here. With
   ``push_with: skopeo``, ``skopeo copy --preserve-digests oci:<layout> docker://<repo>:<arch>-<sha7>``
   does that part, with credentials in a temporary auth file (mode 0600, removed afterwards),
   never on the command line. Skipped when the registry already has that manifest: then only the
   tag is written.
3. **Tags.** ``<arch>-latest`` gets the same manifest; with several architectures an OCI image
   index goes to ``<sha7>`` and ``latest`` through the distribution API (``PUT /v2/<name>/manifests/<tag>``).
4. **Verify.** Every tag is resolved (``HEAD /v2/<name>/manifests/<tag>``); a tag that does not
   resolve to the digest just pushed fails the push.

Retry: only transient failures (HTTP 5xx, 408, 421, 429, connection refused/reset, timeouts,
unexpected EOF) are retried, with exponential backoff from 250 ms capped at 30 s, up to
``registry.push_attempts`` attempts. 401/403/404 and invalid manifests fail at once, saying what
to check. The HTTP side is :mod:`forgegen.transport` (pooled urllib3).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from forgegen import process
from forgegen.errors import CommandError, PushError, ToolMissing
from forgegen.plan import Plan, RegistryPlan
from forgegen.runtime.build import BuildResult, run_build
from forgegen.runtime.credentials import (
    Credentials,
    auth_file,
    credential_variables,
    resolve_credentials,
    stored_credentials,
)
from forgegen.runtime.oci import (
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    OciImage,
    image_index,
    oci_layout,
)
from forgegen.runtime.registry_api import (
    DEFAULT_HTTP_TIMEOUT,
    Diagnosis,
    RegistryClient,
    RetryPolicy,
    diagnose,
    diagnose_status,
    permanent_hint,
)
from forgegen.runtime.tags import SourceRevision, arch_of, image_tags

# The push API, and what callers used to find here before the split (credentials, OCI layout,
# registry client): re-exported on purpose.
__all__ = [
    "DEFAULT_ATTEMPT_TIMEOUT", "DEFAULT_HTTP_TIMEOUT", "MEDIA_OCI_INDEX", "MEDIA_OCI_MANIFEST", "Credentials",
    "Diagnosis", "OciImage", "PushResult", "PushedImage", "PushedIndex", "RegistryClient", "RetryPolicy",
    "auth_file", "credential_variables", "diagnose", "diagnose_status", "image_index", "oci_layout",
    "permanent_hint", "resolve_credentials", "run_push", "skopeo_copy", "stored_credentials", "verify_tags",
]

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

DEFAULT_ATTEMPT_TIMEOUT = 1800.0  # one skopeo copy


# ---------------------------------------------------------------------------------------------
# skopeo


def skopeo_copy(source: str, dest: str, *, insecure: bool, authfile: str | None, secrets: Sequence[str],
                policy: RetryPolicy, timeout: float, repository: str, registry: RegistryPlan | None = None,
                progress: Progress | None = None, unset_env: Sequence[str] = ()) -> tuple[str, int]:
    """``skopeo copy --preserve-digests SOURCE docker://DEST``, retried on transient failures.

    Credentials reach skopeo only through ``authfile``; ``unset_env`` (the variables that held
    them) are removed from its environment. Returns the pushed manifest digest and the number
    of attempts it took.
    """
    say = progress or log.info
    with tempfile.TemporaryDirectory(prefix="forge-skopeo-") as tmp:
        digestfile = os.path.join(tmp, "digest")
        argv = ["skopeo", "copy", "--quiet", "--preserve-digests", "--digestfile", digestfile,
                f"--dest-tls-verify={'false' if insecure else 'true'}"]
        if authfile:
            argv += ["--authfile", authfile]
        argv += [source, f"docker://{dest}"]
        for attempt in range(1, policy.attempts + 1):
            try:
                process.run(argv, timeout=timeout, secrets=secrets, what=f"push {dest}", unset=unset_env)
            except ToolMissing as err:
                raise ToolMissing(f"cannot push {dest}: skopeo is not on PATH", argv=err.argv,
                                  hint="install skopeo (apt-get install skopeo), or run through `nix run .#push:<service>`") from err
            except CommandError as err:
                text = err.stderr or err.message
                diag = diagnose(text, repository, registry)
                last_line = _last_line(text)
                if not diag.transient:
                    raise PushError(f"cannot push {dest}: {diag.reason}, not retried (attempt {attempt}): {last_line}"
                                    f"\n  {process.failure('skopeo', err)}",
                                    hint=diag.hint) from err
                if attempt == policy.attempts:
                    raise PushError(f"cannot push {dest}: {diag.reason}, gave up after {attempt} attempts: {last_line}"
                                    f"\n  {process.failure('skopeo', err)}",
                                    hint=f"the registry keeps failing; check its status, or raise registry.push_attempts "
                                         f"(now {policy.attempts})") from err
                delay = policy.delay(attempt)
                say(f"push {dest}: {diag.reason} (attempt {attempt} of {policy.attempts}); retrying in {delay:.2f}s")
                time.sleep(delay)
                continue
            digest = Path(digestfile).read_text().strip()
            return digest, attempt
    raise AssertionError("unreachable")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else "(no output)"
    m = re.search(r'msg="(.*)"\s*$', line)
    return (m.group(1).replace('\\"', '"') if m else line)[:500]


# ---------------------------------------------------------------------------------------------
# run_push


@dataclass(frozen=True)
class PushedImage:
    system: str
    arch: str
    digest: str
    tags: tuple[str, ...]
    layers: int
    layers_uploaded: int  # blobs the registry lacked before this push (config + layers)
    bytes_uploaded: int
    copied: bool  # False: the registry already had this manifest, only tags were written
    attempts: int

    def to_json(self, repository: str) -> dict[str, Any]:
        return {"system": self.system, "arch": self.arch, "digest": self.digest, "tags": list(self.tags),
                "reference": f"{repository}@{self.digest}", "layers": self.layers,
                "blobs_uploaded": self.layers_uploaded, "bytes_uploaded": self.bytes_uploaded,
                "copied": self.copied, "attempts": self.attempts}


@dataclass(frozen=True)
class PushedIndex:
    digest: str
    tags: tuple[str, ...]
    manifests: tuple[str, ...]

    def to_json(self, repository: str) -> dict[str, Any]:
        return {"digest": self.digest, "tags": list(self.tags), "manifests": list(self.manifests),
                "reference": f"{repository}@{self.digest}", "media_type": MEDIA_OCI_INDEX}


@dataclass(frozen=True)
class PushResult:
    service: str
    repository: str
    source_commit: str
    images: tuple[PushedImage, ...]
    index: PushedIndex | None
    deploy_tag: str
    deploy_digest: str
    verified: Mapping[str, str]  # tag -> digest, read back from the registry
    credentials: str | None  # where credentials came from (names only), None for anonymous
    seconds: float

    @property
    def deploy_reference(self) -> str:
        return f"{self.repository}:{self.deploy_tag}@{self.deploy_digest}"

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "repository": self.repository, "source_commit": self.source_commit,
                "images": [i.to_json(self.repository) for i in self.images],
                "index": self.index.to_json(self.repository) if self.index else None,
                "deploy_tag": self.deploy_tag, "deploy_digest": self.deploy_digest,
                "deploy_reference": self.deploy_reference, "verified": dict(self.verified),
                "credentials_from": self.credentials, "push_seconds": round(self.seconds, 3)}


def run_push(plan: Plan, service: str, *, revision: SourceRevision, build: BuildResult | None = None,
             flake: str = ".", policy: RetryPolicy | None = None,
             attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT, http_timeout: float = DEFAULT_HTTP_TIMEOUT,
             cache_dir: Path | None = None, progress: Progress | None = None,
             env: Mapping[str, str] | None = None, live: Progress | None = None) -> PushResult:
    """Push ``service``'s built images under ``<arch>-<sha7>``/``<arch>-latest`` (+ index); verify every tag.

    ``progress`` gets a line per step and per uploaded blob; ``live`` (a terminal's replaceable
    line) the bytes of the blob being uploaded as they go."""
    svc = plan.service(service)
    say = progress or log.info
    if build is None:
        build = run_build(plan, service, flake=flake, progress=progress, env=env, live=live)
    tags = image_tags(revision.sha7, svc.image.architectures)
    repository = svc.image.repository
    host, _, name = repository.partition("/")
    policy = policy or RetryPolicy(attempts=plan.registry.push_attempts)
    # Forge's variables first; then what skopeo/docker would find (credHelpers, credsStore, auths),
    # handed to skopeo in the same private auth file, so both read the same login.
    credentials = resolve_credentials(plan.registry, env) or stored_credentials(host, env)
    client = RegistryClient(host, insecure=plan.registry.insecure, credentials=credentials, policy=policy,
                            timeout=http_timeout, registry=plan.registry)
    start = time.monotonic()
    known = _known_layers(client, name, [tags.per_arch[system][1] for system in svc.image.architectures])
    early = _EarlyUploads(client.sibling(), name, say, live, known)
    images = _prepare_images(build, svc.image.architectures, cache_dir, early, say)

    pushed: list[PushedImage] = []
    expected: dict[str, str] = {}
    # skopeo gets the credentials in a private auth file; Forge's own client needs none
    with auth_file(host, credentials) if plan.registry.push_with == "skopeo" else nullcontext() as authfile:
        secrets = credentials.secrets() if credentials else ()
        for system, oci in images:
            sha_tag, latest = tags.per_arch[system]
            missing = [(d, s) for d, s in oci.blobs if d not in early.present and not client.blob_exists(name, d)]
            lacked = missing + [(d, s) for d, s in oci.blobs if d in early.uploaded]  # before this push
            attempts, copied = 0, False
            if missing or client.manifest_digest(name, oci.manifest_digest) is None:
                say(f"pushing {repository}:{sha_tag} ({len(missing)} of {len(oci.blobs)} blobs to upload, "
                    f"{sum(s for _, s in missing)} bytes)")
                copied = True
                if plan.registry.push_with == "skopeo":
                    attempts = _send_with_skopeo(plan, oci, f"{repository}:{sha_tag}", authfile, secrets, policy,
                                                 attempt_timeout, say)
                else:
                    retries = len(client.waits)
                    _send_direct(client, name, sha_tag, oci, missing, say, live)
                    attempts = 1 + len(client.waits) - retries
            else:
                say(f"{repository} already has the {system} image {oci.manifest_digest}; tagging {sha_tag}")
                client.put_manifest(name, sha_tag, MEDIA_OCI_MANIFEST, oci.manifest)
            expected[sha_tag] = oci.manifest_digest
            expected[latest] = oci.manifest_digest
            pushed.append(PushedImage(system, arch_of(system), oci.manifest_digest,
                                      (sha_tag, latest), len(oci.blobs) - 1, len(lacked),
                                      sum(s for _, s in lacked), copied, attempts))
        index = None
        if tags.index:
            body = image_index([oci for _, oci in images])
            index_digest = "sha256:" + hashlib.sha256(body).hexdigest()
            say(f"pushing the image index {repository}:{tags.index[0]} ({len(images)} architectures)")
            client.put_manifest(name, tags.index[0], MEDIA_OCI_INDEX, body)
            index = PushedIndex(index_digest, tags.index, tuple(oci.manifest_digest for _, oci in images))
            expected[tags.index[0]] = index_digest
            expected[tags.index[1]] = index_digest
        # The sha tags first and proven; only then move the moving tags.
        sha_tags = [t for t in expected if not t.endswith("latest")]
        verified = verify_tags(client, name, repository, {t: expected[t] for t in sha_tags})
        for system, oci in images:
            client.put_manifest(name, tags.per_arch[system][1], MEDIA_OCI_MANIFEST, oci.manifest)
        if index is not None:
            client.put_manifest(name, index.tags[1], MEDIA_OCI_INDEX, image_index([oci for _, oci in images]))
        verified.update(verify_tags(client, name, repository, {t: d for t, d in expected.items() if t not in verified}))
    deploy_digest = expected[tags.deploy_tag]
    say(f"pushed {repository}:{tags.deploy_tag}@{deploy_digest}; {len(verified)} tags verified")
    return PushResult(svc.name, repository, revision.sha7, tuple(pushed), index, tags.deploy_tag, deploy_digest,
                      verified, credentials.source if credentials else None, time.monotonic() - start)


def _send_with_skopeo(plan: Plan, oci: OciImage, dest: str, authfile: str | None, secrets: Sequence[str],
                      policy: RetryPolicy, timeout: float, say: Progress) -> int:
    """``skopeo copy`` of the layout to ``dest`` (``registry.push_with: skopeo``); its attempts."""
    digest, attempts = skopeo_copy(oci.transport_ref, dest, insecure=plan.registry.insecure, authfile=authfile,
                                   secrets=secrets, policy=policy, timeout=timeout, repository=dest.rpartition(":")[0],
                                   registry=plan.registry, progress=say, unset_env=credential_variables(plan.registry))
    if digest != oci.manifest_digest:
        raise PushError(f"skopeo pushed {dest} as {digest}, not {oci.manifest_digest}",
                        hint="the manifest was rewritten on the way; check the registry keeps OCI manifests as sent")
    return attempts


def _send_direct(client: RegistryClient, name: str, tag: str, oci: OciImage, missing: Sequence[tuple[str, int]],
                 say: Progress, live: Progress | None) -> None:
    """Forge's own push (``registry.push_with: forge``, the default): the blobs the registry lacks
    (usually only the config: the layers went up during conversion) from the layout, then the
    manifest under ``tag``; the registry must store it under the digest Forge computed."""
    for digest, size in missing:
        with open(oci.layout / "blobs" / "sha256" / digest.removeprefix("sha256:"), "rb") as blob:
            _upload(client, name, digest, blob, size, live)
        say(f"uploaded blob {digest[:19]} ({size} bytes)")
    client.put_manifest(name, tag, MEDIA_OCI_MANIFEST, oci.manifest)


def _prepare_images(build: BuildResult, systems: Sequence[str], cache_dir: Path | None, early: _EarlyUploads,
                    say: Progress) -> list[tuple[str, OciImage]]:
    """Each architecture's OCI layout; layers converted now are uploaded meanwhile by ``early``."""
    try:
        images: list[tuple[str, OciImage]] = []
        for system in systems:
            built = build.image(system)
            say(f"preparing {system} image from {built.store_path}")
            images.append((system, oci_layout(built, cache_dir, on_blob=early)))
    finally:
        early.wait()
    return images


def _upload(client: RegistryClient, name: str, digest: str, blob: IO[bytes], size: int,
            live: Progress | None) -> None:
    """Upload one blob from its open file; a terminal's ``live`` line shows the bytes as they go."""
    client.upload_blob(name, digest, _Counting(blob, size, f"uploading {digest[:19]}", live) if live else blob, size)
    if live:
        live("")


class _Counting:
    """A blob being read for upload, telling ``live`` the bytes sent every MiB."""

    def __init__(self, blob: IO[bytes], size: int, what: str, live: Progress) -> None:
        self.blob, self.size, self.what, self.live = blob, size, what, live
        self.sent, self._shown = 0, -1

    def read(self, n: int = -1) -> bytes:
        data = self.blob.read(n)
        self.sent += len(data)
        if self.sent >> 20 != self._shown:
            self._shown = self.sent >> 20
            self.live(f"{self.what}: {self.sent / 2**20:.1f} of {self.size / 2**20:.1f} MiB")
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self.sent = 0
        return self.blob.seek(offset, whence)


def _known_layers(client: RegistryClient, name: str, tags: Sequence[str]) -> set[str]:
    """The layers (uncompressed digests, ``diff_ids``) of the images the repository's moving tags
    name now: the layers a push of the next commit most likely finds there. Empty when there are
    none yet, or they cannot be read (a hint only: every such blob is still checked)."""
    known: set[str] = set()
    for tag in tags:
        try:
            got = client.get_manifest(name, tag)
            config = json.loads(got[1]).get("config", {}).get("digest") if got else None
            blob = client.get_blob(name, config) if isinstance(config, str) else None
            diff_ids = json.loads(blob).get("rootfs", {}).get("diff_ids", []) if blob else []
        except (PushError, ValueError, AttributeError) as err:
            log.debug("cannot read the layers of %s:%s: %s", name, tag, err)
            continue
        known.update(d for d in diff_ids if isinstance(d, str))
    return known


class _Streamed:
    """A layer uploaded while it is compressed: a thread sends its bytes as they come (one chunked
    ``PATCH``); :meth:`finish` puts the digest once it is known. On any failure the layer is
    uploaded from its file afterwards instead, as if it had not been streamed."""

    _IN_FLIGHT = 32  # blocks (up to 1 MiB each) queued at most: compression waits for a slow registry

    def __init__(self, client: RegistryClient, name: str, live: Progress | None) -> None:
        self.client, self.name, self.live = client, name, live
        self.sent = 0
        self.ended = False  # the compressor's b"" was read
        self.failed: BaseException | None = None
        self.location: str | None = None
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=self._IN_FLIGHT)
        self._thread = threading.Thread(target=self._run, name="forge-stream", daemon=True)
        self._thread.start()

    def __call__(self, data: bytes) -> None:
        """The next compressed bytes; ``b""`` ends them."""
        self._queue.put(data)

    def _chunks(self) -> Iterator[bytes]:
        while data := self._queue.get():
            self.sent += len(data)
            if self.live:
                self.live(f"uploading a layer as it is compressed: {self.sent / 2**20:.1f} MiB")
            yield data
        self.ended = True

    def _run(self) -> None:
        try:
            self.location = self.client.stream_upload(self.name, self._chunks())
        except BaseException as err:  # noqa: BLE001 - reported by finish(); the file upload takes over
            self.failed = err
            while not self.ended:  # what was not sent is drained, so the compressor never waits on it
                self.ended = not self._queue.get()

    def finish(self, digest: str) -> bool:
        """Once the compressor ended the bytes: whether the registry now has ``digest``."""
        self._thread.join()
        if self.live:
            self.live("")
        if self.failed is None and self.location is not None:
            try:
                self.client.finish_upload(self.name, self.location, digest)
                return True
            except PushError as err:
                self.failed = err
        log.info("streaming blob %s failed (%s); uploading it from its file", digest[:19], self.failed)
        return False


class _EarlyUploads:
    """Layers uploaded while the image is still being converted. A layer none of the repository's
    current images has (``known``: their diff_ids; the archive names each layer by its diff_id) is
    streamed to the registry while it is compressed; every other blob is checked as soon as it is
    written and uploaded when missing, by a background thread. Conversion and upload overlap, so a
    cold push costs about the longer of the two; the config and manifest follow (Forge's client,
    or skopeo, which finds the layers there). ``uploaded``: what the registry lacked (digest -> size)."""

    def __init__(self, client: RegistryClient, name: str, say: Progress, live: Progress | None = None,
                 known: set[str] | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.client, self.name, self.say, self.live = client, name, say, live
        self.known = known
        self.uploaded: dict[str, int] = {}
        self.present: set[str] = set()  # checked or uploaded by this push
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forge-upload")
        self._futures: list[Any] = []
        self._streamed: _Streamed | None = None  # the layer being compressed, when it is streamed

    def starting(self, diff_id: str | None) -> Callable[[bytes], None] | None:
        """Stream the layer when the repository's current images do not have it (None: check it
        once it is compressed: an unnamed layer, or one the registry likely has)."""
        if self.known is None or diff_id is None or diff_id in self.known:
            return None
        self._streamed = _Streamed(self.client.sibling(), self.name, self.live)
        return self._streamed

    def __call__(self, digest: str, path: Path, size: int) -> None:
        blob = open(path, "rb")  # opened now: the layout's directory is renamed when it is complete
        streamed, self._streamed = self._streamed, None
        self._futures.append(self._pool.submit(self._one, digest, blob, size, streamed))

    def _one(self, digest: str, blob: IO[bytes], size: int, streamed: _Streamed | None = None) -> None:
        with blob:
            if streamed is not None and streamed.finish(digest):
                self.uploaded[digest] = size
                self.say(f"uploaded blob {digest[:19]} ({size} bytes, streamed; {len(self.uploaded)} blobs, "
                         f"{sum(self.uploaded.values())} bytes so far)")
            elif not self.client.blob_exists(self.name, digest):
                _upload(self.client, self.name, digest, blob, size, self.live)
                self.uploaded[digest] = size
                self.say(f"uploaded blob {digest[:19]} ({size} bytes; {len(self.uploaded)} blobs, "
                         f"{sum(self.uploaded.values())} bytes so far)")
            self.present.add(digest)

    def wait(self) -> None:
        """Wait for every upload; the first failure is raised."""
        try:
            for future in self._futures:
                future.result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def verify_tags(client: RegistryClient, name: str, repository: str, expected: Mapping[str, str]) -> dict[str, str]:
    verified: dict[str, str] = {}
    for tag, digest in expected.items():
        got = client.manifest_digest(name, tag)
        if got != digest:
            raise PushError(
                f"push of {repository}:{tag} not confirmed: the tag resolves to {got or 'nothing'}, "
                f"not the {digest} just pushed",
                hint="another push may have moved the tag, or the registry did not keep it; push again, "
                     "and deploy by digest (repository@digest) to be safe")
        verified[tag] = got
    return verified
