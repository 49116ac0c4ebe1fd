"""The Nix builder image (root flake ``packages.<system>.nix-builder-image``): verify and release.

**Verify** builds the image, unpacks its layers in order into a directory (the image's root
filesystem, as a container engine would lay it out; whiteouts honoured) and checks, without any
container engine, from that root alone:

* its contents: ``/bin/sh``, ``nix``, ``/etc/nix/nix.conf``, the CA bundle the image's ``Env``
  names, and the tools a builder needs (git, tar, gzip, xz);
* that the image's nix runs (``nix --version``), evaluates (``nix-instantiate --eval``) and
  builds a trivial derivation whose output lands in the image's own ``/nix/store``.

The image's programs run with the unpacked directory as ``/`` (``chroot``) in a private mount
namespace (``unshare --mount``; as non-root, with ``--user --map-root-user``) where the host's
``/dev`` and a fresh ``/proc`` are mounted, and with only the image's ``Env`` (plus
``substituters =``: the check never uses the network). Nothing of the host's store or ``PATH``
is visible, so a program or library missing from the image fails the check. What this cannot
show without a container engine: the image's entrypoint/user/ports as a runtime applies them,
cgroup limits, and Nix's sandbox (the image turns it off).

**Release** pushes the image like a service's (:func:`forgegen.runtime.registry.run_push`):
``<registry>/<organization>/nix-builder`` under ``<arch>-<sha7>`` and ``<arch>-latest``, digest
verified, 0 bytes on a re-push.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgegen import process
from forgegen.errors import BuildError, CommandError, UsageError
from forgegen.runtime.build import _nix_build, image_kind, installable
from forgegen.runtime.nixlog import NixLog

Progress = Callable[[str], None]
PACKAGE = "nix-builder-image"
SERVICE = "nix-builder"
CHECK_DRV = ('derivation { name = "forge-builder-check"; system = builtins.currentSystem; builder = "/bin/sh"; '
             'args = [ "-c" "echo built-in-the-image > $out" ]; }')


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class Verification:
    image: str
    system: str
    root: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "system": self.system, "ok": self.ok, "root": self.root,
                "checks": [c.to_json() for c in self.checks]}


def steps(flake: str, system: str) -> list[str]:
    """What ``verify`` does, for ``--dry-run``."""
    return [f"nix build {installable(flake, system, PACKAGE)}",
            "unpack the image's layers, in order, into a temporary root directory",
            "check the root holds /bin/sh, nix, /etc/nix/nix.conf, the CA bundle, git, tar, gzip, xz",
            "in that root (unshare --mount + chroot, the image's Env only): nix --version",
            "in that root: nix-instantiate --eval (1 + 2 = 3)",
            "in that root: nix-build a trivial derivation; its output must be in the image's /nix/store"]


def build_image(flake: str, system: str, say: Progress, live: Progress | None = None,
                env: Mapping[str, str] | None = None) -> str:
    inst = installable(flake, system, PACKAGE)
    say(f"building {inst}")
    built = _nix_build([inst], NixLog(say, live), env, 3600.0, "build the Nix builder image")
    if isinstance(built, CommandError):
        raise BuildError(f"cannot build the Nix builder image: {process.failure('nix build', built)}",
                         hint=f"run `nix build {inst}` to see the whole log") from built
    return built[0]


def unpack(image: str, root: Path) -> dict[str, Any]:
    """Lay the docker-archive's layers out in ``root``; returns the image config."""
    with tempfile.TemporaryDirectory(prefix="forge-builder-archive-") as tmp:
        archive = image
        if image_kind(image) == "stream":
            archive = str(Path(tmp) / "image.tar")
            with open(archive, "wb") as out:
                if process.spawn([image], stdout=out).wait() != 0:
                    raise BuildError(f"the image script {image} failed to write the image")
        with tarfile.open(archive, "r:*") as outer:
            manifest = json.load(_member(outer, "manifest.json"))[0]
            config: dict[str, Any] = json.load(_member(outer, manifest["Config"]))
            for layer in manifest["Layers"]:
                with tarfile.open(fileobj=_member(outer, layer), mode="r:*") as tar:
                    _apply_layer(tar, root)
    return config


def _member(tar: tarfile.TarFile, name: str) -> Any:
    f = tar.extractfile(name)
    if f is None:
        raise BuildError(f"the image archive has no file {name}")
    return f


def _apply_layer(tar: tarfile.TarFile, root: Path) -> None:
    for member in tar.getmembers():
        name = os.path.normpath(member.name).lstrip("/")
        if name.startswith(".."):
            raise BuildError(f"the image has a layer entry outside its root: {member.name!r}")
        base = os.path.basename(name)
        if base.startswith(".wh."):  # a whiteout: the lower layers' entry is gone
            gone = root / os.path.dirname(name) / base[4:]
            if gone.is_dir() and not gone.is_symlink():
                shutil.rmtree(gone)
            else:
                gone.unlink(missing_ok=True)
            continue
        target = root / name
        if (target.exists() or target.is_symlink()) and not (member.isdir() and target.is_dir()):
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        tar.extract(member, root, set_attrs=not member.issym(), filter="tar")


def _in_root(root: Path, env: Mapping[str, str], argv: Sequence[str]) -> list[str]:
    """argv running ``argv`` with ``root`` as / (private mounts: the host's /dev, a fresh /proc)."""
    isolate = ["unshare", "--mount", "--fork"] if os.geteuid() == 0 else \
        ["unshare", "--user", "--map-root-user", "--mount", "--fork"]
    inner = ('mount --rbind /dev "$1/dev" && mount -t proc proc "$1/proc" && root=$1 && shift && '
             'exec chroot "$root" /bin/env -i "$@"')
    return [*isolate, "/bin/sh", "-c", inner, "sh", str(root), *[f"{k}={v}" for k, v in env.items()], *argv]


def _contents(root: Path, image_env: Mapping[str, str]) -> list[Check]:
    def present(rel: str) -> bool:
        path = root / rel.lstrip("/")
        while path.is_symlink():  # links point into the image's /nix/store: resolve them in root
            link = os.readlink(path)
            path = root / link.lstrip("/") if link.startswith("/") else path.parent / link
        return path.exists()

    path_dirs = image_env.get("PATH", "/bin:/usr/bin").split(":")
    checks = [Check("shell", present("/bin/sh"), "/bin/sh"),
              Check("nix.conf", present("/etc/nix/nix.conf"), "/etc/nix/nix.conf")]
    for tool in ("nix", "nix-build", "nix-instantiate", "git", "tar", "gzip", "xz"):
        found = [d for d in path_dirs if present(f"{d}/{tool}")]
        checks.append(Check(f"program {tool}", bool(found), f"{found[0]}/{tool}" if found else
                            f"not in the image's PATH ({':'.join(path_dirs)})"))
    bundle = image_env.get("SSL_CERT_FILE")
    checks.append(Check("CA bundle", bool(bundle) and present(bundle or ""),
                        bundle or "the image's Env sets no SSL_CERT_FILE"))
    return checks


def _run_checks(root: Path, image_env: Mapping[str, str]) -> list[Check]:
    env = {**image_env, "NIX_CONFIG": "substituters =\nflake-registry =\n"}
    (root / "dev").mkdir(exist_ok=True)
    (root / "proc").mkdir(exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    (root / "tmp" / "forge-check.nix").write_text(CHECK_DRV + "\n")
    checks: list[Check] = []
    for name, argv, expect in (
            ("nix runs", ["nix", "--version"], "nix"),
            ("nix evaluates", ["nix-instantiate", "--eval", "-E", "1 + 2"], "3"),
            ("nix builds", ["nix-build", "--no-out-link", "/tmp/forge-check.nix"], "/nix/store/")):
        try:
            out = process.run(_in_root(root, env, argv), timeout=600, what=f"run {argv[0]} in the image").stdout.strip()
        except CommandError as err:
            checks.append(Check(name, False, process.failure(argv[0], err)))
            continue
        ok = expect in out
        if name == "nix builds" and ok:
            built = root / out.splitlines()[-1].lstrip("/")
            ok = built.is_file() and built.read_text().strip() == "built-in-the-image"
            out = f"{out.splitlines()[-1]} (in the image's store: {'yes' if ok else 'no'})"
        checks.append(Check(name, ok, out.splitlines()[-1] if out else "(no output)"))
    return checks


def verify(flake: str = ".", system: str | None = None, *, keep: Path | None = None, say: Progress = print,
           live: Progress | None = None, env: Mapping[str, str] | None = None) -> Verification:
    """Build the builder image for ``system`` (default: this machine's) and check it from its root."""
    system = system or _local_system(env)
    image = build_image(flake, system, say, live, env)
    if shutil.which("unshare") is None or shutil.which("chroot") is None:
        raise UsageError("cannot verify the builder image: `unshare` and `chroot` (util-linux, coreutils) are needed",
                         hint="install util-linux")
    root = keep or Path(tempfile.mkdtemp(prefix="forge-builder-root-"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        say(f"unpacking {image} into {root}")
        config = unpack(image, root)
        image_env = dict(e.partition("=")[::2] for e in (config.get("config") or {}).get("Env") or [])
        result = Verification(image, system, str(root) if keep else None)
        result.checks += _contents(root, image_env)
        result.checks += _run_checks(root, image_env)
        for c in result.checks:
            say(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
        return result
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def _local_system(env: Mapping[str, str] | None) -> str:
    from forgegen.runtime.build import nix_builders

    return nix_builders(env).local[0]


def release_plan(registry: str, organization: str, *, insecure: bool, systems: Sequence[str]) -> Any:
    """A plan with one service, ``nix-builder``, whose image is the flake's ``nix-builder-image``."""
    from forgegen import plan, schema

    config = {"version": 1, "project": "forge",
              "registry": {"host": registry, "organization": organization, "insecure": insecure},
              "gitops": {"repo": "./gitops"}, "environments": [{"name": "release"}],
              "services": {SERVICE: {"architectures": list(systems), "image": {"package": PACKAGE}}}}
    try:
        return plan.build_plan(schema.Config.model_validate(config))
    except ValueError as err:
        raise UsageError(f"cannot release the builder image to {registry}/{organization}: {err}",
                         hint="--registry is a host[:port], --organization a path of lowercase names") from err
