"""A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)
and real Flux (source- and kustomize-controller) on loopback, for the end-to-end tests and the
demo. Built by ``.ci/build-controlplane``; started by :func:`start_control_plane`."""

from tests.controlplane.launch import ControlPlane, NotBuilt, built_bin_dir, start_control_plane

__all__ = ["ControlPlane", "NotBuilt", "built_bin_dir", "start_control_plane"]
