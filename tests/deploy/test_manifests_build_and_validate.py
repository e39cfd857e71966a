"""Every overlay builds with `kubectl kustomize`, and every object it yields is valid for the
Kubernetes API (kubernetes-validate, strict: unknown fields are errors)."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from tests.deploy.manifests import OVERLAYS, render

# The oldest Kubernetes minor we support (native gRPC probes, the preStop sleep action and
# matchLabelKeys are all there) and the newest the installed schemas know.
KUBERNETES_VERSIONS = ("1.31", kubernetes_validate.utils.latest_version())

# Custom resources kubernetes-validate has no schema for (CloudNativePG and its Barman Cloud
# plugin); anything else without a schema is an error. These get structural checks only.
CUSTOM_KINDS = {
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("postgresql.cnpg.io/v1", "Database"),
    ("postgresql.cnpg.io/v1", "ScheduledBackup"),
    ("barmancloud.cnpg.io/v1", "ObjectStore"),
}


def test_both_overlays_exist() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_into_namespaced_objects(overlay: str) -> None:
    objects = render(overlay)
    assert objects, f"{overlay} rendered nothing"
    for obj in objects:
        if obj["kind"] == "Namespace":
            continue
        assert obj["metadata"].get("namespace") == "trellis", f"{obj['kind']}/{obj['metadata']['name']} has no namespace"
        assert obj["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "trellis"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schema(overlay: str, version: str) -> None:
    problems = []
    for obj in render(overlay):
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            assert obj["metadata"].get("name") and isinstance(obj.get("spec"), dict), f"{where}: no name or spec"
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{where}: no schema for {obj['apiVersion']} {obj['kind']} (add it to CUSTOM_KINDS only if it is a CRD)")
    assert not problems, "\n".join(problems)


def test_the_validator_rejects_a_broken_object() -> None:
    deployment = copy.deepcopy(next(o for o in render("prod") if o["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
