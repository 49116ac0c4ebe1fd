"""Connecting to the cluster (forgegen.runtime.kube) and the rollout entry point's plan handling.

Kubeconfig and context per environment from deploy.yaml, ``KUBECONFIG``, ``~/.kube/config`` or
in-cluster config; the plan helper here (``plan_for``) is reused by test_rollout_watch.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from forgegen.errors import ConfigError
from forgegen.plan import Plan, build_plan
from forgegen.runtime import kube as kubemod
from forgegen.schema import parse_config
from tests.fixtures.kube import Kube

ROOT = Path(__file__).resolve().parent.parent


def plan_for(kubeconfig: Path | None, *, context: str | None = None, workload: str = "api") -> Plan:
    """A real plan (deploy.yaml -> Config -> Plan) whose staging environment uses ``kubeconfig``."""
    env = "    namespace: default\n"
    if kubeconfig is not None:
        env += f"    kubeconfig: {kubeconfig}\n"
    if context is not None:
        env += f"    kube_context: {context}\n"
    text = (
        "version: 1\nproject: shop\nregistry: {host: registry.test}\n"
        "gitops: {repo: \"git@example.test:shop/gitops.git\"}\n"
        "environments:\n  - name: staging\n" + env +
        "services:\n"
        f"  api:\n    workload: {{name: {workload}}}\n"
        "    rollout: {deadline: 20, readiness_grace: 5, scheduling_grace: 5}\n"
    )
    return build_plan(parse_config(text))


def test_plan_carries_the_kubeconfig_and_context(tmp_path: Path) -> None:
    kc = tmp_path / "kc"
    kc.write_text("apiVersion: v1\nkind: Config\n")
    tgt = plan_for(kc, context="prod-admin").service("api").target("staging")
    assert (tgt.kubeconfig, tgt.kube_context, tgt.namespace) == (str(kc), "prod-admin", "default")


def test_resolution_order(tmp_path: Path) -> None:
    a, b, home = tmp_path / "a", tmp_path / "b", tmp_path / "home"
    a.write_text("x")
    b.write_text("x")
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text("x")
    env = {"KUBECONFIG": f"{tmp_path / 'missing'}:{b}", "HOME": str(home)}
    assert kubemod.resolve(str(a), "ctx", environ=env) == kubemod.Connection("deploy.yaml", str(a), "ctx")
    assert kubemod.resolve(None, None, environ=env) == kubemod.Connection("KUBECONFIG", f"{tmp_path / 'missing'}:{b}", None)
    assert kubemod.resolve(None, None, environ={"HOME": str(home)}).source == "default"
    token = tmp_path / "token"
    token.write_text("t")
    incluster = kubemod.resolve(None, None, environ={"HOME": str(tmp_path / "nohome"), "KUBERNETES_SERVICE_HOST": "10.0.0.1"},
                                token_file=token)
    assert incluster.source == "in-cluster"


def test_missing_kubeconfig_is_a_config_error_with_a_next_step(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        kubemod.resolve(str(tmp_path / "nope"), None, environ={})
    assert "named in deploy.yaml does not exist" in str(err.value) and err.value.hint
    with pytest.raises(ConfigError) as err:
        kubemod.resolve(None, None, environ={"HOME": str(tmp_path)})
    assert "no Kubernetes connection configured" in str(err.value) and "KUBECONFIG" in err.value.hint


def test_unknown_context_is_a_config_error(kube: Kube) -> None:
    with pytest.raises(ConfigError) as err:
        kubemod.api_client(str(kube.kubeconfig), "no-such-context")
    assert "no-such-context" in str(err.value) and "kube_context" in err.value.hint


def test_client_from_kubeconfig_env_and_context_reaches_the_right_server(kube: Kube) -> None:
    from kubernetes import client

    api = kubemod.api_client(None, None, environ={"KUBECONFIG": str(kube.kubeconfig)})
    assert client.VersionApi(api).get_code().minor == "32"
    api = kubemod.client_for_target(plan_for(kube.kubeconfig, context="elsewhere").service("api").target("staging"))
    assert api.configuration.host != kube.standin.url  # the other context's server


def test_runtime_modules_do_not_import_kubernetes_eagerly() -> None:
    code = ("import sys, forgegen.runtime.rollout, forgegen.runtime.kube; "
            "print('kubernetes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


# -- `forge rollout SERVICE:ENVIRONMENT` ------------------------------------------------------


def forge(*args: str) -> int:
    from forgegen import console
    from forgegen.runtime.cli import cli

    return console.run_cli(cli, "forge", list(args))


def test_forge_rollout_json_success_exits_0(kube: Kube, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    kube.deployment("api", "app:1")
    kube.set_image("Deployment", "api", "app:2")
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan_for(kube.kubeconfig).to_json())
    assert forge("rollout", "--plan", str(plan_file), "--json", "api:staging") == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert (doc["outcome"], doc["service"], doc["environment"]) == ("success", "api", "staging")
    assert doc["workload"]["name"] == "api" and doc["image"] == "app:2"
    assert 'deployment "api" successfully rolled out' in err


def test_forge_rollout_failure_exits_1_with_reason_and_logs(kube: Kube, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from tests.kube_standin import crash

    kube.deployment("api", "app:1")
    kube.script("app:bad", crash(after=0.05, exit_code=9, exit_logs=("fatal: missing DATABASE_URL",)))
    kube.set_image("Deployment", "api", "app:bad")
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan_for(kube.kubeconfig).to_json())
    assert forge("rollout", "--plan", str(plan_file), "api:staging") == 1
    _, err = capsys.readouterr()
    assert "rollout of default/Deployment/api FAILED" in err and "| fatal: missing DATABASE_URL" in err
    assert "forge: error: rollout of default/Deployment/api failed:" in err and "exit" in err and "hint:" in err
