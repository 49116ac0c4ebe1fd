"""What the converted layers' bytes depend on, compared with other compressors.

What holds (and what the README promises):
* a layer's uncompressed content (its diff_id) is the same whatever compressed it, and Forge's
  gzip is standard: ``gzip -d`` and Python's gzip read it back exactly;
* Forge's bytes are a function of the content and the deflate implementation only: the same on
  every run, for any number of threads;
* another deflate (GNU gzip's own, or zlib with other settings, or zlib-ng) gives other valid
  bytes, so another digest: the layout cache is keyed on a fingerprint of the compressor, so
  layouts made by two builds never mix.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import shutil
import subprocess
import zlib
from pathlib import Path

from forgegen.runtime import oci


def _layer() -> bytes:
    rng = random.Random(42)
    text = b"".join(b"line %d of a config file with some words in it\n" % n for n in range(40_000))
    return text + rng.randbytes(1_500_000) + text[: 700_000]  # compressible, random, compressible: 3.5 MiB


def test_layer_bytes_depend_only_on_content_and_compressor(tmp_path: Path) -> None:
    layer = _layer()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    outputs = {}
    for workers in (1, 2, 8):
        blobs = tmp_path / f"blobs-{workers}"
        blobs.mkdir()
        got_diff_id, digest, size = oci.compress_layer(io.BytesIO(layer), blobs, workers=workers)
        assert got_diff_id == diff_id
        data = (blobs / digest.split(":")[1]).read_bytes()
        assert len(data) == size and "sha256:" + hashlib.sha256(data).hexdigest() == digest
        outputs[workers] = data
    assert len(set(outputs.values())) == 1  # any number of threads: the same bytes
    forge = outputs[1]
    assert gzip.decompress(forge) == layer
    gnu = shutil.which("gzip")
    assert gnu is not None
    assert subprocess.run([gnu, "-dc"], input=forge, capture_output=True, check=True).stdout == layer

    # Other compressors: the same content, other bytes.
    gnu_bytes = subprocess.run([gnu, "-n", "-6", "-c"], input=layer, capture_output=True, check=True).stdout
    other = zlib.compressobj(6, zlib.DEFLATED, 31, 9, zlib.Z_FILTERED)
    zlib_other = other.compress(layer) + other.flush()
    for alt in (gnu_bytes, zlib_other):
        assert gzip.decompress(alt) == layer
        assert alt != forge
    assert oci.compressor_fingerprint() == oci.compressor_fingerprint()
    assert len(oci.compressor_fingerprint()) == 12


def test_the_layout_cache_is_keyed_on_the_compressor(tmp_path: Path) -> None:
    key = oci.layout_key("/nix/store/abc-api.tar.gz")
    assert key == f"abc-api.tar.gz.{oci.compressor_fingerprint()}"
