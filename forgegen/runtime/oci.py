"""Nix's image archives as OCI image layouts: converted once per store path, deterministic bytes.

The build output (a docker-archive, gzip'd or not, or a ``streamLayeredImage`` script's stream)
is read once and written as an OCI image layout with gzip'd layers (same layer, same bytes, same
digest, for the same deflate implementation: every machine running Forge's Nix package, which
pins zlib; another zlib build such as zlib-ng writes other valid bytes). It is cached under
``$XDG_CACHE_HOME/forge/oci/<store path name>.<compressor fingerprint>``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from forgegen import process
from forgegen.errors import PushError
from forgegen.runtime import cache_dir
from forgegen.runtime.build import BuiltImage

if TYPE_CHECKING:
    from concurrent.futures import Future

MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = ", ".join([MEDIA_OCI_MANIFEST, MEDIA_OCI_INDEX, MEDIA_DOCKER_MANIFEST, MEDIA_DOCKER_LIST])
LAYER_COMPRESS_LEVEL = 6
_CACHE_KEEP = 16


# ---------------------------------------------------------------------------------------------
# OCI image layout from a docker-archive (file or stream)


@dataclass(frozen=True)
class OciImage:
    """An image as an OCI layout on disk, with everything needed to push and verify it."""

    layout: Path
    ref: str
    manifest: bytes
    config_digest: str
    platform: Mapping[str, str]
    blobs: tuple[tuple[str, int], ...]  # config first, then layers: (digest, compressed size)

    @property
    def manifest_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()

    @property
    def transport_ref(self) -> str:
        return f"oci:{self.layout}:{self.ref}"


def _cache_root() -> Path:
    return cache_dir("oci")


def compressor_fingerprint() -> str:
    """What the layer bytes depend on besides the content: a digest of this deflate's output for
    a fixed sample (zlib's version string alone does not tell zlib-ng or a SIMD build apart)."""
    global _FINGERPRINT
    if _FINGERPRINT is None:
        sample = b"".join(b"forge %d layer sample %d\n" % (n, n * n % 977) for n in range(6000))
        packed = _deflate_block(sample, b"", False) + _deflate_block(sample, sample[-_WINDOW:], True)
        _FINGERPRINT = hashlib.sha256(packed).hexdigest()[:12]
    return _FINGERPRINT


_FINGERPRINT: str | None = None


def layout_key(store_path: str) -> str:
    """The cache entry of a store path's layout: the store path name and the compressor's fingerprint."""
    return f"{Path(store_path).name}.{compressor_fingerprint()}"


class BlobReady(Protocol):
    """Hears of each blob of a layout being made (to upload it meanwhile)."""

    def starting(self, diff_id: str | None) -> Callable[[bytes], None] | None:
        """A layer is about to be compressed; ``diff_id`` is what its name in the archive says its
        uncompressed digest is (nixpkgs names layers ``<diff_id>/layer.tar``), None when it does
        not. The answer, when not None, gets the layer's compressed bytes as they are written."""

    def __call__(self, digest: str, path: Path, size: int) -> None:
        """The blob ``digest`` is complete in ``path``."""


def oci_layout(image: BuiltImage, cache_dir: Path | None = None, on_blob: BlobReady | None = None) -> OciImage:
    """The OCI layout of a built image, made once per store path and then reused. While it is
    made, ``on_blob`` hears of each layer blob as soon as it is written (to upload it meanwhile)."""
    root = cache_dir or _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    dest = root / layout_key(image.store_path)
    if (dest / "index.json").is_file():
        os.utime(dest)
        return _load_layout(dest)
    # One conversion of a store path at a time, across threads and processes (a release pushes
    # several services at once, and they may share an image): the second one finds it done.
    fd = os.open(root / f".{dest.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not (dest / "index.json").is_file():
            _convert_into(image, root, dest, on_blob)
            _prune(root, keep=dest)
        os.utime(dest)
        return _load_layout(dest)
    finally:
        os.close(fd)  # releases the lock


def _convert_into(image: BuiltImage, root: Path, dest: Path, on_blob: BlobReady | None) -> None:
    process.remove_stale_temp(root, ".tmp-")
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-", dir=root))
    try:
        if image.kind == "stream":
            _convert_stream(image.store_path, work, on_blob)
        else:
            with open(image.store_path, "rb") as f:
                _convert(f, work, image.store_path, on_blob)
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


_IN_USE = 3600.0  # seconds: a layout used this recently may be in use by another push; never pruned


def _prune(root: Path, keep: Path) -> None:
    """Keep the newest layouts (and any used in the last hour: another push may be reading it)."""
    entries = sorted((p for p in root.iterdir() if p.is_dir() and p != keep and not p.name.startswith(".tmp-")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    now = time.time()
    for old in entries[_CACHE_KEEP - 1:]:
        if now - old.stat().st_mtime > _IN_USE:
            shutil.rmtree(old, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                (root / f".{old.name}.lock").unlink()


def _convert_stream(script: str, dest: Path, on_blob: BlobReady | None = None) -> None:
    with tempfile.TemporaryFile() as errors:
        proc = process.spawn([script], stdout=process.PIPE, stderr=errors.fileno())
        assert proc.stdout is not None
        try:
            _convert(proc.stdout, dest, script, on_blob)
        finally:
            proc.stdout.close()
            rc = proc.wait()
        if rc != 0:
            errors.seek(0)
            text = errors.read().decode(errors="replace").strip()[-2000:]
            raise PushError(f"the image stream {script} exited with {rc}: {text}",
                            hint=f"run `{script} | tar t` to see what it writes")


def _convert(stream: IO[bytes], dest: Path, source: str, on_blob: BlobReady | None = None) -> None:
    """Read a docker-archive tar stream (any member order); write an OCI layout to ``dest``."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layers: dict[str, tuple[str, str, int]] = {}  # member name -> (diff_id, digest, size)
    small: dict[str, bytes] = {}
    try:
        tar = tarfile.open(fileobj=stream, mode="r|*", bufsize=BLOCK)
    except tarfile.TarError as err:
        raise PushError(f"{source} is not a docker-archive: {err}",
                        hint="the image package must be dockerTools.buildLayeredImage or streamLayeredImage") from err
    with tar:
        for member in tar:
            if not member.isfile():
                continue
            f: Any = tar.extractfile(member)
            assert f is not None
            name = os.path.normpath(member.name)
            if name.endswith(".json") or name in ("repositories", "oci-layout") or member.size <= 4096:
                data = f.read()
                small[name] = data
                if name.endswith(".json") or name in ("repositories", "oci-layout"):
                    continue
                f = _BytesReader(data)
            hint = _NAMED_LAYER.fullmatch(name)
            tee = on_blob.starting("sha256:" + hint.group(1) if hint else None) if on_blob is not None else None
            try:
                layers[name] = compress_layer(f, blobs, tee=tee)
            finally:
                if tee is not None:
                    tee(b"")  # the end of the layer's bytes (also when compressing failed)
            if on_blob is not None:
                digest, size = layers[name][1], layers[name][2]
                on_blob(digest, blobs / digest.split(":")[1], size)
    try:
        entry = json.loads(small["manifest.json"])[0]
        config = small[os.path.normpath(entry["Config"])]
        layer_names = [os.path.normpath(n) for n in entry["Layers"]]
        config_doc = json.loads(config)
    except (KeyError, IndexError, ValueError, TypeError) as err:
        raise PushError(f"{source} is not a docker-archive: no usable manifest.json ({err})",
                        hint="the image package must be dockerTools.buildLayeredImage or streamLayeredImage") from err
    missing = [n for n in layer_names if n not in layers]
    if missing:
        raise PushError(f"{source}: manifest.json names layers the archive lacks: {', '.join(missing)}")
    diff_ids = [layers[n][0] for n in layer_names]
    declared = config_doc.get("rootfs", {}).get("diff_ids", [])
    if declared and declared != diff_ids:
        raise PushError(f"{source}: the layers do not match the image config's diff_ids",
                        hint="the archive is corrupt; rebuild it (nix build --rebuild)")
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    (blobs / config_digest.split(":")[1]).write_bytes(config)
    if on_blob is not None:
        on_blob(config_digest, blobs / config_digest.split(":")[1], len(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": MEDIA_OCI_LAYER_GZIP, "digest": layers[n][1], "size": layers[n][2]}
                   for n in layer_names],
    }
    manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    (blobs / manifest_digest.split(":")[1]).write_bytes(manifest_bytes)
    for name, (_, digest, _) in list(layers.items()):
        if name not in layer_names:  # something else in the archive: not part of the image
            with contextlib.suppress(FileNotFoundError):
                (blobs / digest.split(":")[1]).unlink()
    platform = {"architecture": str(config_doc.get("architecture", "")), "os": str(config_doc.get("os", "linux"))}
    if config_doc.get("variant"):
        platform["variant"] = str(config_doc["variant"])
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": MEDIA_OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest_bytes),
        "platform": platform, "annotations": {"org.opencontainers.image.ref.name": "image"}}]}
    (dest / "index.json").write_text(json.dumps(index, separators=(",", ":")))


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        chunk = self._data[self._pos:end]
        self._pos += len(chunk)
        return chunk


_NAMED_LAYER = re.compile(r"([0-9a-f]{64})/layer\.tar")


def compress_layer(f: Any, blobs: Path, *, workers: int | None = None,
                   tee: Callable[[bytes], None] | None = None) -> tuple[str, str, int]:
    """gzip a layer deterministically into ``blobs``; (diff_id, digest, size). gzip'd input is kept.
    ``tee`` gets the compressed bytes as they are written."""
    first = f.read(BLOCK)
    raw_hash, out_hash = hashlib.sha256(), hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(dir=blobs, prefix=".layer-")
    with os.fdopen(fd, "wb") as out:
        def emit(packed: bytes) -> None:
            nonlocal size
            out_hash.update(packed)
            out.write(packed)
            size += len(packed)
            if tee is not None and packed:
                tee(packed)

        if first[:2] == b"\x1f\x8b":  # already gzip'd: keep the bytes, hash what they unpack to
            decompressor = zlib.decompressobj(47)
            chunk = first
            while chunk:
                raw_hash.update(decompressor.decompress(chunk))
                emit(chunk)
                chunk = f.read(BLOCK)
        else:
            _gzip_blocks(f, first, raw_hash, emit, workers)
    os.replace(tmp, blobs / out_hash.hexdigest())
    return "sha256:" + raw_hash.hexdigest(), "sha256:" + out_hash.hexdigest(), size


# Layers are gzip'd the way pigz does it: fixed 1 MiB blocks, each deflated on its own (in
# parallel: zlib releases the GIL) with the previous 32 KiB as dictionary and joined by sync
# flushes into one gzip member. A block that does not compress (a sample of it deflates to
# more than 95 %) is stored. Every choice depends only on the bytes, so the output, and so the
# digest, is the same for any number of threads and on every machine with the same deflate
# (tests/test_oci_determinism.py compares with GNU gzip and other zlib settings).
BLOCK = 1 << 20
_WINDOW = 32 * 1024
_SAMPLE = 16 * 1024
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"  # deflate, no name, mtime 0, Unix


def _deflate_block(block: bytes, dictionary: bytes, last: bool) -> bytes:
    sample = block[:_SAMPLE]
    probe = zlib.compressobj(1, zlib.DEFLATED, -15)
    stored = len(probe.compress(sample) + probe.flush()) > 0.95 * len(sample)
    level = 0 if stored else LAYER_COMPRESS_LEVEL
    c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, dictionary) if dictionary \
        else zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(block) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _gzip_blocks(f: Any, first: bytes, raw_hash: Any, emit: Callable[[bytes], None], workers: int | None) -> None:
    """A pipeline: this thread reads (inflating Nix's archive), one thread hashes the raw bytes in
    order, ``workers`` deflate blocks, one thread writes them in order. hashlib, zlib and file
    writes release the GIL, so the stages overlap; the output is the same as done one by one."""
    from concurrent.futures import ThreadPoolExecutor

    state = {"crc": 0}

    def hash_block(block: bytes) -> None:
        raw_hash.update(block)
        state["crc"] = zlib.crc32(block, state["crc"])

    length = 0
    emit(_GZIP_HEADER)
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool, ThreadPoolExecutor(max_workers=1) as hasher, \
            ThreadPoolExecutor(max_workers=1) as writer:
        written: list[Future[None]] = []
        block, dictionary = first, b""
        while True:
            following = f.read(BLOCK) if block else b""
            hashed = hasher.submit(hash_block, block)
            length += len(block)
            last = not following
            deflated = pool.submit(_deflate_block, block, dictionary, last)
            written.append(writer.submit(_emit_when_done, emit, deflated))
            if len(written) > 2 * workers:
                written.pop(0).result()
            if last:
                break
            dictionary = block[-_WINDOW:]
            block = following
        for done in written:
            done.result()
        hashed.result()  # the hasher runs in order: the last one done means all are
    emit(state["crc"].to_bytes(4, "little") + (length & 0xFFFFFFFF).to_bytes(4, "little"))


def _load_layout(dest: Path) -> OciImage:
    index = json.loads((dest / "index.json").read_text())
    desc = index["manifests"][0]
    manifest = (dest / "blobs" / "sha256" / desc["digest"].split(":")[1]).read_bytes()
    doc = json.loads(manifest)
    blobs = ((doc["config"]["digest"], int(doc["config"]["size"])),) + tuple(
        (layer["digest"], int(layer["size"])) for layer in doc["layers"])
    return OciImage(dest, desc["annotations"]["org.opencontainers.image.ref.name"], manifest,
                    doc["config"]["digest"], dict(desc.get("platform", {})), blobs)


def image_index(images: Sequence[OciImage]) -> bytes:
    """An OCI image index over the per-architecture manifests (deterministic bytes)."""
    doc = {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": [
        {"mediaType": MEDIA_OCI_MANIFEST, "digest": img.manifest_digest, "size": len(img.manifest),
         "platform": dict(img.platform)} for img in images]}
    return json.dumps(doc, separators=(",", ":")).encode()


def _emit_when_done(emit: Callable[[bytes], None], deflated: Future[bytes]) -> None:
    """The writer thread's task: write one block once its compression is done (in order)."""
    emit(deflated.result())
