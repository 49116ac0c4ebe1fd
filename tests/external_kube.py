"""The Kube helper for an external cluster (fixture ``external_kube``, tests/fixtures/external.py):
scripted images become real pod specs (tests/kube_standin/podspec.py); nothing is published to a
kubelet simulation. Kept outside tests/fixtures/ so the fixture plugins load in their order."""

from __future__ import annotations

import json
from dataclasses import dataclass

from tests.fixtures.realkube import RealKube
from tests.kube_standin import ImageScript
from tests.kube_standin.podspec import DEFAULT_IMAGE, container_for

LOGICAL = "forge-e2e.dev/image"  # template annotation: the logical image, per container (JSON)


@dataclass
class ExternalKube(RealKube):
    """RealKube on a user's cluster: scripts become real pod specs, nothing is published."""

    backend = "external"
    image: str = DEFAULT_IMAGE

    def script(self, image: str, script: ImageScript) -> None:
        self.scripts[image] = script

    def reference(self, logical: str) -> str:
        return container_for(self.scripts.get(logical) or ImageScript(), self.image)[0]["image"]

    def image_of(self, pod: dict) -> str:
        logical = json.loads(((pod.get("metadata") or {}).get("annotations") or {}).get(LOGICAL) or "{}")
        c = pod["spec"]["containers"][0]
        return logical.get(c["name"], c["image"])

    def _prepared(self, resource: str, obj: dict) -> dict:
        obj = super()._prepared(resource, obj)
        template = obj if resource == "pods" else (obj.get("spec") or {}).get("template")
        if not template:
            return obj
        meta = template.setdefault("metadata", {})
        annotations = meta.setdefault("annotations", {})
        logical = json.loads(annotations.get(LOGICAL) or "{}")
        volumes = template["spec"].setdefault("volumes", [])
        for c in template["spec"].get("containers") or []:
            known = logical.get(c["name"])
            image = known if known is not None and c.get("image") == self.reference(known) else c.get("image", "")
            fields, vols = container_for(self.scripts.get(image) or ImageScript(), self.image)
            resources = fields.pop("resources", {})
            for key in ("command", "readinessProbe", "volumeMounts"):
                c.pop(key, None)
            c.update(fields)
            for part, values in resources.items():
                c.setdefault("resources", {}).setdefault(part, {}).update(values)
            volumes[:] = [v for v in volumes if v["name"] not in {x["name"] for x in vols}] + vols
            logical[c["name"]] = image
        annotations[LOGICAL] = json.dumps(logical, sort_keys=True)
        return obj
