"""Typed views of the Kubernetes objects Forge reads, as they come off the wire (JSON dicts).

These are ``TypedDict`` s (as kopf types its bodies): no conversion and no cost at run time,
only the fields Forge reads, every one optional (``total=False``) because the API server leaves
out empty and default fields. Code reads them with ``.get(...)`` and a default, e.g.
``(pod.get("status") or {}).get("containerStatuses") or []`` is ``container_statuses(pod)``.

Kinds: Deployment, StatefulSet, DaemonSet (:class:`Workload`), ReplicaSet, ControllerRevision,
Pod, Event, Job, Flux's Kustomization and GitRepository (:class:`FluxObject`), Lease.
"""

from __future__ import annotations

from typing import Any, TypedDict


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    generation: int
    resourceVersion: str
    creationTimestamp: str
    deletionTimestamp: str
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: list[OwnerReference]


class OwnerReference(TypedDict, total=False):
    kind: str
    name: str
    uid: str
    controller: bool


class Condition(TypedDict, total=False):
    """A status condition (workloads, ReplicaSets, pods, Jobs, Flux objects)."""

    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


# -- pods --------------------------------------------------------------------------------------


class Container(TypedDict, total=False):
    name: str
    image: str
    command: list[str]


class PodSpec(TypedDict, total=False):
    containers: list[Container]
    initContainers: list[Container]
    nodeName: str


class ContainerStateWaiting(TypedDict, total=False):
    reason: str
    message: str


class ContainerStateTerminated(TypedDict, total=False):
    exitCode: int
    reason: str
    message: str
    startedAt: str
    finishedAt: str


class ContainerStateRunning(TypedDict, total=False):
    startedAt: str


class ContainerState(TypedDict, total=False):
    waiting: ContainerStateWaiting
    running: ContainerStateRunning
    terminated: ContainerStateTerminated


class ContainerStatus(TypedDict, total=False):
    name: str
    image: str
    imageID: str
    ready: bool
    started: bool
    restartCount: int
    state: ContainerState
    lastState: ContainerState


class PodStatus(TypedDict, total=False):
    phase: str
    reason: str
    message: str
    conditions: list[Condition]
    containerStatuses: list[ContainerStatus]
    initContainerStatuses: list[ContainerStatus]


class Pod(TypedDict, total=False):
    metadata: ObjectMeta
    spec: PodSpec
    status: PodStatus


class PodTemplate(TypedDict, total=False):
    metadata: ObjectMeta
    spec: PodSpec


# -- workloads (Deployment, StatefulSet, DaemonSet) and what they own ----------------------------


class LabelSelector(TypedDict, total=False):
    matchLabels: dict[str, str]
    matchExpressions: list[Any]  # {key, operator, values}, read as they come


class RollingUpdate(TypedDict, total=False):
    partition: int
    maxUnavailable: int | str
    maxSurge: int | str


class UpdateStrategy(TypedDict, total=False):
    type: str  # RollingUpdate | OnDelete | Recreate
    rollingUpdate: RollingUpdate


class WorkloadSpec(TypedDict, total=False):
    replicas: int
    selector: LabelSelector
    template: PodTemplate
    progressDeadlineSeconds: int
    minReadySeconds: int
    updateStrategy: UpdateStrategy  # StatefulSet, DaemonSet
    strategy: UpdateStrategy  # Deployment


class WorkloadStatus(TypedDict, total=False):
    observedGeneration: int
    replicas: int
    updatedReplicas: int
    readyReplicas: int
    availableReplicas: int
    unavailableReplicas: int
    currentReplicas: int  # StatefulSet
    currentRevision: str
    updateRevision: str
    desiredNumberScheduled: int  # DaemonSet
    currentNumberScheduled: int
    updatedNumberScheduled: int
    numberReady: int
    numberAvailable: int
    numberUnavailable: int
    conditions: list[Condition]


class Workload(TypedDict, total=False):
    """A Deployment, StatefulSet or DaemonSet (``kind`` is set on the ones Forge lists)."""

    kind: str
    metadata: ObjectMeta
    spec: WorkloadSpec
    status: WorkloadStatus


class ReplicaSet(TypedDict, total=False):
    metadata: ObjectMeta
    spec: WorkloadSpec
    status: WorkloadStatus


class ControllerRevisionData(TypedDict, total=False):
    spec: WorkloadSpec


class ControllerRevision(TypedDict, total=False):
    metadata: ObjectMeta
    revision: int
    data: ControllerRevisionData


# -- events ------------------------------------------------------------------------------------


class ObjectReference(TypedDict, total=False):
    kind: str
    name: str
    namespace: str
    uid: str
    fieldPath: str


class Event(TypedDict, total=False):
    metadata: ObjectMeta
    involvedObject: ObjectReference
    type: str  # Normal | Warning
    reason: str
    message: str
    count: int
    firstTimestamp: str
    lastTimestamp: str
    eventTime: str


# -- Jobs --------------------------------------------------------------------------------------


class JobStatus(TypedDict, total=False):
    active: int
    succeeded: int
    failed: int
    conditions: list[Condition]


class Job(TypedDict, total=False):
    metadata: ObjectMeta
    status: JobStatus


# -- Flux --------------------------------------------------------------------------------------


class Artifact(TypedDict, total=False):
    revision: str


class FluxStatus(TypedDict, total=False):
    """The status of a Kustomization (``lastAppliedRevision`` …) or a source (``artifact``)."""

    observedGeneration: int
    conditions: list[Condition]
    lastHandledReconcileAt: str
    lastAppliedRevision: str
    lastAttemptedRevision: str
    artifact: Artifact


class SourceRef(TypedDict, total=False):
    kind: str
    name: str
    namespace: str


class FluxSpec(TypedDict, total=False):
    suspend: bool
    ref: dict[str, str]  # a source's branch / tag / semver / commit / name
    sourceRef: SourceRef  # a Kustomization's source


class FluxObject(TypedDict, total=False):
    """A Kustomization, GitRepository, OCIRepository or Bucket."""

    kind: str
    metadata: ObjectMeta
    spec: FluxSpec
    status: FluxStatus


# -- Lease -------------------------------------------------------------------------------------


class LeaseSpec(TypedDict, total=False):
    holderIdentity: str | None
    leaseDurationSeconds: int
    acquireTime: str | None
    renewTime: str | None
    leaseTransitions: int


class Lease(TypedDict, total=False):
    metadata: ObjectMeta
    spec: LeaseSpec


# -- readers for the paths every watcher takes --------------------------------------------------


def container_statuses(pod: Pod) -> list[ContainerStatus]:
    """The pod's container statuses (none before the kubelet reported)."""
    return (pod.get("status") or {}).get("containerStatuses") or []


def conditions(obj: Pod | Workload | ReplicaSet | Job | FluxObject) -> list[Condition]:
    """The object's status conditions (none yet: an empty list)."""
    status: PodStatus | WorkloadStatus | JobStatus | FluxStatus = obj.get("status") or {}
    return status.get("conditions") or []


def condition(obj: Pod | Workload | ReplicaSet | Job | FluxObject, type_: str) -> Condition | None:
    """The condition of type ``type_``, if the object has one."""
    return next((c for c in conditions(obj) if c.get("type") == type_), None)


def terminated(cs: ContainerStatus) -> ContainerStateTerminated | None:
    """The container's termination: its current state's, else its last state's."""
    return (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")


def template_containers(obj: Workload | ReplicaSet) -> list[Container]:
    """The containers of a workload's (or ReplicaSet's) pod template."""
    return (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
