"""Build a service's image with Nix, and push its closure to the configured binary cache.

``run_build`` builds ``<flake>#packages.<system>.<package>`` for every architecture of the
service with one ``nix build --json --no-link`` (so Nix can build them in parallel, locally or on
remote builders), then reports each image's store path, closure size and the build time. Systems
this machine cannot build, and no configured builder can, are refused before anything is built,
with the builder that is missing named.

``run_builds`` builds several services' images with one ``nix build`` (a release: one evaluation
of the flake instead of one per service), and names the service whose build failed.

The image is whatever ``dockerTools.buildLayeredImage`` (a docker-archive file, possibly gzip'd)
or ``dockerTools.streamLayeredImage`` (an executable that writes one to stdout) produced; the
registry module reads both.

Closure push: ``attic push`` when an Attic cache is configured and the ``attic`` client is on
PATH; otherwise ``nix copy --to <binary_cache>``. Only paths the cache lacks are sent (asked with
``nix path-info --store``), and the result says how many.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgegen import process
from forgegen.errors import BuildError, CommandError, ForgeError, ToolMissing, UsageError
from forgegen.plan import AtticPlan, Plan, ServicePlan
from forgegen.runtime.nixlog import FLAGS as NIX_LOG_FLAGS
from forgegen.runtime.nixlog import NixLog
from forgegen.runtime.tags import arch_of

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
DEFAULT_BUILD_TIMEOUT = 3600.0
DEFAULT_CACHE_TIMEOUT = 1800.0
_SIMPLE_ATTR = re.compile(r"^[A-Za-z_][A-Za-z0-9_'-]*$")
_NEEDS_BUILDER = re.compile(r"a '([^']+)' with features \{[^}]*\} is required to build '([^']+)', but I am a '([^']+)'")


@dataclass(frozen=True)
class BuiltImage:
    """One architecture's image in the Nix store."""

    system: str
    arch: str
    installable: str
    store_path: str
    kind: str  # "docker-archive" (a file) or "stream" (an executable writing one to stdout)
    closure_size: int
    nar_size: int

    def to_json(self) -> dict[str, Any]:
        return {"system": self.system, "arch": self.arch, "installable": self.installable,
                "store_path": self.store_path, "kind": self.kind, "closure_size": self.closure_size,
                "nar_size": self.nar_size}


@dataclass(frozen=True)
class CachePush:
    """What a closure push did: ``via`` attic or nix copy, to ``target``; how many paths it sent."""

    via: str  # "attic", "nix copy" or "none"
    target: str
    paths_total: int
    paths_sent: int
    seconds: float
    skipped: str | None = None  # why nothing was attempted

    def to_json(self) -> dict[str, Any]:
        return {"via": self.via, "target": self.target, "paths_total": self.paths_total,
                "paths_sent": self.paths_sent, "paths_present": self.paths_total - self.paths_sent,
                "seconds": round(self.seconds, 3), "skipped": self.skipped}


@dataclass(frozen=True)
class BuildResult:
    service: str
    package: str
    images: tuple[BuiltImage, ...]
    seconds: float
    cache: CachePush | None

    def image(self, system: str) -> BuiltImage:
        for img in self.images:
            if img.system == system:
                return img
        raise UsageError(f"no image was built for {system} (built: {', '.join(i.system for i in self.images)})")

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "package": self.package,
                "images": [i.to_json() for i in self.images],
                "build_seconds": round(self.seconds, 3),
                "cache": self.cache.to_json() if self.cache else None}


# ---------------------------------------------------------------------------------------------
# Which systems can be built here


@dataclass(frozen=True)
class Builders:
    """What this Nix can build: the local system and extra platforms, and remote builders' systems."""

    local: tuple[str, ...]
    remote: Mapping[str, tuple[str, ...]]  # system -> builder URIs

    def can_build(self, system: str) -> bool:
        return system in self.local or system in self.remote

    def missing_message(self, system: str, service: str) -> str:
        return (f"cannot build the {system} image of {service}: this machine builds "
                f"{', '.join(self.local)} and no remote builder is configured for {system}")


def _machines(spec: str) -> Iterable[str]:
    """Machine lines from a ``builders`` value (``;``/newline separated, ``@file`` includes)."""
    for part in re.split(r"[;\n]", spec):
        part = part.strip()
        if not part or part.startswith("#"):
            continue
        if part.startswith("@"):
            try:
                yield from _machines(Path(part[1:]).read_text(encoding="utf-8"))
            except OSError:
                continue
        else:
            yield part


def nix_builders(env: Mapping[str, str] | None = None) -> Builders:
    """Read ``system``, ``extra-platforms`` and ``builders`` from ``nix show-config --json``."""
    out = process.run(["nix", "show-config", "--json"], env=env, timeout=60,
                      what="read the Nix configuration").stdout
    conf = json.loads(out)

    def value(key: str, default: Any) -> Any:
        entry = conf.get(key)
        return entry.get("value", default) if isinstance(entry, dict) else default

    local = [value("system", "")]
    extra = value("extra-platforms", [])
    local += extra.split() if isinstance(extra, str) else list(extra)
    remote: dict[str, list[str]] = {}
    for line in _machines(str(value("builders", "") or "")):
        fields = line.split()
        systems = fields[1].split(",") if len(fields) > 1 and fields[1] != "-" else [local[0]]
        for s in systems:
            remote.setdefault(s, []).append(fields[0])
    return Builders(tuple(s for s in local if s), {k: tuple(v) for k, v in remote.items()})


# ---------------------------------------------------------------------------------------------
# nix build


def installable(flake: str, system: str, package: str) -> str:
    attr = package if _SIMPLE_ATTR.fullmatch(package) else json.dumps(package)
    return f"{flake}#packages.{system}.{attr}"


def image_kind(store_path: str) -> str:
    """``stream`` for an executable script (streamLayeredImage), else ``docker-archive``."""
    path = Path(store_path)
    if path.is_file() and os.access(path, os.X_OK):
        with open(path, "rb") as f:
            if f.read(2) == b"#!":
                return "stream"
    if path.is_dir():
        raise BuildError(f"{store_path} is a directory, not an image",
                         hint="the image package must be dockerTools.buildLayeredImage or streamLayeredImage")
    return "docker-archive"


def _path_sizes(paths: Sequence[str], env: Mapping[str, str] | None) -> dict[str, tuple[int, int]]:
    out = process.run(["nix", "path-info", "--json", "--closure-size", *paths], env=env, timeout=300,
                      what="measure the image closure").stdout
    return {e["path"]: (int(e.get("closureSize", 0)), int(e.get("narSize", 0))) for e in json.loads(out)}


def run_build(plan: Plan, service: str, *, flake: str = ".", systems: Sequence[str] | None = None,
              push_cache: bool = True, progress: Progress | None = None,
              timeout: float = DEFAULT_BUILD_TIMEOUT, env: Mapping[str, str] | None = None,
              live: Progress | None = None) -> BuildResult:
    """Build ``service``'s image for each of its systems (or ``systems``); push the closure.

    ``progress`` gets whole lines; ``live`` (given only on a terminal) Nix's progress as one
    replaceable line, and build logs are then shown as they come (:mod:`forgegen.runtime.nixlog`)."""
    svc = plan.service(service)
    say = progress or log.info
    wanted = _systems(svc, systems)
    installables = [installable(flake, s, svc.image.package) for s in wanted]
    start = time.monotonic()
    # Which systems Nix can build for (`nix show-config`, ~0.1 s of talking to the daemon) is asked
    # while `nix build` starts evaluating; a system it cannot build fails with that explanation,
    # whatever the build did (a foreign system without a builder fails there too, less clearly).
    with ThreadPoolExecutor(max_workers=1) as pool:
        asked = pool.submit(nix_builders, env)
        say(f"building {svc.name} image for {', '.join(wanted)}: nix build {' '.join(installables)}")
        built = _nix_build(installables, NixLog(say, live), env, timeout, f"build the {svc.name} image")
        _check_builders(asked.result(), svc, wanted)
    if isinstance(built, CommandError):
        raise _build_error(svc, installables, built) from built
    seconds = time.monotonic() - start
    paths = built
    images = _images(wanted, installables, paths, _path_sizes(paths, env), seconds, say)
    cache = push_closure(plan, paths, progress=say, env=env, live=live) if push_cache else None
    return BuildResult(svc.name, svc.image.package, images, seconds, cache)


def run_builds(plan: Plan, services: Sequence[str], *, flake: str = ".", progress: Progress | None = None,
               progress_for: Callable[[str], Progress] | None = None, timeout: float = DEFAULT_BUILD_TIMEOUT,
               env: Mapping[str, str] | None = None) -> dict[str, BuildResult | ForgeError]:
    """Build the images of several services with one ``nix build`` (one evaluation of the flake,
    and Nix builds what it can in parallel), then push each service's closure. Each service's
    result, or its error: when the shared build fails, the services are built again one at a time,
    in order, until the first failure, so that the failure is the service's own; the services
    after it are left out.

    ``seconds`` of each result is the shared build's. ``progress`` gets the shared lines,
    ``progress_for(service)`` the service's own (both default to the log)."""
    say = progress or log.info
    own = progress_for or (lambda _name: say)
    plans = [plan.service(name) for name in services]
    wanted = {svc.name: _systems(svc, None) for svc in plans}
    inst = {svc.name: [installable(flake, s, svc.image.package) for s in wanted[svc.name]] for svc in plans}
    unique = list(dict.fromkeys(i for svc in plans for i in inst[svc.name]))
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pool:
        asked = pool.submit(nix_builders, env)
        say(f"building the images of {len(plans)} services ({len(unique)} installables) with one nix build")
        built = _nix_build(unique, NixLog(say, None), env, timeout, f"build the images of {len(plans)} services")
        builders = asked.result()
    if isinstance(built, CommandError):
        return _one_at_a_time(plan, services, flake=flake, own=own, timeout=timeout, env=env)
    seconds = time.monotonic() - start
    path_of = dict(zip(unique, built))
    sizes = _path_sizes(list(dict.fromkeys(built)), env)
    results: dict[str, BuildResult | ForgeError] = {}
    for svc in plans:
        try:
            _check_builders(builders, svc, wanted[svc.name])
            paths = [path_of[i] for i in inst[svc.name]]
            images = _images(wanted[svc.name], inst[svc.name], paths, sizes, seconds, own(svc.name))
            cache = push_closure(plan, paths, progress=own(svc.name), env=env)
        except ForgeError as err:
            results[svc.name] = err
            break
        results[svc.name] = BuildResult(svc.name, svc.image.package, images, seconds, cache)
    return results


def _one_at_a_time(plan: Plan, services: Sequence[str], *, flake: str, own: Callable[[str], Progress],
                   timeout: float, env: Mapping[str, str] | None) -> dict[str, BuildResult | ForgeError]:
    results: dict[str, BuildResult | ForgeError] = {}
    for name in services:
        try:
            results[name] = run_build(plan, name, flake=flake, progress=own(name), timeout=timeout, env=env)
        except ForgeError as err:
            results[name] = err
            break
    return results


def _systems(svc: ServicePlan, systems: Sequence[str] | None) -> tuple[str, ...]:
    """The systems to build ``svc`` for (``systems``, or all of its architectures), checked."""
    wanted = tuple(systems) if systems else svc.image.architectures
    unknown = [s for s in wanted if s not in svc.image.architectures]
    if unknown:
        raise UsageError(f"service {svc.name!r} is not built for {', '.join(unknown)}",
                         hint=f"its architectures are {', '.join(svc.image.architectures)} (deploy.yaml services.{svc.name}.architectures)")
    for s in wanted:
        arch_of(s)
    return wanted


def _images(wanted: Sequence[str], installables: Sequence[str], paths: Sequence[str],
            sizes: Mapping[str, tuple[int, int]], seconds: float, say: Progress) -> tuple[BuiltImage, ...]:
    images = tuple(
        BuiltImage(system=s, arch=arch_of(s), installable=inst, store_path=p, kind=image_kind(p),
                   closure_size=sizes.get(p, (0, 0))[0], nar_size=sizes.get(p, (0, 0))[1])
        for s, inst, p in zip(wanted, installables, paths))
    for img in images:
        say(f"built {img.system}: {img.store_path} ({img.kind}, closure {_human(img.closure_size)}) in {seconds:.1f}s")
    return images


def _nix_build(installables: Sequence[str], nixlog: NixLog, env: Mapping[str, str] | None, timeout: float,
               what: str) -> list[str] | CommandError:
    """``nix build`` with Nix's log read as it comes (``--json`` would turn that log off in Nix
    2.8, so the output paths are read from out-links in a temporary directory: ``result``,
    ``result-1``, … in the order of ``installables``). A failed build is returned, not raised."""
    with tempfile.TemporaryDirectory(prefix="forge-build-") as tmp:
        link = Path(tmp) / "result"
        try:
            process.stream(["nix", "build", "--out-link", str(link), *NIX_LOG_FLAGS, *installables], nixlog,
                           env=env, timeout=timeout, what=what)
        except ToolMissing:
            raise
        except CommandError as err:
            return err
        finally:
            nixlog.done()
        links = [link.with_name("result" + (f"-{i}" if i else "")) for i in range(len(installables))]
        if not all(p.is_symlink() for p in links):
            raise BuildError(f"nix build left no out-link for some of {', '.join(installables)}",
                             hint="report this together with `nix --version`")
        return [os.readlink(p) for p in links]


def _check_builders(builders: Builders, svc: ServicePlan, wanted: Sequence[str]) -> None:
    missing = [s for s in wanted if not builders.can_build(s)]
    if missing:
        raise BuildError(
            "; ".join(builders.missing_message(s, svc.name) for s in missing),
            hint=f"add a remote builder for {', '.join(missing)} (nix.conf `builders = ssh-ng://user@host {missing[0]}`), "
                 f"or enable emulation (`extra-platforms = {' '.join(missing)}` with binfmt/qemu), "
                 f"or build only {', '.join(s for s in wanted if s not in missing) or 'the local system'}")


def _build_error(svc: ServicePlan, installables: Sequence[str], err: CommandError) -> BuildError:
    stderr = err.stderr
    need = _NEEDS_BUILDER.search(stderr)
    if need:
        system, drv, me = need.groups()
        return BuildError(
            f"cannot build the {system} image of {svc.name}: {drv} needs a {system} builder and this machine is {me}",
            hint=f"add a remote builder for {system} (nix.conf `builders`), or enable emulation with "
                 f"`extra-platforms = {system}`")
    if "does not provide attribute" in stderr or "flake does not provide" in stderr:
        return BuildError(
            f"the flake has no image package {svc.image.package!r} for {svc.name} ({', '.join(installables)})",
            hint=f"define packages.<system>.{svc.image.package} (a dockerTools.buildLayeredImage), or set "
                 f"services.{svc.name}.image.package in deploy.yaml")
    return BuildError(f"nix build of the {svc.name} image failed: {process.failure('nix build', err)}",
                      hint=f"run `nix build {' '.join(installables)}` to see the whole log")


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


# ---------------------------------------------------------------------------------------------
# Closure push


def closure(paths: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    out = process.run(["nix", "path-info", "--recursive", *paths], env=env, timeout=300,
                      what="list the image closure").stdout
    return sorted(set(out.split()))


def missing_from_cache(url: str, paths: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """The paths ``url`` (any Nix store URL) does not have, asked with ``nix path-info --store``."""
    if not paths:
        return []
    out = process.run(["nix", "path-info", "--json", "--store", url, *paths], env=env, timeout=300,
                      what=f"ask the binary cache {url} which paths it has").stdout
    valid = {e["path"] for e in json.loads(out) if e.get("valid", True)}
    return [p for p in paths if p not in valid]


def push_closure(plan: Plan, paths: Sequence[str], *, progress: Progress | None = None,
                 env: Mapping[str, str] | None = None, timeout: float = DEFAULT_CACHE_TIMEOUT,
                 live: Progress | None = None) -> CachePush | None:
    """Push the closure of ``paths`` to the plan's Attic cache or binary cache (None: neither set).

    ``live`` (on a terminal only): the copy's progress as one replaceable line."""
    say = progress or log.info
    from forgegen.runtime.attic_env import effective_attic

    attic = effective_attic(plan.attic, {**os.environ, **(env or {})})
    if attic is not None:
        if process.which("attic", env=env) is not None:
            return _attic_push(attic, paths, say, env, timeout, live)
        if not plan.binary_cache:
            say(f"not pushing the closure to Attic cache {attic.cache}: the `attic` client is not on PATH")
            return CachePush("none", f"{attic.endpoint} {attic.cache}", 0, 0, 0.0,
                             skipped="the attic client is not on PATH (install attic-client)")
        say("the `attic` client is not on PATH; pushing with nix copy to the binary cache instead")
    if not plan.binary_cache:
        return None
    return _nix_copy(plan.binary_cache, paths, say, env, timeout, live)


def _nix_copy(url: str, paths: Sequence[str], say: Progress, env: Mapping[str, str] | None,
              timeout: float, live: Progress | None = None) -> CachePush:
    start = time.monotonic()
    everything = closure(paths, env)
    missing = missing_from_cache(url, everything, env)
    if missing:
        say(f"pushing {len(missing)} of {len(everything)} store paths to {url}")
        nixlog = NixLog(say, live)
        try:
            process.stream(["nix", "copy", *NIX_LOG_FLAGS, "--to", url, *missing], nixlog, env=env, timeout=timeout,
                           what=f"push the image closure to {url}")
        except ToolMissing:
            raise
        except CommandError as err:
            raise BuildError(f"cannot push the image closure to the binary cache {url}: {process.failure('nix copy', err)}",
                             hint="check that the cache URL is right and writable (deploy.yaml binary_cache.url)") from err
        finally:
            nixlog.done()
    else:
        say(f"the binary cache {url} already has all {len(everything)} store paths")
    return CachePush("nix copy", url, len(everything), len(missing), time.monotonic() - start)


def _attic_lines(live: Progress | None) -> Callable[[str], str | None]:
    """attic's lines: on a terminal the latest as the replaceable progress line, else the debug log."""
    def on_line(line: str) -> str | None:
        if live is not None:
            live(line.strip()[:200])
        else:
            log.debug("attic: %s", line)
        return line
    return on_line


def _run_attic_push(target: str, missing: Sequence[str], cache: str, live: Progress | None, *,
                    env: Mapping[str, str] | None, timeout: float, hint: str, secrets: Sequence[str] = (),
                    unset: Sequence[str] = ()) -> None:
    """``attic push TARGET paths`` with its lines streamed; a failure names the cache and shows attic's last lines."""
    try:
        process.stream(["attic", "push", target, *missing], _attic_lines(live), env=env, timeout=timeout,
                       secrets=list(secrets), unset=list(unset), what=f"push the image closure to Attic cache {cache}")
    except ToolMissing:
        raise
    except CommandError as err:
        raise BuildError(f"cannot push the image closure to Attic cache {cache}: {process.failure('attic push', err)}",
                         hint=hint) from err
    finally:
        if live is not None:
            live("")


def _attic_push(attic: AtticPlan, paths: Sequence[str], say: Progress, env: Mapping[str, str] | None,
                timeout: float, live: Progress | None = None) -> CachePush:
    """``attic push forge:<cache> paths`` with the token in a private, temporary client config
    (token precedence: :mod:`forgegen.runtime.attic_env`)."""
    from forgegen.runtime.attic_env import attic_token

    token, source = attic_token(attic, {**os.environ, **(env or {})})
    start = time.monotonic()
    everything = closure(paths, env)
    target = f"{attic.endpoint.rstrip('/')}/{attic.cache}"
    try:
        missing = missing_from_cache(target, everything, env)
    except CommandError:  # a private cache may not answer anonymous reads: let attic decide
        missing = everything
    if not missing:
        say(f"Attic cache {attic.cache} already has all {len(everything)} store paths")
        return CachePush("attic", target, len(everything), 0, time.monotonic() - start)
    if token is None:  # ATTIC_SERVER_NAME: the user's own attic login
        server = source.partition("=")[2]
        say(f"pushing {len(missing)} of {len(everything)} store paths to Attic cache {attic.cache} (attic server {server})")
        _run_attic_push(f"{server}:{attic.cache}", missing, attic.cache, live, env=env, timeout=timeout,
                        hint=f"check `attic login {server} …` may push to {attic.cache}")
        return CachePush("attic", target, len(everything), len(missing), time.monotonic() - start)
    with tempfile.TemporaryDirectory(prefix="forge-attic-") as tmp:
        conf_dir = Path(tmp) / "attic"
        conf_dir.mkdir(mode=0o700)
        conf = conf_dir / "config.toml"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f'default-server = "forge"\n[servers.forge]\nendpoint = {json.dumps(attic.endpoint)}\n'
                    f"token = {json.dumps(token)}\n")
        say(f"pushing {len(missing)} of {len(everything)} store paths to Attic cache {attic.cache}")
        _run_attic_push(f"forge:{attic.cache}", missing, attic.cache, live, env={**(env or {}), "XDG_CONFIG_HOME": tmp},
                        timeout=timeout, secrets=[token], unset=[attic.token_env],
                        hint=f"check {attic.token_env} may push to {attic.cache} at {attic.endpoint}")
    return CachePush("attic", target, len(everything), len(missing), time.monotonic() - start)

