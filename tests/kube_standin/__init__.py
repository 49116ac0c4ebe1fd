"""A Kubernetes API stand-in for tests: real HTTP, real protocol, simulated controllers.

No kube-apiserver can run on the project's machines (HARNESS.md), so this package serves the
parts of the Kubernetes API that Forge and kubectl use, over real HTTP on loopback:

* ``resources`` — the served types (built-ins, Flux's GitRepository/Kustomization, any CRD) and
  discovery;
* ``store`` — objects, one monotonic resourceVersion, watch history with 410 Gone, selectors;
* ``patch`` — JSON merge, strategic merge and JSON patch;
* ``server`` — the REST protocol (aiohttp), watch streams, ``pods/log``, fault injection;
* ``controllers`` — Deployment/ReplicaSet/StatefulSet/DaemonSet and Job controllers, a scheduler
  and a kubelet scripted per image (``controllers.kubelet``);
* ``cluster`` — :class:`KubeStandin` (what tests start, restart and drive) and :class:`Cluster`
  plus :class:`Controller` (what controllers are written against).

Writing a controller (a Flux simulation, for instance)::

    class FluxSim(Controller):
        name = "kustomize-controller"

        def setup(self):
            self.cluster.on("kustomizations", lambda ch: self.enqueue(
                (ch.obj["metadata"]["namespace"], ch.obj["metadata"]["name"])))

        def reconcile(self, key):
            ns, name = key
            ks = self.cluster.store.find("kustomizations", ns, name)
            asked = ks["metadata"].get("annotations", {}).get("reconcile.fluxcd.io/requestedAt")
            if asked and asked != ks["status"].get("lastHandledReconcileAt"):
                ...  # apply manifests with self.cluster.store.create / patch / mutate
                self.cluster.store.mutate("kustomizations", ns, name,
                    lambda o: o["status"].update(lastHandledReconcileAt=asked), subresource="status")

    standin.add(FluxSim())
"""

from .cluster import Cluster, Controller, KubeStandin, Settings
from .controllers.kubelet import (
    ImageScript,
    completes,
    crash,
    create_container_error,
    image_pull_error,
    invalid_image_name,
    missing_secret,
    oom_killed,
    readiness_failing,
    ready,
    run_container_error,
    slow_start,
    unschedulable,
)
from .resources import FLUX_GITREPOSITORY, FLUX_KUSTOMIZATION, ResourceType
from .store import ApiError, Change

__all__ = [
    "FLUX_GITREPOSITORY", "FLUX_KUSTOMIZATION", "ApiError", "Change", "Cluster", "Controller", "ImageScript",
    "KubeStandin", "ResourceType", "Settings", "completes", "crash", "create_container_error", "image_pull_error",
    "invalid_image_name", "missing_secret", "oom_killed", "readiness_failing", "ready", "run_container_error",
    "slow_start", "unschedulable",
]
