"""The deploy end-to-end tests' third backend: a user's cluster (``FORGE_E2E_*``, see
tests/fixtures/external.py :class:`DeploySettings`), with the user's registry and git remote.

:class:`ExternalBackend` is what tests/fixtures/shop.py's ``shop_cluster_on`` uses for backend
``external``. Per test it makes an id ``forge-e2e-<hex>`` and

* namespaces ``<id>`` (the example's ``shop``) and ``<id>-p`` (``shop-production``);
* in ``FORGE_E2E_FLUX_NAMESPACE``: GitRepository ``<id>`` reading branch ``<id>`` of
  ``FORGE_E2E_GIT_URL`` and Kustomizations ``<id>-<environment>`` (the example's ``flux-system``
  and ``apps-<environment>``), with the secret ``FORGE_E2E_GIT_SECRET`` if set;
* images ``<registry host>/<path>/<service>`` (``FORGE_E2E_REGISTRY``); the tag the GitOps
  template starts from (``amd64-0000000``) is pushed there once per session: the example built
  from its first commit, so a rollback to it really runs;

and deletes the Kustomizations (Flux prunes what they applied), the GitRepository, the
namespaces and the branch afterwards. Images stay in the registry (tags are content-derived; a
rerun reuses them). Forge runs with the kubeconfig's identity (examples/rbac/forge-e2e.yaml, a
superset of forge.yaml). The tests read the GitOps remote through a local mirror fetched before
each read.

A real kubelet runs the images, so a test's image script becomes the service's own program:
:meth:`ExternalBackend.script` rewrites it (:func:`write_program`: api's Python ``main`` in
``api/app.py``, web's ``src/server.js``; the logs, then the crash's exit code, or a migration's
outcome under ``migrate``, or the real server) and commits; the next deploy builds, pushes and
rolls out that image (a new tag). Only with ``FORGE_E2E_NIXPKGS`` are the images real programs
a real node can run; with the nixpkgs stand-in (the project's own proof) the simulated kubelet
cannot run them and is told the same behaviour through its ConfigMap
(``FORGE_E2E_SIMULATED_KUBELET=1``).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.fixtures.external import DeploySettings, external_kubeconfig, portable_kubeconfig
from tests.fixtures.kube import wait_until
from tests.fixtures.nixenv import Flake
from tests.kube_standin import ImageScript

INITIAL_TAG = "amd64-0000000"  # what examples/gitops starts from
FLUX_API = {"gitrepositories": "/apis/source.toolkit.fluxcd.io/v1",
            "kustomizations": "/apis/kustomize.toolkit.fluxcd.io/v1"}
_seeded: set[str] = set()  # image repositories whose INITIAL_TAG this session pushed


def git(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc.stdout.strip()


class ExternalRegistry:
    """The user's registry as the tests see it (``host``, ``url``, ``organization``)."""

    def __init__(self, settings: DeploySettings) -> None:
        self.host, self.url, self.organization = settings.host, settings.url, settings.organization


SCRIPTED = "scripted by the test (tests/external_shop.py)"


def check_programmable(script: ImageScript) -> None:
    """Fail unless a service's own program alone can show ``script`` on a real node."""
    unsupported = [f for f in ("oom", "pull_error", "invalid_name", "config_error", "create_error", "run_error",
                               "unschedulable", "unhealthy", "exits") if getattr(script, f) not in (None, False)]
    if unsupported or (script.exit_after is None and script.ready_after != 0.0):
        raise AssertionError(f"{script}: no program alone shows this on a real node ({unsupported or 'readiness'})")


def python_program(script: ImageScript) -> str:
    """Python appended to the api package's ``app.py``: a ``main`` (the console script's entry
    point) that prints the logs at every start; a crash prints its exit logs and returns its code
    (migration or not); otherwise ``api migrate`` prints the completion logs and returns the
    completion code, and anything else is the real ``main``: the server, answering /healthz."""
    def say(lines: tuple[str, ...], indent: str) -> list[str]:
        return [f"{indent}print({chr(10).join(lines)!r}, flush=True)"] if lines else []

    code = [f"# {SCRIPTED}", "_serve = main", "", "", "def main(argv: list[str] | None = None) -> int:", *say(script.logs, "    ")]
    if script.exit_after is not None:
        return "\n".join([*code, *say(script.exit_logs, "    "), f"    return {script.exit_code}"])
    if script.completes_after is not None:  # (None: a migration that never ends: it serves)
        code += ['    if (sys.argv[1:] if argv is None else argv)[:1] == ["migrate"]:',
                 *say(script.completion_logs, "        "), f"        return {script.completion_code}"]
    return "\n".join([*code, "    return _serve(argv)"])


def node_program(script: ImageScript) -> str:
    """JavaScript put before web's ``src/server.js``: the same behaviour as :func:`python_program`
    (``web migrate`` is ``node src/server.js migrate``); serving is the rest of server.js."""
    def say(lines: tuple[str, ...], indent: str) -> list[str]:
        return [f"{indent}console.log({json.dumps(chr(10).join(lines))});"] if lines else []

    code = ['"use strict";', f"// {SCRIPTED}", *say(script.logs, "")]
    if script.exit_after is not None:
        return "\n".join([*code, *say(script.exit_logs, ""), f"process.exit({script.exit_code});"])
    if script.completes_after is not None:
        code += ['if (process.argv[2] === "migrate") {', *say(script.completion_logs, "  "),
                 f"  process.exit({script.completion_code});", "}"]
    return "\n".join(code)


# the file of each example service that holds its entry point, and how the scripted code joins it
PROGRAMS = {"api": ("api/app.py", lambda s, text: f"{text.rstrip()}\n\n\n{python_program(s)}\n"),
            "web": ("src/server.js", lambda s, text: f"{node_program(s)}\n{text}")}


def write_program(shop: Flake, service: str, script: ImageScript) -> str:
    """Make ``service``'s own program do ``script`` (:data:`PROGRAMS`); commit; the commit."""
    check_programmable(script)
    assert service in PROGRAMS, f"{service}: only {', '.join(PROGRAMS)} can be scripted on a real node"
    rel, join = PROGRAMS[service]
    path = shop.dir / "services" / service / rel
    assert path.is_file(), f"the example's {service} has no {rel}"
    path.write_text(join(script, path.read_text()))
    return shop.commit(f"{service}: scripted by the test")


class ExternalBackend:
    """A user's cluster: objects read with the kubeconfig's identity; Flux is the user's."""

    name = "external"

    def __init__(self, settings: DeploySettings, shop: Flake, tmp_path: Path) -> None:
        from forgegen.runtime.kube import api_client
        from tests.fixtures.realkube import namespaced_kubeconfig

        self.settings, self.shop = settings, shop
        self.id = self.branch = f"forge-e2e-{uuid.uuid4().hex[:8]}"
        admin = tmp_path / "external-admin.kubeconfig"
        admin.write_text(yaml.safe_dump(portable_kubeconfig(Path(external_kubeconfig() or ""),
                                                            os.environ.get("FORGE_E2E_CONTEXT") or None)))
        admin.chmod(0o600)
        self.api = api_client(str(admin), None)
        self.created: list[str] = []
        self.namespaces = {"flux-system": settings.flux_namespace}
        for logical, suffix in (("shop", ""), ("shop-production", "-p")):
            self.namespaces[logical] = self._namespace(f"{self.id}{suffix}")
        self.kubeconfig = namespaced_kubeconfig(admin, tmp_path / "external.kubeconfig", self.namespaces["shop"])
        self.flux_names = {"flux-system": self.id, **{f"apps-{e}": f"{self.id}-{e}" for e in ("staging", "production")}}
        self.registry = ExternalRegistry(settings)
        self.mirror: Path | None = None
        self.applied: list[tuple[str, str]] = []
        self.closed = False

    def _namespace(self, name: str) -> str:
        from kubernetes.client import CoreV1Api

        CoreV1Api(self.api).create_namespace({"metadata": {"name": name}})
        self.created.append(name)
        wait_until(lambda: CoreV1Api(self.api).list_namespaced_service_account(
            name, field_selector="metadata.name=default").items, timeout=60, interval=0.1)
        return name

    def describe(self) -> str:
        return f"the cluster of FORGE_E2E_KUBECONFIG ({self.id})"

    @property
    def extra_env(self) -> dict[str, str]:
        if not self.settings.nixpkgs:
            return {}
        from tests.conftest import NIX_CONFIG
        return {"NIX_CONFIG": NIX_CONFIG.replace("substituters =\n", "") + self.settings.nix_config + "\n"}

    # -- the example, adapted -----------------------------------------------------------------

    def adapt_deploy(self, text: str) -> str:
        """deploy.yaml pointed at the user's registry, git branch and Flux objects."""
        s = self.settings
        assert f"host: {s.host}" in text  # (start_shop_cluster sets registry.host)
        for old, new in (("organization: shop", f"organization: {s.organization}"),
                         ("insecure: true", f"insecure: {'true' if s.insecure else 'false'}"),
                         ("repo: ./gitops.git", f"repo: {s.git_url}"), ("branch: main", f"branch: {self.id}"),
                         ("name: flux-system}", f"name: {self.id}}}"),
                         ('kustomizations: ["apps-{environment}"]', f'kustomizations: ["{self.id}-{{environment}}"]')):
            assert old in text, f"the example's deploy.yaml no longer has {old!r}"
            text = text.replace(old, new)
        return text

    def adapt_gitops(self, text: str) -> str:
        return text.replace("localhost:5000/shop/", f"{self.settings.host}/{self.settings.organization}/")

    def prepare(self) -> None:
        """Before the first deploy: real nixpkgs if asked, and the starting tag in the registry."""
        if self.settings.nixpkgs:
            self.shop.nixpkgs_ref = self.settings.nixpkgs
            self.shop.nix("flake", "lock", env=self.extra_env, timeout=3600)
            self.shop.commit("images from real nixpkgs")
        tls = [] if not self.settings.insecure else ["--src-tls-verify=false", "--dest-tls-verify=false"]
        for service in ("api", "web"):
            repo = f"{self.settings.host}/{self.settings.organization}/{service}"
            if repo in _seeded:
                continue
            report = json.loads(self.shop.run_app(f"push:{service}", "--json", env=self.extra_env, timeout=3600).stdout)
            subprocess.run(["skopeo", "copy", "--quiet", *tls, f"docker://{repo}@{report['deploy_digest']}",
                            f"docker://{repo}:{INITIAL_TAG}"], check=True, capture_output=True, timeout=600)
            _seeded.add(repo)

    def publish(self, local: Path) -> None:
        """Push the seeded local GitOps repository's main to the user's remote as our branch;
        ``local`` is then the mirror the tests read."""
        git(f"--git-dir={local}", "push", "--quiet", self.settings.git_url, f"main:refs/heads/{self.id}")
        self.mirror = local

    def sync_remote(self) -> None:
        if self.mirror is not None:
            git(f"--git-dir={self.mirror}", "fetch", "--quiet", "--force", self.settings.git_url,
                f"refs/heads/{self.id}:refs/heads/main")

    # -- cluster ------------------------------------------------------------------------------

    def rest(self, method: str, path: str, body: Any = None) -> Any:
        req = self.api.param_serialize(method, path, body=body, auth_settings=["BearerToken"],
                                       header_params={"Content-Type": "application/json", "Accept": "application/json"})
        resp = self.api.call_api(*req, _request_timeout=30)
        data = resp.read()
        if resp.status == 404:
            return None
        assert 200 <= resp.status < 300, f"{method} {path}: {resp.status} {data.decode(errors='replace')}"
        return json.loads(data or b"{}")

    def get(self, resource: str, namespace: str, name: str) -> dict | None:
        from tests.fixtures.shop import API
        return self.rest("GET", f"{API[resource]}/namespaces/{namespace}/{resource}/{name}")

    def list(self, resource: str, namespace: str, label_selector: str | None = None) -> list[dict]:
        from tests.fixtures.shop import API
        query = f"?labelSelector={label_selector}" if label_selector else ""
        return (self.rest("GET", f"{API[resource]}/namespaces/{namespace}/{resource}{query}") or {}).get("items") or []

    def script(self, image: str, script: ImageScript) -> None:
        """Make the service of ``image`` really do ``script`` (its own program), and commit."""
        service = image.rsplit("/", 1)[-1].split(":")[0].split("@")[0]
        sha = write_program(self.shop, service, script)
        if self.settings.simulated_kubelet:
            from tests.kubelet_sim.scripts import publish_script
            publish_script(self.api, f"{self.settings.host}/{self.settings.organization}/{service}:amd64-{sha[:7]}",
                           script)

    def install_flux(self, remote: Path, namespace: str, kustomizations: dict[str, str]) -> None:
        source: dict[str, Any] = {"interval": "10m", "url": self.settings.git_url, "ref": {"branch": self.id}}
        if self.settings.git_secret:
            source["secretRef"] = {"name": self.settings.git_secret}
        objs = [("gitrepositories", {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                                     "metadata": {"name": self.id, "namespace": namespace}, "spec": source})]
        for name, path in kustomizations.items():
            objs.append(("kustomizations", {
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                "metadata": {"name": self.flux_names.get(name, name), "namespace": namespace},
                "spec": {"interval": "10m", "path": path, "prune": True,
                         "sourceRef": {"kind": "GitRepository", "name": self.id}}}))
        for resource, obj in objs:
            self.rest("POST", f"{FLUX_API[resource]}/namespaces/{namespace}/{resource}", obj)
            self.applied.append((resource, obj["metadata"]["name"]))

    def close(self) -> None:
        """Kustomizations first (Flux prunes what they applied), then the source, the namespaces
        and the branch; each step is attempted even if one before it failed."""
        from kubernetes.client import CoreV1Api

        if self.closed:
            return
        self.closed = True
        ns = self.settings.flux_namespace
        errors: list[str] = []

        def attempt(what: str, fn: Any) -> None:
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - cleanup reports every failure at the end
                errors.append(f"{what}: {e}")

        for resource, name in sorted(self.applied, key=lambda a: a[0] != "kustomizations"):
            path = f"{FLUX_API[resource]}/namespaces/{ns}/{resource}/{name}"
            attempt(f"delete {resource}/{name}", lambda p=path: self.rest("DELETE", p))
            attempt(f"wait for {resource}/{name} to go",
                    lambda p=path: wait_until(lambda: self.rest("GET", p) is None, timeout=120, interval=0.2))
        for name in self.created:
            attempt(f"delete namespace {name}", lambda n=name: CoreV1Api(self.api).delete_namespace(n))
        if self.mirror is not None:
            attempt(f"delete branch {self.id}",
                    lambda: git(f"--git-dir={self.mirror}", "push", "--quiet", self.settings.git_url,
                                f":refs/heads/{self.id}"))
        assert not errors, f"cleanup of {self.id} on the external cluster: " + "; ".join(errors)
