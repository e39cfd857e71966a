"""What the deploy tests share: rendering the kustomize overlays and walking the objects."""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.console.entrypoints.settings import ConsoleSettings
from services.kit.settings import DEFAULT_PORTS

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
GRPC_SERVICES = ("identity", "registry", "webhooks", "logs")
# The HTTP services, each reached from outside through its own Ingress host.
HTTP_SERVICES = ("edge", "console")
# Every service's port: the gRPC services' and the edge's from DEFAULT_PORTS, the console's from
# its setting's default (TRELLIS_CONSOLE_ADDR).
SERVICE_PORTS = {**DEFAULT_PORTS, "console": int(ConsoleSettings.model_fields["console_addr"].default.rpartition(":")[2])}

Obj = dict[str, Any]


def kubectl() -> str:
    """The kubectl binary; its absence fails the test (the manifests must be checked)."""
    path = shutil.which("kubectl") or ("/usr/bin/kubectl" if Path("/usr/bin/kubectl").exists() else None)
    if path is None:
        pytest.fail("kubectl is not installed: the deploy tests need `kubectl kustomize` to build "
                    "deploy/k8s/overlays/* (install kubectl, e.g. apt-get install kubectl)", pytrace=False)
    return path


@functools.lru_cache(maxsize=None)
def _render(path: str) -> tuple[Obj, ...]:
    result = subprocess.run([kubectl(), "kustomize", path], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {path} failed:\n{result.stderr}", pytrace=False)
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(overlay: str) -> list[Obj]:
    """Every object `kubectl kustomize deploy/k8s/overlays/<overlay>` prints."""
    return list(_render(str(K8S / "overlays" / overlay)))


def of_kind(objects: list[Obj], *kinds: str) -> list[Obj]:
    return [o for o in objects if o["kind"] in kinds]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert matches, f"no {kind}/{name}"
    return matches[0]


def pod_spec(workload: Obj) -> Obj:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: Obj) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def containers(workload: Obj) -> Iterator[Obj]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) matches `labels`."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def config_map_data(objects: list[Obj], name_prefix: str) -> dict[str, str]:
    """The data of the ConfigMap generated as `name_prefix` (kustomize adds a hash suffix)."""
    maps = [o for o in objects if o["kind"] == "ConfigMap" and
            (o["metadata"]["name"] == name_prefix or o["metadata"]["name"].startswith(name_prefix + "-"))]
    assert len(maps) == 1, f"expected one ConfigMap {name_prefix}, found {[m['metadata']['name'] for m in maps]}"
    return maps[0].get("data", {})


def container_env(objects: list[Obj], container: Obj, secret_values: dict[tuple[str, str], str]) -> dict[str, str]:
    """The environment a container gets: envFrom ConfigMaps, then env, with each secretKeyRef
    resolved from `secret_values[(secret, key)]` (optional ones left out when absent)."""
    env: dict[str, str] = {}
    config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        assert ref is not None, f"{container['name']}: only ConfigMaps may be imported whole (envFrom)"
        env.update(config_maps[ref["name"]])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        source = var["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            value = secret_values.get((ref["name"], ref["key"]))
            if value is None:
                assert ref.get("optional"), f"{container['name']}: no test value for secret {ref['name']}/{ref['key']}"
                continue
            env[var["name"]] = value
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[var["name"]] = config_maps[ref["name"]][ref["key"]]
        elif "fieldRef" in source:
            env[var["name"]] = f"<{source['fieldRef']['fieldPath']}>"
    return env
