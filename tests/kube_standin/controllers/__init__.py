"""The controllers the stand-in runs by default, and the scripted kubelet.

Add your own (a Flux simulation, say) by passing it to ``KubeStandin.start(controllers=[...])``
after :func:`default_controllers`, or later with ``KubeStandin.add``.
"""

from __future__ import annotations

from .jobs import JobController
from .kubelet import Kubelet, Scheduler
from .workloads import DaemonSetController, DeploymentController, ReplicaSetController, StatefulSetController


def default_controllers() -> list:
    return [Scheduler(), Kubelet(), ReplicaSetController(), DeploymentController(),
            StatefulSetController(), DaemonSetController(), JobController()]


__all__ = ["DaemonSetController", "DeploymentController", "JobController", "Kubelet", "ReplicaSetController", "Scheduler",
           "StatefulSetController", "default_controllers"]
