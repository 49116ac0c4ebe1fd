"""Push benchmark: bytes uploaded for unchanged / one-changed-layer images, and forge's overhead.

Runs real components: docker-registry on loopback behind a byte-counting TCP proxy, skopeo, and
images built by real Nix with the stand-in dockerTools (tests/nixpkgs-standin). Prints figures
and ratios; asserts nothing (tests assert behaviour, benchmarks measure).

    .venv/bin/python benchmarks/push.py [--rounds 3] [--base-mib 24] [--payload-mib 8]

Figures:
* re-push of an unchanged image (new commit, fresh layout cache): layer bytes uploaded (target 0)
* push with one changed layer: bytes sent to the registry / compressed size of that layer (target ≤ 1.05)
* wall time of `forge push` (cold: archive conversion included; Forge's own client, the default,
  and with ``registry.push_with: skopeo``) / a bare `skopeo copy
  docker-archive:` of the same image to a fresh repository (target ≤ 1.2). Both go straight to
  the registry: the byte-counting proxy runs in this process, and its threads would compete for
  the GIL with forge's (in-process) push but not with skopeo (another process), so it is used only
  for the byte counts.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from forgegen.runtime import build as forge_build  # noqa: E402
from forgegen.runtime import registry as forge_registry  # noqa: E402
from forgegen.runtime.tags import SourceRevision  # noqa: E402
from tests.fixtures.registry import FaultProxy, ImageFlake, forge_plan, start_registry  # noqa: E402

NIX_CONFIG = "experimental-features = nix-command flakes\nsubstituters =\nflake-registry =\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--base-mib", type=float, default=24)
    ap.add_argument("--payload-mib", type=float, default=8)
    args = ap.parse_args()
    os.environ["NIX_CONFIG"] = NIX_CONFIG
    work = Path(tempfile.mkdtemp(prefix="forge-bench-push-"))
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")
    reg = start_registry(work / "registry")
    proxy = FaultProxy(reg.host).start()
    try:
        run(args, work, reg, proxy)
    finally:
        proxy.stop()
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, reg, proxy: FaultProxy) -> None:
    flake = ImageFlake(work / "flake", systems=("x86_64-linux",), base_size=int(args.base_mib * 2**20),
                       payload_size=int(args.payload_mib * 2**20))
    forge_times, forge_skopeo_times, skopeo_times, gunzip_times, repush_bytes, repush_blob_bytes, ratios = [], [], [], [], [], [], []
    for round_no in range(1, args.rounds + 1):
        # fresh content each round: nothing is in the registry or any cache yet
        flake.base_seed, flake.payload = uuid.uuid4().hex, uuid.uuid4().hex
        flake.write()
        org = f"bench{round_no}-{uuid.uuid4().hex[:6]}"
        plan = forge_plan(proxy.host, organization=org)
        direct = forge_plan(reg.host, organization=org)
        via_skopeo = forge_plan(reg.host, organization=f"{org}-s", push_with="skopeo")
        built = forge_build.run_build(plan, "api", flake=flake.ref, push_cache=False)
        image = built.images[0]
        archive = work / f"round{round_no}.tar"  # skopeo 1.9 reads only uncompressed docker-archives
        t = time.perf_counter()
        with gzip.open(image.store_path, "rb") as src, open(archive, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        gunzip_times.append(time.perf_counter() - t)

        # bare skopeo, fresh repository
        t = time.perf_counter()
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"docker-archive:{archive}",
                        f"docker://{reg.host}/{org}/bare:latest"], check=True, capture_output=True, timeout=600)
        skopeo_times.append(time.perf_counter() - t)

        # forge push, cold (no layout cache), fresh repository
        t = time.perf_counter()
        forge_registry.run_push(direct, "api", revision=SourceRevision("1111111", "GIT_SHA"), build=built,
                                cache_dir=work / f"layouts-{round_no}-a")
        forge_times.append(time.perf_counter() - t)

        # the same with registry.push_with: skopeo (skopeo sends the config and the manifest), fresh repository
        t = time.perf_counter()
        forge_registry.run_push(via_skopeo, "api", revision=SourceRevision("1111111", "GIT_SHA"), build=built,
                                cache_dir=work / f"layouts-{round_no}-s")
        forge_skopeo_times.append(time.perf_counter() - t)

        # re-push unchanged under a new commit, from a fresh layout cache (a new CI machine)
        blobs_before = reg.blobs()
        proxy.reset_counters()
        result = forge_registry.run_push(plan, "api", revision=SourceRevision("2222222", "GIT_SHA"), build=built,
                                         cache_dir=work / f"layouts-{round_no}-b")
        repush_bytes.append(proxy.bytes_up)
        repush_blob_bytes.append(sum(s for d, s in reg.blobs().items() if d not in blobs_before))
        assert result.images[0].bytes_uploaded == 0

        # one changed layer
        flake.payload = uuid.uuid4().hex
        flake.write()
        changed = forge_build.run_build(plan, "api", flake=flake.ref, push_cache=False)
        blobs_before = reg.blobs()
        proxy.reset_counters()
        result = forge_registry.run_push(plan, "api", revision=SourceRevision("3333333", "GIT_SHA"), build=changed,
                                         cache_dir=work / f"layouts-{round_no}-a")
        new = {d: s for d, s in reg.blobs().items() if d not in blobs_before}
        layer_digests = [d for d, _ in forge_registry.oci_layout(changed.images[0], work / f"layouts-{round_no}-a").blobs[1:]]
        changed_layers = {d: s for d, s in new.items() if d in layer_digests}
        changed_bytes = sum(changed_layers.values())
        ratios.append(proxy.bytes_up / changed_bytes)
        print(f"round {round_no}: image {image.nar_size / 2**20:.1f} MiB; bare skopeo {skopeo_times[-1]:.2f}s, "
              f"forge push {forge_times[-1]:.2f}s (push_with skopeo {forge_skopeo_times[-1]:.2f}s); re-push {repush_bytes[-1]} B on the wire, "
              f"{repush_blob_bytes[-1]} B of new blobs; one changed layer ({len(changed_layers)} layer, "
              f"{changed_bytes} B) -> {proxy.bytes_up} B on the wire (incl. config, manifests, HTTP)",
              file=sys.stderr)

    med_forge, med_skopeo = statistics.median(forge_times), statistics.median(skopeo_times)
    figures = {
        "rounds": args.rounds,
        "load_average": os.getloadavg()[0],
        "image_mib": round((args.base_mib + args.payload_mib), 1),
        "repush_unchanged_layer_bytes": max(repush_blob_bytes),
        "repush_unchanged_wire_bytes_max": max(repush_bytes),
        "one_changed_layer_ratio_max": round(max(ratios), 4),
        "forge_push_seconds_median": round(med_forge, 3),
        "bare_skopeo_seconds_median": round(med_skopeo, 3),
        "overhead_ratio": round(med_forge / med_skopeo, 3),
        "forge_push_with_skopeo_seconds_median": round(statistics.median(forge_skopeo_times), 3),
        "overhead_ratio_push_with_skopeo": round(statistics.median(forge_skopeo_times) / med_skopeo, 3),
        # what a skopeo 1.9 user must do with Nix's .tar.gz first: gunzip it (skopeo cannot read it)
        "bare_gunzip_plus_skopeo_seconds_median": round(statistics.median(
            g + k for g, k in zip(gunzip_times, skopeo_times)), 3),
        "overhead_ratio_vs_gunzip_plus_skopeo": round(med_forge / statistics.median(
            g + k for g, k in zip(gunzip_times, skopeo_times)), 3),
    }
    print(json.dumps(figures, indent=2))
    print(f"re-push unchanged: {figures['repush_unchanged_layer_bytes']} layer bytes (target 0)", file=sys.stderr)
    print(f"one changed layer: bytes uploaded / bytes changed = {figures['one_changed_layer_ratio_max']} (target <= 1.05)",
          file=sys.stderr)
    print(f"forge push / bare skopeo copy = {figures['overhead_ratio']} (target <= 1.2); "
          f"/ (gunzip + skopeo copy) = {figures['overhead_ratio_vs_gunzip_plus_skopeo']}; "
          f"with push_with: skopeo {figures['overhead_ratio_push_with_skopeo']}", file=sys.stderr)


if __name__ == "__main__":
    main()
