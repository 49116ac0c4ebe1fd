"""A simulated kubelet for a real Kubernetes control plane (no kubelet can run on these machines).

Run it as a process next to a real API server (and kube-scheduler, controller-manager)::

    python -m tests.kubelet_sim --kubeconfig admin.kubeconfig --node node [--nodes N] [--bind]

or in-process: ``KubeletSim(kubeconfig, ["node"]).start()`` … ``.stop()``. It registers Nodes
(capacity, allocatable, Ready; Lease and status heartbeats), runs the pods bound to them with the
Kubernetes stand-in's scripted kubelet — the same :class:`~tests.kube_standin.ImageScript`
vocabulary, the same container state machine, pod status and Events — and serves container logs
on HTTPS for the API server's ``pods/log`` proxy. Images are scripted through ConfigMap
``forge-sim/images`` (:func:`publish_script`, from any process); unknown images become ready at
once. ``--bind`` binds pending pods itself, for a control plane without kube-scheduler.

Modules: ``sim`` (nodes, pods, the Cluster adapter), ``client`` (list+watch over aiohttp),
``logs`` (the HTTPS log endpoint), ``scripts`` (ImageScript <-> ConfigMap).
"""

from .scripts import CONFIGMAP, NAMESPACE, encode, publish_script
from .sim import KubeletSim, node_names

__all__ = ["CONFIGMAP", "NAMESPACE", "KubeletSim", "encode", "node_names", "publish_script"]
