"""The Flux simulation itself: driven by the real kubectl, writing status in Flux's order.

These check the stand-in against what Flux does, so the reconcile tests prove something:
``kubectl annotate … reconcile.fluxcd.io/requestedAt=…`` triggers it, intervals and source
revision changes trigger it, and ``lastHandledReconcileAt`` appears only in the final write,
together with the final Ready condition (kustomize-controller's ``finalizeStatus``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.flux import Flux, GitRemote
from tests.fixtures.kube import Kube
from tests.kube_standin.controllers.flux import parse_duration

pytestmark = pytest.mark.kube


def status_of(flux: Flux, kind: str, name: str) -> dict:
    return (flux.get(kind, name) or {}).get("status") or {}


def test_kubectl_annotate_gitrepository_triggers_a_fetch(kube: Kube, flux: Flux, flux_remote: GitRemote) -> None:
    old = flux.install()
    sha = flux_remote.set_tag("v2")
    assert status_of(flux, "GitRepository", "gitops")["artifact"]["revision"] == f"main@sha1:{old}"
    kube.kubectl("-n", "flux-system", "annotate", "--overwrite", "gitrepository", "gitops",
                 "reconcile.fluxcd.io/requestedAt=by-kubectl-1")
    st = kube.wait_for(lambda c: (s := (c.store.find("gitrepositories", "flux-system", "gitops") or {}).get("status", {}))
                       .get("lastHandledReconcileAt") == "by-kubectl-1" and s)
    assert st["artifact"]["revision"] == f"main@sha1:{sha}"
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["reason"] == "Succeeded"
    out = kube.kubectl("-n", "flux-system", "get", "gitrepository", "gitops",
                       "-o", "jsonpath={.status.artifact.revision}").stdout
    assert out == f"main@sha1:{sha}"


def test_kubectl_annotate_kustomization_applies_the_source_revision(kube: Kube, flux: Flux,
                                                                    flux_remote: GitRemote) -> None:
    flux.install()
    flux_remote.set_tag("v2")
    # Without a source reconcile the Kustomization re-applies the artifact it has: still v1.
    kube.kubectl("-n", "flux-system", "annotate", "--overwrite", "ks", "apps", "reconcile.fluxcd.io/requestedAt=k1")
    kube.wait_for(lambda c: (c.store.find("kustomizations", "flux-system", "apps") or {})
                  .get("status", {}).get("lastHandledReconcileAt") == "k1")
    image = kube.kubectl("get", "deployment", "api", "-o", "jsonpath={.spec.template.spec.containers[0].image}").stdout
    assert image == "registry.test/shop/api:v1"
    # The source's new revision triggers the Kustomization by itself (kustomize-controller watches sources).
    kube.kubectl("-n", "flux-system", "annotate", "--overwrite", "gitrepository", "gitops",
                 "reconcile.fluxcd.io/requestedAt=s2")
    flux.wait_applied("apps", flux_remote.head())
    image = kube.kubectl("get", "deployment", "api", "-o", "jsonpath={.spec.template.spec.containers[0].image}").stdout
    assert image == "registry.test/shop/api:v2"
    labels = kube.standin.get("deployments", "default", "api")["metadata"]["labels"]
    assert labels["kustomize.toolkit.fluxcd.io/name"] == "apps"


def test_interval_fetches_new_commits_without_a_request(kube: Kube, flux: Flux, flux_remote: GitRemote) -> None:
    flux.git_repository(interval="200ms")
    flux.kustomization()
    flux.wait_applied("apps", flux_remote.head())
    sha = flux_remote.set_tag("v5")
    flux.wait_applied("apps", sha)
    assert status_of(flux, "Kustomization", "apps").get("lastHandledReconcileAt") is None  # nobody asked


def test_final_write_carries_the_handled_token_with_the_final_ready(kube: Kube, flux: Flux,
                                                                    flux_remote: GitRemote) -> None:
    flux.install()
    seen: list[tuple[str | None, str | None, str | None]] = []

    def record(change: Any) -> None:
        st = change.obj.get("status") or {}
        ready = next((c for c in st.get("conditions") or [] if c["type"] == "Ready"), {})
        seen.append((ready.get("status"), st.get("lastHandledReconcileAt"), st.get("lastAttemptedRevision")))
    kube.standin.call(kube.standin.cluster.on, "kustomizations", record)
    sha = flux_remote.set_tag("v2")
    kube.kubectl("-n", "flux-system", "annotate", "--overwrite", "gitrepository", "gitops",
                 "reconcile.fluxcd.io/requestedAt=s1")
    flux.wait_applied("apps", sha)
    kube.kubectl("-n", "flux-system", "annotate", "--overwrite", "ks", "apps", "reconcile.fluxcd.io/requestedAt=k9")
    kube.wait_for(lambda c: any(h == "k9" for _, h, _ in seen))
    revision = f"main@sha1:{sha}"
    progressing = [s for s in seen if s[0] == "Unknown"]
    assert progressing and all(h != "k9" for _, h, _ in progressing)  # never "handled" mid-reconcile
    assert (("Unknown", None, revision) in seen) or any(r == revision for s, _, r in progressing)
    assert seen[-1] == ("True", "k9", revision)


def test_forced_failure_and_ignore_scripts(kube: Kube, flux: Flux, flux_remote: GitRemote) -> None:
    flux.install()
    flux.script(failures={"apps": ("ReconciliationFailed", "Deployment/default/api dry-run failed: denied")})
    kube.kubectl("-n", "flux-system", "annotate", "--overwrite", "ks", "apps", "reconcile.fluxcd.io/requestedAt=f1")
    st = kube.wait_for(lambda c: (s := c.store.find("kustomizations", "flux-system", "apps")["status"])
                       .get("lastHandledReconcileAt") == "f1" and s)
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ReconciliationFailed") and "denied" in ready["message"]
    flux.script(failures={}, ignore={"Kustomization/apps"})
    kube.kubectl("-n", "flux-system", "annotate", "--overwrite", "ks", "apps", "reconcile.fluxcd.io/requestedAt=f2")
    # A later request to the source is handled, so the sim has seen (and ignored) the one before.
    kube.kubectl("-n", "flux-system", "annotate", "--overwrite", "gitrepository", "gitops",
                 "reconcile.fluxcd.io/requestedAt=sync")
    kube.wait_for(lambda c: c.store.find("gitrepositories", "flux-system", "gitops")["status"]
                  .get("lastHandledReconcileAt") == "sync")
    assert status_of(flux, "Kustomization", "apps")["lastHandledReconcileAt"] == "f1"


@pytest.mark.parametrize("text, seconds", [("10m", 600.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0),
                                           ("", None), ("soon", None), ("5x", None)])
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds
