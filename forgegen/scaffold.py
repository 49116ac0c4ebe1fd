"""``forgegen add-service NAME --type T``: scaffold a working service and wire it in.

Everything is computed first (the service's files from ``templates/services/<type>``, the new
deploy.yaml text, the flake packages, the GitOps overlays), the new deploy.yaml is validated, and
only then is anything written: bad input leaves every file as it was. deploy.yaml is edited as
text (the entry is inserted after the last service), so the user's comments and layout stay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from forgegen import nix, pattern, render, schema
from forgegen.errors import ConfigError, UsageError

TYPES = ("rust", "python", "go", "node", "generic")
FLAKE_MARKER = "# forgegen add-service: new packages go above this line"
PLACEHOLDER_TAG = "amd64-0000000"  # what the overlays name until the first deploy writes a real tag

# How each type runs locally (dev.start, on $PORT) and whether it answers GET /healthz.
START = {"rust": "cargo run --quiet --bin {name}", "go": "go run .", "python": "python3 -m {ident}",
         "node": "node src/server.js", "generic": "bash main.sh"}
HTTP_TYPES = ("rust", "go", "python", "node")


@dataclass
class Scaffold:
    """What add-service writes: ``files`` (relative to the project root, new), ``edits`` (existing
    files with their new text), plus what it could not do itself (``flake_snippet``)."""

    name: str
    type: str
    path: str
    files: dict[str, str] = field(default_factory=dict)
    edits: dict[str, str] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    flake_snippet: str | None = None
    gitops: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"command": "add-service", "service": self.name, "type": self.type, "path": self.path,
                "created": sorted(self.files), "edited": sorted(self.edits),
                "flake_snippet": self.flake_snippet, "gitops": self.gitops, "notes": self.notes}


def template_dir(kind: str) -> Path:
    return render._template_root() / "services" / kind


def check_name(name: str) -> None:
    try:
        schema._dns_label(name)
    except ValueError as err:
        raise UsageError(f"cannot use {name!r} as a service name: {err}",
                         hint="a service name is a DNS label: lowercase letters, digits and '-', e.g. orders") from None


def service_files(kind: str, name: str, path: str) -> tuple[dict[str, str], dict[str, int]]:
    """The scaffold of ``kind`` for ``name``, keyed by path relative to the project root."""
    ident = name.replace("-", "_")
    root = template_dir(kind)
    files: dict[str, str] = {}
    modes: dict[str, int] = {}
    for src in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = src.relative_to(root).as_posix().replace("__IDENT__", ident).replace("__NAME__", name)
        target = str(PurePosixPath(path) / rel)
        files[target] = src.read_text(encoding="utf-8").replace("__IDENT__", ident).replace("__NAME__", name)
        modes[target] = src.stat().st_mode & 0o777
    return files, modes


def _yaml_quote(value: str) -> str:
    return render._yaml_str(value)


def deploy_entry(kind: str, name: str, path: str, indent: str, step: str) -> str:
    """The deploy.yaml lines of the new service (indented as the file's other services)."""
    ident = name.replace("-", "_")
    i1, i2, i3 = indent, indent + step, indent + step * 2
    lines = [f"{i1}{name}:",
             f"{i2}type: {kind}",
             f"{i2}path: {_yaml_quote(path)}",
             f"{i2}image: {{package: {name}-image}}",
             f"{i2}workload: {{kind: Deployment}}",
             f"{i2}dev:  # test levels: the {kind} defaults (forgegen add-service)",
             f"{i3}start: {_yaml_quote(START[kind].format(name=name, ident=ident))}"]
    if kind in HTTP_TYPES:
        lines.append(f"{i3}health: \"http://127.0.0.1:{{port}}/healthz\"")
    else:
        lines.append(f"{i3}unit: \"sh tests/unit.sh\"")
    return "\n".join(lines) + "\n"


def _services_node(text: str, display: str) -> tuple[yaml.Node, yaml.Node]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{display}: not valid YAML: {err}") from None
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "services":
                return key, value
    raise UsageError(f"{display} has no services: mapping to add to",
                     hint="add `services:` with at least one service, or start with `forgegen init`")


def insert_service(text: str, kind: str, name: str, path: str, display: str) -> str:
    """``text`` with the new service's entry after the last service, comments kept."""
    key, services = _services_node(text, display)
    if not isinstance(services, yaml.MappingNode) or services.flow_style or not services.value:
        raise UsageError(f"{display}: services is not a block mapping of services (line {key.start_mark.line + 1})",
                         hint="write services as `services:` followed by indented entries, then run add-service again")
    names = [k.value for k, _ in services.value]
    if name in names:
        raise UsageError(f"{display} already has a service named {name!r} (line "
                         f"{services.value[names.index(name)][0].start_mark.line + 1})",
                         hint="choose another name, or edit that service in deploy.yaml")
    first_key, first_value = services.value[0]
    indent = " " * first_key.start_mark.column
    step = "  "
    if isinstance(first_value, yaml.MappingNode) and first_value.value and not first_value.flow_style:
        step = " " * max(first_value.value[0][0].start_mark.column - first_key.start_mark.column, 1)
    lines = text.splitlines(keepends=True)
    last_key, last_value = services.value[-1]
    end = last_value.end_mark.line if last_value.end_mark.column > 0 else last_value.end_mark.line - 1
    end = min(end, len(lines) - 1)
    while end > last_key.start_mark.line and (not lines[end].strip() or lines[end].lstrip().startswith("#")):
        end -= 1
    before = "".join(lines[:end + 1])
    if not before.endswith("\n"):
        before += "\n"
    entry = deploy_entry(kind, name, path, indent, step)
    return before + "\n" + entry + "".join(lines[end + 1:])


def nix_packages(kind: str, name: str, path: str) -> str:
    """The flake packages NAME and NAME-image, as lines for ``packages.<system>``."""
    src = f"(./. + {nix.nix_str('/' + path)})"
    n = nix.nix_str(name)
    attr = nix.nix_ident(name)
    image = nix.nix_ident(f"{name}-image")
    body = {
        "rust": [f"{attr} = pkgs.rustPlatform.buildRustPackage {{", f"  pname = {n};", '  version = "0.1.0";',
                 f"  src = {src};", f"  cargoLock.lockFile = {src[:-1]} + \"/Cargo.lock\");", "};"],
        "go": [f"{attr} = pkgs.buildGoModule {{", f"  pname = {n};", '  version = "0.1.0";', f"  src = {src};",
               "  vendorHash = null; # standard library only", "};"],
        "python": [f"{attr} = pkgs.python3Packages.buildPythonApplication {{", f"  pname = {n};",
                   '  version = "0.1.0";', f"  src = {src};", "  pyproject = true;",
                   "  build-system = [ pkgs.python3Packages.setuptools ];", "};"],
        "node": [f"{attr} = pkgs.writeShellApplication {{", f"  name = {n};", "  runtimeInputs = [ pkgs.nodejs ];",
                 f"  text = ''exec node ${{{src}}}/src/server.js \"$@\"'';", "};"],
        "generic": [f"{attr} = pkgs.writeShellApplication {{", f"  name = {n};",
                    f"  text = builtins.readFile {src[:-1]} + \"/main.sh\");", "};"],
    }[kind]
    image_lines = [f"{image} = pkgs.dockerTools.buildLayeredImage {{", f"  name = {n};",
                   f"  contents = [ self.packages.${{system}}.{attr} ];",
                   f"  config.Cmd = [ {nix.nix_str('/bin/' + name)} ];", "};"]
    return "\n".join(body + image_lines) + "\n"


def insert_packages(flake_text: str, lines: str) -> str | None:
    """``flake_text`` with ``lines`` above the add-service marker (indented as it), or None when
    the flake has no marker (not one Forge wrote: the caller prints the lines instead)."""
    match = re.search(r"^([ \t]*)" + re.escape(FLAKE_MARKER) + r"[ \t]*$", flake_text, re.M)
    if match is None:
        return None
    indent = match.group(1)
    block = "".join(indent + line + "\n" if line else "\n" for line in lines.splitlines())
    return flake_text[:match.start()] + block + flake_text[match.start():]


def _plain(value: str) -> render.YamlText:
    """``value`` as a plain YAML scalar when it reads back as the same string, else quoted."""
    if (re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]*(:[0-9]+[A-Za-z0-9._/-]*)?", value)
            and not re.fullmatch(r"[0-9.eE+-]+", value) and yaml.safe_load(value) == value):
        return render.YamlText(value)
    return render._yaml_str(value)


def overlay_files(config: schema.Config, name: str) -> dict[str, str]:
    """The GitOps overlay of the new service in each environment (Deployment + kustomization),
    keyed by path in the GitOps repository; the repository name follows deploy.yaml's registry."""
    from forgegen.plan import image_repository

    repo = image_repository(config, name)
    files: dict[str, str] = {}
    for env in config.environments:
        names = {**schema.name_values(config, name, env)}
        directory = pattern.fill(config.gitops.path, names)
        namespace = pattern.fill(env.namespace, names)
        files[f"{directory}/deployment.yaml"] = render.render_template(
            "services/overlay-deployment.yaml.jinja", name=_plain(name), namespace=_plain(namespace),
            project=_plain(config.project), image=_plain(repo))
        files[f"{directory}/{config.gitops.file}"] = render.render_template(
            "services/overlay-kustomization.yaml.jinja", name=render._yaml_comment(name),
            environment=render._yaml_comment(env.name), namespace=_plain(namespace),
            image=_plain(repo), tag=_plain(PLACEHOLDER_TAG))
    return files


def parent_resources(gitops_dir: Path, rel: str, file_name: str) -> tuple[str, str] | None:
    """The parent directory's kustomization with the new directory appended to its resources
    (``(path, new text)``), or None when there is no such list to extend."""
    child = PurePosixPath(rel)
    parent = gitops_dir / child.parent / file_name
    if not parent.is_file():
        return None
    text = parent.read_text(encoding="utf-8")
    match = re.search(r"^resources:[ \t]*\n((?:[ \t]+-[^\n]*\n|[ \t]*#[^\n]*\n)*)", text, re.M)
    if match is None or re.search(rf"^[ \t]+-[ \t]+{re.escape(child.name)}/?[ \t]*$", match.group(1), re.M):
        return None
    items = re.findall(r"^([ \t]+)-", match.group(1), re.M)
    indent = items[-1] if items else "  "
    new = text[:match.end()] + f"{indent}- {child.name}\n" + text[match.end():]
    return str(child.parent / file_name), new


def local_gitops_dir(config: schema.Config, base: Path) -> Path | None:
    """The GitOps repository's working tree when deploy.yaml names a local, non-bare one."""
    repo = config.gitops.repo
    if "://" in repo or re.match(r"^[\w.-]+@[\w.-]+:", repo):
        return None
    path = (base / repo).resolve()
    return path if (path / ".git").exists() else None


def _gitops_changes(result: Scaffold, config: schema.Config, gitops_dir: Path | None) -> None:
    if gitops_dir is None:
        result.notes.append("GitOps: the repository is not a local working tree; add the overlays there "
                            "(or pass --gitops-dir CHECKOUT)")
        return
    for rel, text in overlay_files(config, result.name).items():
        if (gitops_dir / rel).exists():
            raise UsageError(f"{gitops_dir / rel} already exists", hint="remove it or choose another service name")
        result.files[str(gitops_dir / rel)] = text
        result.gitops.append(rel)
        parent = parent_resources(gitops_dir, str(PurePosixPath(rel).parent), config.gitops.file)
        if parent is not None and rel.endswith("/" + config.gitops.file):
            path, new = parent
            result.edits.setdefault(str(gitops_dir / path), new)


def plan(config_path: Path, name: str, kind: str, *, path: str | None = None,
         gitops_dir: Path | None = None) -> Scaffold:
    """Everything add-service would write, validated; raises before anything is written."""
    check_name(name)
    if kind not in TYPES:
        raise UsageError(f"unknown service type {kind!r}", hint=f"use one of: {', '.join(TYPES)}")
    if not config_path.is_file():
        raise UsageError(f"{config_path} not found", hint="run add-service where deploy.yaml is, or pass --config")
    base = config_path.parent
    path = path or f"services/{name}"
    try:
        schema._relpath(path)
    except ValueError as err:
        raise UsageError(f"cannot use {path!r} as the service's path: {err}",
                         hint="pass --path with a relative path inside the project, e.g. services/orders") from None
    schema.load_config(config_path)  # problems in the file as it is are reported as such
    text = config_path.read_text(encoding="utf-8")
    new_text = insert_service(text, kind, name, path, config_path.name)
    config = schema.parse_config(new_text, config_path.name)  # must validate, or nothing is written
    target = base / path
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"{target} exists and is not empty", hint="pass --path with a new directory")
    result = Scaffold(name, kind, path)
    files, modes = service_files(kind, name, path)
    result.files.update({str(base / rel): t for rel, t in files.items()})
    result.modes.update({str(base / rel): m for rel, m in modes.items()})
    result.edits[str(config_path)] = new_text
    lines = nix_packages(kind, name, path)
    flake = base / "flake.nix"
    edited = insert_packages(flake.read_text(encoding="utf-8"), lines) if flake.is_file() else None
    if edited is None:
        result.flake_snippet = lines
    else:
        result.edits[str(flake)] = edited
    _gitops_changes(result, config, gitops_dir if gitops_dir is not None else local_gitops_dir(config, base))
    return result


def write(result: Scaffold) -> None:
    """Write what :func:`plan` computed: new files first, then the edits (each replaced whole)."""
    for path, text in result.files.items():
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        if path in result.modes:
            target.chmod(result.modes[path])
    for path, text in result.edits.items():
        tmp = Path(path + ".forge-tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
