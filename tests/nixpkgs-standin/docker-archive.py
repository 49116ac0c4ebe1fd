"""Reproducible docker-archive writer: the helper program of the stand-in ``dockerTools``.

Runs with the host ``python3`` (the stand-in builds with the sandbox off), in three modes:

* ``resolve``  (build time): read the derivation's ``conf`` and the ``exportReferencesGraph``
  files, and write the resolved image description (layers as lists of store paths) as JSON.
* ``build``    (build time, ``buildLayeredImage``): write ``$out``, a gzip'd docker-archive.
* ``script``   (build time, ``streamLayeredImage``): write ``$out``, an executable script that
  streams the uncompressed docker-archive to stdout when run.

Layout of the archive (``docker save``): one ``<diff_id>/layer.tar`` per layer, the image
config ``<digest>.json``, and ``manifest.json``. Every byte is a function of the inputs:
mtime 1 inside layers, uid/gid 0, sorted entries, gzip header mtime 0, no file name.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import tempfile

CREATED = "1970-01-01T00:00:01Z"
ARCH = {
    "x86_64-linux": ("amd64", None), "aarch64-linux": ("arm64", "v8"), "armv7l-linux": ("arm", "v7"),
    "i686-linux": ("386", None), "riscv64-linux": ("riscv64", None),
    "powerpc64le-linux": ("ppc64le", None), "s390x-linux": ("s390x", None),
}


def read_graph(path: str) -> list[str]:
    """Store paths listed in an ``exportReferencesGraph`` file (path, deriver, n, n refs ...)."""
    lines = open(path, encoding="utf-8").read().splitlines()
    paths, i = [], 0
    while i < len(lines):
        if not lines[i]:
            i += 1
            continue
        paths.append(lines[i])
        count = int(lines[i + 2])
        i += 3 + count
    return paths


def resolve(conf: dict) -> dict:
    closure: set[str] = set()
    for i in range(len(conf["contents"])):
        closure.update(read_graph(f"closure-{i}"))
    paths = sorted(closure)
    max_layers = max(2, int(conf.get("maxLayers", 100)))
    # One layer per store path; past maxLayers - 1 the rest share the last store layer, and the
    # customisation layer (the contents linked into /) comes last, as in nixpkgs.
    keep = max_layers - 2
    layers = [[p] for p in paths[:keep]]
    if paths[keep:]:
        layers.append(paths[keep:])
    arch, variant = ARCH.get(conf["system"], (conf["system"].split("-")[0], None))
    return {
        "name": conf["name"], "tag": conf.get("tag"), "arch": arch, "variant": variant,
        "config": conf.get("config") or {}, "layers": layers, "contents": conf["contents"],
        "extraFiles": conf.get("extraFiles") or {},
    }


def _info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 1
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.linkname = link
    return info


def _add_tree(tar: tarfile.TarFile, root: str) -> None:
    """Add a store path (file, symlink or directory tree) under its own name, sorted."""
    def add(path: str) -> None:
        name = path.lstrip("/")
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            tar.addfile(_info(name, tarfile.SYMTYPE, 0o777, link=os.readlink(path)))
        elif stat.S_ISDIR(st.st_mode):
            tar.addfile(_info(name, tarfile.DIRTYPE, 0o555))
            for child in sorted(os.listdir(path)):
                add(os.path.join(path, child))
        else:
            mode = 0o555 if st.st_mode & 0o111 else 0o444
            with open(path, "rb") as f:
                tar.addfile(_info(name, tarfile.REGTYPE, mode, st.st_size), f)
    add(root)


def _layer(write) -> tuple[tempfile.SpooledTemporaryFile, str, int]:
    spool = tempfile.SpooledTemporaryFile(max_size=16 << 20)
    with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as tar:
        write(tar)
    size = spool.tell()
    spool.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: spool.read(1 << 20), b""):
        digest.update(chunk)
    spool.seek(0)
    return spool, digest.hexdigest(), size


def _store_layer(paths: list[str]):
    def write(tar: tarfile.TarFile) -> None:
        tar.addfile(_info("nix", tarfile.DIRTYPE, 0o755))
        tar.addfile(_info("nix/store", tarfile.DIRTYPE, 0o755))
        for p in paths:
            _add_tree(tar, p)
    return write


def _customisation_layer(contents: list[str], extra_files: dict[str, str]):
    """The contents linked into / (``/bin/app`` → ``/nix/store/…/bin/app``), plus extra files."""
    def write(tar: tarfile.TarFile) -> None:
        entries: dict[str, tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]] = {}
        for root in contents:
            if not os.path.isdir(root):
                continue
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                rel = os.path.relpath(dirpath, root)
                if rel != ".":
                    entries.setdefault(rel, _info(rel, tarfile.DIRTYPE, 0o755))
                for fn in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
                    name = os.path.normpath(os.path.join(rel, fn))
                    entries.setdefault(name, _info(name, tarfile.SYMTYPE, 0o777, link=os.path.join(dirpath, fn)))
        for name, text in extra_files.items():
            data = text.encode()
            name = name.lstrip("/")
            entries[name] = (_info(name, tarfile.REGTYPE, 0o644, len(data)), data)
        for name in sorted(entries):
            entry = entries[name]
            if isinstance(entry, tuple):
                tar.addfile(entry[0], io.BytesIO(entry[1]))
            else:
                tar.addfile(entry)
    return write


def write_archive(image: dict, out: io.BufferedIOBase, tag_default: str) -> None:
    """Stream a docker-archive: layers first, then the config, then manifest.json."""
    builders = [_store_layer(paths) for paths in image["layers"]]
    if image["contents"] or image["extraFiles"]:
        builders.append(_customisation_layer(image["contents"], image["extraFiles"]))
    diff_ids, layer_names = [], []
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as outer:
        for build in builders:
            spool, digest, size = _layer(build)
            name = f"{digest}/layer.tar"
            outer.addfile(_info(digest, tarfile.DIRTYPE, 0o755))
            outer.addfile(_info(name, tarfile.REGTYPE, 0o644, size), spool)
            spool.close()
            diff_ids.append(f"sha256:{digest}")
            layer_names.append(name)
        config = {
            "architecture": image["arch"], "os": "linux", "created": CREATED,
            "config": image["config"],
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": CREATED, "created_by": "forge stand-in dockerTools"} for _ in diff_ids],
        }
        if image.get("variant"):
            config["variant"] = image["variant"]
        config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        outer.addfile(_info(config_name, tarfile.REGTYPE, 0o644, len(config_bytes)), io.BytesIO(config_bytes))
        tag = image.get("tag") or tag_default
        manifest = [{"Config": config_name, "RepoTags": [f"{image['name']}:{tag}"], "Layers": layer_names}]
        manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        outer.addfile(_info("manifest.json", tarfile.REGTYPE, 0o644, len(manifest_bytes)), io.BytesIO(manifest_bytes))


def _out_hash(out: str) -> str:
    return os.path.basename(out).split("-", 1)[0]


def main(argv: list[str]) -> None:
    mode = argv[1]
    if mode == "build":
        out = os.environ["out"]
        image = resolve(json.loads(os.environ["conf"]))
        with open(out, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                  compresslevel=6) as gz:
            write_archive(image, gz, _out_hash(out))
    elif mode == "script":
        out = os.environ["out"]
        image = resolve(json.loads(os.environ["conf"]))
        image["tag"] = image["tag"] or _out_hash(out)
        python = os.environ["python"]
        with open(out, "w", encoding="utf-8") as f:
            f.write(f"#!{python}\n# Streams the {image['name']} image as an uncompressed docker-archive on stdout.\n")
            f.write("import runpy, sys\n")
            f.write(f"sys.argv = [{os.path.abspath(argv[0])!r}, 'stream', {json.dumps(image, sort_keys=True)!r}]\n")
            f.write(f"runpy.run_path({os.path.abspath(argv[0])!r}, run_name='__main__')\n")
        os.chmod(out, 0o555)
    elif mode == "stream":
        image = json.loads(argv[2])
        write_archive(image, sys.stdout.buffer, image["tag"])
        sys.stdout.buffer.flush()
    else:
        raise SystemExit(f"docker-archive.py: unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv)
