"""The API resource types the stand-in serves, and how clients find them (discovery).

Each :class:`ResourceType` is one ``group/version/plural``. Built-in types are registered by
:func:`builtin_types`; custom resources (Flux's GitRepository and Kustomization among them) are
added with :meth:`Registry.add`, or by creating a ``CustomResourceDefinition`` through the API.
Discovery documents (``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>/<version>``) are computed
from the registry, so kubectl sees exactly what the store serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    status: bool = False  # has a /status subresource (status ignored on the main resource)
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    singular: str = ""
    has_spec: bool = True  # spec changes bump metadata.generation
    extra_subresources: tuple[str, ...] = ()  # e.g. ("log",) for pods

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        return f"{self.group}/{self.version}/{self.plural}"

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()

    def discovery(self) -> list[dict]:
        entry = {
            "name": self.plural, "singularName": self.singular_name, "namespaced": self.namespaced,
            "kind": self.kind, "verbs": list(ALL_VERBS),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        out = [entry]
        if self.status:
            out.append({"name": f"{self.plural}/status", "singularName": "", "namespaced": self.namespaced,
                        "kind": self.kind, "verbs": ["get", "patch", "update"]})
        for sub in self.extra_subresources:
            out.append({"name": f"{self.plural}/{sub}", "singularName": "", "namespaced": self.namespaced,
                        "kind": self.kind, "verbs": ["get"]})
        return out


@dataclass
class Registry:
    types: dict[str, ResourceType] = field(default_factory=dict)

    def add(self, rt: ResourceType) -> ResourceType:
        self.types[rt.key] = rt
        return rt

    def find(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.types.get(f"{group}/{version}/{plural}")

    def lookup(self, name: str) -> ResourceType:
        """A type by plural, kind, short name or ``plural.group`` (kubectl's spelling)."""
        low = name.lower()
        for rt in self.types.values():
            full = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
            if low in (rt.plural, rt.kind.lower(), full, rt.key.lower()) or low in rt.short_names:
                return rt
        raise KeyError(f"the stand-in serves no resource type {name!r}")

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        for rt in self.types.values():
            if rt.api_version == api_version and rt.kind == kind:
                return rt
        return None

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for rt in self.types.values():
            if rt.group:
                versions = out.setdefault(rt.group, [])
                if rt.version not in versions:
                    versions.append(rt.version)
        return out

    def resource_list(self, group: str, version: str) -> dict | None:
        types = [rt for rt in self.types.values() if rt.group == group and rt.version == version]
        if not types:
            return None
        resources = [entry for rt in sorted(types, key=lambda t: t.plural) for entry in rt.discovery()]
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": resources}

    def group_list(self) -> dict:
        groups = []
        for name, versions in sorted(self.groups().items()):
            vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
            groups.append({"name": name, "versions": vs, "preferredVersion": vs[0]})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


FLUX_GITREPOSITORY = ResourceType("source.toolkit.fluxcd.io", "v1", "GitRepository", "gitrepositories",
                                  status=True, short_names=("gitrepo",), categories=("fluxcd",))
FLUX_KUSTOMIZATION = ResourceType("kustomize.toolkit.fluxcd.io", "v1", "Kustomization", "kustomizations",
                                  status=True, short_names=("ks",), categories=("fluxcd",))


def builtin_types() -> Registry:
    reg = Registry()
    for rt in (
        ResourceType("", "v1", "Namespace", "namespaces", namespaced=False, status=True, short_names=("ns",),
                     has_spec=False),
        ResourceType("", "v1", "Node", "nodes", namespaced=False, status=True, short_names=("no",), has_spec=False),
        ResourceType("", "v1", "Pod", "pods", status=True, short_names=("po",), categories=("all",),
                     extra_subresources=("log",), has_spec=False),
        ResourceType("", "v1", "Event", "events", short_names=("ev",), has_spec=False),
        ResourceType("", "v1", "ConfigMap", "configmaps", short_names=("cm",), has_spec=False),
        ResourceType("", "v1", "Secret", "secrets", has_spec=False),
        ResourceType("", "v1", "Service", "services", status=True, short_names=("svc",), categories=("all",)),
        ResourceType("", "v1", "ServiceAccount", "serviceaccounts", short_names=("sa",), has_spec=False),
        ResourceType("apps", "v1", "Deployment", "deployments", status=True, short_names=("deploy",),
                     categories=("all",)),
        ResourceType("apps", "v1", "ReplicaSet", "replicasets", status=True, short_names=("rs",),
                     categories=("all",)),
        ResourceType("apps", "v1", "StatefulSet", "statefulsets", status=True, short_names=("sts",),
                     categories=("all",)),
        ResourceType("apps", "v1", "DaemonSet", "daemonsets", status=True, short_names=("ds",),
                     categories=("all",)),
        ResourceType("apps", "v1", "ControllerRevision", "controllerrevisions", has_spec=False),
        ResourceType("batch", "v1", "Job", "jobs", status=True, categories=("all",)),
        ResourceType("coordination.k8s.io", "v1", "Lease", "leases"),
        ResourceType("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
                     namespaced=False, status=True, short_names=("crd", "crds")),
        FLUX_GITREPOSITORY,
        FLUX_KUSTOMIZATION,
    ):
        reg.add(rt)
    return reg


def type_from_crd(crd: dict) -> list[ResourceType]:
    """The resource types a ``CustomResourceDefinition`` object declares (every served version)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for v in spec.get("versions") or []:
        if not v.get("served", True):
            continue
        subs = v.get("subresources") or {}
        out.append(ResourceType(
            group=spec["group"], version=v["name"], kind=names["kind"], plural=names["plural"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced", status="status" in subs,
            short_names=tuple(names.get("shortNames") or ()), categories=tuple(names.get("categories") or ()),
            singular=names.get("singular", ""),
        ))
    return out
