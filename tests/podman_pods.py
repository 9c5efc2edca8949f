"""A rendered Deployment of the chart as a `podman run` command: its container's command
and args, environment (Secret and ConfigMap references resolved from the same rendering),
user and group, read-only root filesystem, dropped capabilities, no privilege escalation,
the `/tmp` emptyDir as a tmpfs of its size limit, and its ConfigMap volumes as read-only
files. Kubernetes gives each pod its own network namespace; here every container shares
the host's, so the listen addresses are moved to free ports (the one change made)."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

Manifest = dict[str, Any]
# podman's default limits (nofile 1048576) need CAP_SYS_RESOURCE, which a container host
# may withhold from its root (runc: "error setting rlimits ... operation not permitted"):
# limits every kernel grants, and ample for a service.
LIMITS = ["--ulimit", "nofile=16384:16384", "--ulimit", "nproc=8192:8192"]
# Emptydir size limits as tmpfs sizes (the chart writes e.g. 1Gi).
_UNITS = {"Ki": "k", "Mi": "m", "Gi": "g"}


def by_kind(objects: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {o["metadata"]["name"]: o for o in objects if o and o.get("kind") == kind}


def _secret_value(secrets: dict[str, Manifest], name: str, key: str) -> str:
    secret = secrets[name]
    if key in secret.get("stringData", {}):
        return secret["stringData"][key]
    return base64.b64decode(secret["data"][key]).decode()


def env_of(container: Manifest, objects: list[Manifest]) -> dict[str, str]:
    """The container's environment with every valueFrom resolved (a missing reference
    raises KeyError naming it, as the pod would fail to start)."""
    secrets, maps = by_kind(objects, "Secret"), by_kind(objects, "ConfigMap")
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif ref := item["valueFrom"].get("secretKeyRef"):
            env[item["name"]] = _secret_value(secrets, ref["name"], ref["key"])
        elif ref := item["valueFrom"].get("configMapKeyRef"):
            env[item["name"]] = maps[ref["name"]]["data"][ref["key"]]
        else:
            raise KeyError(f"{item['name']}: unsupported valueFrom {item['valueFrom']}")
    return env


def _tmpfs_size(limit: str) -> str:
    number, unit = limit[:-2], limit[-2:]
    return f"{number}{_UNITS[unit]}" if unit in _UNITS else limit


def podman_run(
    deployment: Manifest,
    objects: list[Manifest],
    image: str,
    name: str,
    files: Path,
    listen: dict[str, str],
) -> list[str]:
    """`podman run` arguments (after `podman --runtime runc`) for the Deployment's only
    container. ConfigMap volumes are written under ``files``; ``listen`` replaces env
    values (the listen addresses on the shared host network)."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = container["securityContext"]
    pod_security = pod.get("securityContext", {})
    uid = security.get("runAsUser", pod_security.get("runAsUser"))
    gid = security.get("runAsGroup", pod_security.get("runAsGroup", uid))
    argv = ["run", "--detach", "--name", name, "--network", "host", "--user", f"{uid}:{gid}"]
    argv += LIMITS
    if security.get("readOnlyRootFilesystem"):
        argv += ["--read-only", "--read-only-tmpfs=false"]
    argv += [f"--cap-drop={c}" for c in security.get("capabilities", {}).get("drop", [])]
    argv += [f"--cap-add={c}" for c in security.get("capabilities", {}).get("add", [])]
    if security.get("allowPrivilegeEscalation") is False:
        argv += ["--security-opt", "no-new-privileges"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    maps = by_kind(objects, "ConfigMap")
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            size = volume["emptyDir"].get("sizeLimit")
            options = "rw,mode=1777" + (f",size={_tmpfs_size(size)}" if size else "")
            argv += ["--tmpfs", f"{mount['mountPath']}:{options}"]
        elif "configMap" in volume:
            data = maps[volume["configMap"]["name"]]["data"]
            folder = Path(tempfile.mkdtemp(dir=files, prefix=f"{mount['name']}-"))
            for key, text in data.items():
                (folder / key).write_text(text)
                (folder / key).chmod(0o644)
            folder.chmod(0o755)
            source = folder / mount["subPath"] if "subPath" in mount else folder
            argv += ["--volume", f"{source}:{mount['mountPath']}:ro"]
        else:
            raise KeyError(f"{name}: volume {mount['name']} is neither an emptyDir nor a ConfigMap")
    for key, value in {**env_of(container, objects), **listen}.items():
        argv += ["--env", f"{key}={value}"]
    if "command" in container:
        argv += ["--entrypoint", container["command"][0]]
        return [*argv, image, *container["command"][1:], *container.get("args", [])]
    return [*argv, image, *container.get("args", [])]
