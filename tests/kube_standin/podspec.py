"""Image scripts as real pod specs, and back: the scenario table for a real kubelet.

A real kubelet runs real images, so on an external cluster (``FORGE_E2E_KUBECONFIG``) a scripted
image becomes a small public image (``FORGE_E2E_IMAGE``, default :data:`DEFAULT_IMAGE`, which
needs ``sh``, ``sleep``, ``touch``, ``tail``) with a command, probes and limits that make a real
kubelet do what the script says. :data:`TABLE` lists each rollout scenario and its pod spec.

:func:`container_for` writes that spec; :func:`script_of` reads it back — the kubelet of the
stand-in and of ``tests/kubelet_sim`` use it for containers no image script covers, so the very
specs an external cluster gets run on our control plane too (that is how the external backend is
proven here). Only this vocabulary is understood:

* an image reference a registry would refuse to parse (upper case in the repository)
  → ``InvalidImageName``; the tag :data:`ABSENT_TAG` → ``ErrImagePull``/``ImagePullBackOff``;
* ``sh -c`` lines: ``echo 'line'`` (logs), ``sleep S``, ``exit N`` (a crash with code N), a run
  counter in the emptyDir :data:`STATE_DIR` (crash only on the first N starts), ``tail
  /dev/zero`` under a memory limit (an OOM kill), ``touch /tmp/ready`` (becomes ready: an exec
  readiness probe tests the file), ``exec sleep`` (runs on);
* a readiness probe on a TCP port nothing listens on → never ready, ``Unhealthy`` events.

What a real kubelet cannot be made to do on demand (``CreateContainerError``,
``RunContainerError``) has no row: :func:`container_for` raises :class:`NoRealSpec`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import replace

from .controllers.kubelet import (
    ImageScript,
    crash,
    image_pull_error,
    invalid_image_name,
    oom_killed,
    readiness_failing,
    ready,
    slow_start,
)

DEFAULT_IMAGE = "busybox:1.36"
ABSENT_TAG = "forge-e2e-absent"
STATE_DIR = "/forge-state"
OOM_LIMIT = "32Mi"
CLOSED_PORT = 1
FOREVER = "exec sleep 1000000"
PULL_MESSAGE = "failed to resolve reference: not found"

# scenario -> (what it is, the pod spec a real kubelet gets for it), for the README and the tests
TABLE: dict[str, tuple[ImageScript, str]] = {
    "success": (ready(), "sh -c \"echo ...; exec sleep\""),
    "slow-start": (slow_start(0.3), "sh -c \"sleep S; touch /tmp/ready; exec sleep\" + exec readiness probe "
                   "`test -e /tmp/ready`"),
    "crash": (crash(after=0.1, exit_code=3), "sh -c \"echo ...; sleep S; echo ...; exit 3\""),
    "crash-once": (crash(after=0.1, exits=1, ready_after=0.1), "the crash guarded by a run counter in an emptyDir"),
    "oom": (oom_killed(after=0.1), f"sh -c \"sleep S; tail /dev/zero\" with limits.memory {OOM_LIMIT}"),
    "readiness": (readiness_failing(), f"exec sleep + tcpSocket readiness probe on port {CLOSED_PORT}"),
    "image-pull": (image_pull_error(), f"the image with tag {ABSENT_TAG}"),
    "invalid-name": (invalid_image_name(), "forge-e2e/Invalid-Name:1 (upper case: not a reference)"),
    "missing-secret": (ready(), "env from secretKeyRef to an absent Secret (the test's own spec)"),
    "unschedulable": (ready(), "requests.memory 1Ti (the test's own spec)"),
}


class NoRealSpec(ValueError):
    """The script has no real-kubelet equivalent."""


def _repository(image: str) -> str:
    last = image.rsplit("/", 1)
    if ":" in last[-1]:
        return image[: len(image) - len(last[-1]) + last[-1].index(":")]
    return image


def _lines(script: ImageScript) -> list[str]:
    def echo(lines: tuple[str, ...]) -> list[str]:
        return [f"echo {shlex.quote(line)}" for line in lines]

    out = echo(script.logs)
    if script.oom:
        return [*out, f"sleep {script.exit_after or 0}", "tail /dev/zero"]
    if script.exit_after is not None:
        exit_ = [f"sleep {script.exit_after}", *echo(script.exit_logs), f"exit {script.exit_code}"]
        if script.exits is None:
            return out + exit_
        out.append(f'if [ "$(ls {STATE_DIR} | wc -l)" -lt {script.exits} ]; then touch {STATE_DIR}/run-$(date +%s%N); '
                   + "; ".join(exit_) + "; fi")
    if script.ready_after:
        out += [f"sleep {script.ready_after}", "touch /tmp/ready"]
    return [*out, FOREVER]


def container_for(script: ImageScript, image: str = DEFAULT_IMAGE) -> tuple[dict, list[dict]]:
    """``(container fields, pod volumes)`` that make a real kubelet run ``script``."""
    if script.create_error or script.run_error or script.config_error or script.unschedulable:
        raise NoRealSpec("no real-kubelet pod spec for this script (CreateContainerError, RunContainerError, "
                         "a config error or unschedulability come from the test's own spec or not at all)")
    if script.invalid_name:
        return {"image": "forge-e2e/Invalid-Name:1"}, []
    if script.pull_error:
        return {"image": f"{_repository(image)}:{ABSENT_TAG}"}, []
    fields: dict = {"image": image, "command": ["sh", "-c", "\n".join(_lines(script))]}
    volumes: list[dict] = []
    if script.oom:
        fields["resources"] = {"limits": {"memory": OOM_LIMIT}}
    if script.exits is not None:
        fields["volumeMounts"] = [{"name": "forge-state", "mountPath": STATE_DIR}]
        volumes.append({"name": "forge-state", "emptyDir": {}})
    if script.ready_after is None and script.exit_after is None:
        fields["readinessProbe"] = {"tcpSocket": {"port": CLOSED_PORT}, "periodSeconds": 1, "failureThreshold": 1}
    elif script.ready_after:
        fields["readinessProbe"] = {"exec": {"command": ["test", "-e", "/tmp/ready"]}, "periodSeconds": 1,
                                    "failureThreshold": 1}
    return fields, volumes


# -- reading a spec back (the simulated kubelets) ---------------------------------------------

_COUNTER = re.compile(r'^if \[ "\$\(ls \S+ \| wc -l\)" -lt (\d+) \]; then touch [^;]+; (.*); fi$')


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:
        return []


def _run(lines: list[str], script: ImageScript) -> ImageScript | None:
    """Interpret ``lines`` (the vocabulary above) into ``script``; None if a line is not in it.
    Echoes before the first ``sleep`` are the start logs; those after it, the exit logs."""
    pending: list[str] = []
    slept, started = 0.0, False
    for line in lines:
        w = _words(line)
        if w[:1] == ["echo"]:
            pending.append(" ".join(w[1:]))
            continue
        if not started:
            script, pending, started = replace(script, logs=tuple(pending)), [], True
        if w[:1] == ["sleep"] and len(w) == 2:
            slept = float(w[1])
        elif w == ["tail", "/dev/zero"]:
            return replace(script, exit_after=slept, exit_code=137, oom=True, ready_after=None)
        elif w[:1] == ["exit"] and len(w) == 2 and w[1].isdigit():
            return replace(script, exit_logs=tuple(pending), exit_after=slept, exit_code=int(w[1]))
        elif w == ["touch", "/tmp/ready"]:
            script = replace(script, ready_after=slept)
        elif line == FOREVER:
            return script
        elif (m := _COUNTER.match(line)) is not None:
            inner = _run(m.group(2).split("; "), ImageScript())
            if inner is None or inner.exit_after is None:
                return None
            script = replace(script, exits=int(m.group(1)), exit_after=inner.exit_after, exit_code=inner.exit_code,
                             exit_logs=inner.exit_logs)
        else:
            return None
    return None


def script_of(container: dict) -> ImageScript | None:
    """What a real kubelet would do with ``container``, as a script (None: nothing this table
    knows, so the kubelet's default applies)."""
    image = container.get("image") or ""
    path = _repository(image).split("/", 1)[-1] if "/" in image else _repository(image)
    if path != path.lower():  # repository names are lower case: no registry is asked
        return invalid_image_name()
    if image.endswith(f":{ABSENT_TAG}"):
        return image_pull_error(PULL_MESSAGE)
    command = container.get("command") or []
    if command[:2] != ["sh", "-c"] or len(command) != 3:
        return None
    probe = container.get("readinessProbe") or {}
    script = _run(command[2].split("\n"), ImageScript(logs=()))
    if script is None:
        return None
    if script.oom and "memory" not in ((container.get("resources") or {}).get("limits") or {}):
        return None  # no limit: tail would only take the node's memory
    if (probe.get("tcpSocket") or {}).get("port") == CLOSED_PORT:
        return replace(script, ready_after=None,
                       unhealthy=f"Readiness probe failed: dial tcp :{CLOSED_PORT}: connect: connection refused")
    if probe.get("exec") and script.ready_after:
        return replace(script, unhealthy="Readiness probe failed: ")
    if script.exit_after is not None and script.exits is None:
        return replace(script, ready_after=None)
    return script
