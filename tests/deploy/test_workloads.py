"""Every workload of every overlay: hardened security context, probes, requests and limits,
a Service, a PodDisruptionBudget and autoscalers where the design says so."""

from __future__ import annotations

import pytest

from services.kit.settings import DEFAULT_PORTS
from tests.deploy.manifests import (
    GRPC_SERVICES, HTTP_SERVICES, OVERLAYS, SERVICE_PORTS, WORKLOAD_KINDS, Obj, containers, named, of_kind, pod_labels,
    pod_spec, render, selects,
)


def workloads(overlay: str) -> list[Obj]:
    return of_kind(render(overlay), *WORKLOAD_KINDS)


def trellis_containers(overlay: str) -> list[tuple[Obj, Obj]]:
    """(workload, container) for every container running the Trellis image."""
    return [(w, c) for w in workloads(overlay) for c in containers(w) if "trellis" in c["image"].rsplit("/", 1)[-1]]


def ids(pairs: list[tuple[Obj, Obj]]) -> list[str]:
    return [f"{w['metadata']['name']}/{c['name']}" for w, c in pairs]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_as_a_numeric_non_root_user_with_runtime_default_seccomp(overlay: str) -> None:
    for workload in workloads(overlay):
        ctx = pod_spec(workload).get("securityContext", {})
        where = f"{overlay}: {workload['kind']}/{workload['metadata']['name']}"
        assert ctx.get("runAsNonRoot") is True, where
        assert isinstance(ctx.get("runAsUser"), int) and ctx["runAsUser"] > 0, where
        assert ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_locked_down(overlay: str) -> None:
    for workload in workloads(overlay):
        for container in containers(workload):
            ctx = container.get("securityContext", {})
            where = f"{overlay}: {workload['metadata']['name']}/{container['name']}"
            assert ctx.get("runAsNonRoot") is True, where
            assert isinstance(ctx.get("runAsUser"), int) and ctx["runAsUser"] > 0, where
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("readOnlyRootFilesystem") is True, where
            assert ctx.get("privileged", False) is False, where
            assert "ALL" in ctx.get("capabilities", {}).get("drop", []), where
            assert not ctx.get("capabilities", {}).get("add"), where
            assert ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_cpu_and_memory_requests_and_limits(overlay: str) -> None:
    for workload in workloads(overlay):
        for container in containers(workload):
            resources = container.get("resources", {})
            where = f"{overlay}: {workload['metadata']['name']}/{container['name']}"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{where}: {kind}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_trellis_containers_write_only_to_a_tmp_emptydir(overlay: str) -> None:
    for workload, container in trellis_containers(overlay):
        volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
        tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{workload['metadata']['name']}: /tmp"
        for mount in container.get("volumeMounts", []):
            if mount["mountPath"] != "/tmp":
                assert mount.get("readOnly") is True, f"{workload['metadata']['name']}: {mount['mountPath']} is writable"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_pod_gets_an_api_token_or_service_links(overlay: str) -> None:
    objects = render(overlay)
    accounts = {o["metadata"]["name"]: o for o in of_kind(objects, "ServiceAccount")}
    for workload in workloads(overlay):
        spec = pod_spec(workload)
        where = f"{overlay}: {workload['metadata']['name']}"
        assert spec.get("automountServiceAccountToken") is False, where
        # Service links would put e.g. TRELLIS_EDGE_PORT=tcp://… into the environment.
        assert spec.get("enableServiceLinks") is False, where
        account = spec.get("serviceAccountName")
        assert account in accounts, f"{where}: its own ServiceAccount"
        assert accounts[account].get("automountServiceAccountToken") is False, account


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grpc_services_have_native_grpc_probes_on_their_port(overlay: str) -> None:
    for name in GRPC_SERVICES:
        deployment = named(render(overlay), "Deployment", name)
        (container,) = pod_spec(deployment)["containers"]
        assert container["args"] == [name]
        # The gRPC port, and /metrics on its own (tests/deploy/test_metrics_scrape.py).
        assert {p["name"]: p["containerPort"] for p in container["ports"]}["grpc"] == DEFAULT_PORTS[name]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == DEFAULT_PORTS[name], f"{name}: {probe}"


@pytest.mark.parametrize("service", HTTP_SERVICES)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_http_services_have_readiness_and_liveness_probes_on_their_port(overlay: str, service: str) -> None:
    (container,) = pod_spec(named(render(overlay), "Deployment", service))["containers"]
    assert container["args"] == [service]
    assert [p["containerPort"] for p in container["ports"] if p["name"] == "http"] == [SERVICE_PORTS[service]]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, f"{service}: {probe}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_long_running_containers_have_readiness_and_liveness_probes(overlay: str) -> None:
    for workload in of_kind(render(overlay), "Deployment", "StatefulSet"):
        for container in pod_spec(workload)["containers"]:
            assert "readinessProbe" in container and "livenessProbe" in container, workload["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_has_a_service_and_a_disruption_budget(overlay: str) -> None:
    objects = render(overlay)
    for workload in of_kind(objects, "Deployment") + [named(objects, "StatefulSet", "nats")]:
        labels = pod_labels(workload)
        name = workload["metadata"]["name"]
        ports = {p["name"] for c in pod_spec(workload)["containers"] for p in c.get("ports", [])}
        services = [s for s in of_kind(objects, "Service") if selects({"matchLabels": s["spec"]["selector"]}, labels)]
        assert services, f"{overlay}: no Service for {name}"
        for service in services:
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in ports, f"{service['metadata']['name']}: targetPort {port['targetPort']}"
        budgets = [p for p in of_kind(objects, "PodDisruptionBudget") if selects(p["spec"]["selector"], labels)]
        assert len(budgets) == 1, f"{overlay}: PodDisruptionBudget of {name}"
        # maxUnavailable keeps node drains possible with a single replica (dev).
        assert budgets[0]["spec"].get("maxUnavailable") == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_edge_webhooks_and_console_scale_with_an_autoscaler_that_owns_the_replica_count(overlay: str) -> None:
    objects = render(overlay)
    autoscalers = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(objects, "HorizontalPodAutoscaler")}
    assert set(autoscalers) == {"edge", "webhooks", "console"}
    for name, hpa in autoscalers.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # A replica count in the Deployment would fight the autoscaler at every apply.
        assert "replicas" not in named(objects, "Deployment", name)["spec"], name


def test_prod_runs_several_replicas_of_everything() -> None:
    objects = render("prod")
    for deployment in of_kind(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        count = deployment["spec"].get("replicas") or named(objects, "HorizontalPodAutoscaler", name)["spec"]["minReplicas"]
        assert count >= 2, name
    assert named(objects, "HorizontalPodAutoscaler", "edge")["spec"]["maxReplicas"] > 3


def test_dev_runs_one_replica_of_everything() -> None:
    objects = render("dev")
    for workload in of_kind(objects, "Deployment", "StatefulSet"):
        name = workload["metadata"]["name"]
        count = workload["spec"].get("replicas") or named(objects, "HorizontalPodAutoscaler", name)["spec"]["minReplicas"]
        assert count == 1, name


def test_prod_pins_the_image_by_digest() -> None:
    images = {c["image"] for _, c in trellis_containers("prod")}
    assert len(images) == 1
    (image,) = images
    assert "@sha256:" in image and ":latest" not in image


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrations_job_migrates_every_service_with_only_its_own_database_url(overlay: str) -> None:
    job = named(render(overlay), "Job", "trellis-migrate")
    spec = pod_spec(job)
    assert spec["restartPolicy"] == "Never"
    migrated = {}
    for container in spec["containers"]:
        assert container["args"][0] == "migrate", container["name"]
        (service,) = container["args"][1:]
        refs = [v["valueFrom"]["secretKeyRef"] for v in container.get("env", []) if "secretKeyRef" in v.get("valueFrom", {})]
        names = [v["name"] for v in container.get("env", []) if "secretKeyRef" in v.get("valueFrom", {})]
        migrated[service] = [(n, r["name"], r["key"]) for n, r in zip(names, refs)]
    assert migrated == {s: [(f"TRELLIS_{s.upper()}_DATABASE_URL", "trellis-database-urls", s)] for s in GRPC_SERVICES}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_reads_only_its_own_database_url(overlay: str) -> None:
    for workload, container in trellis_containers(overlay):
        if workload["kind"] != "Deployment":
            continue
        name = workload["metadata"]["name"]
        refs = [(v["name"], v["valueFrom"]["secretKeyRef"]["key"]) for v in container.get("env", [])
                if v.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "trellis-database-urls"]
        assert refs == ([(f"TRELLIS_{name.upper()}_DATABASE_URL", name)] if name in GRPC_SERVICES else []), name


def test_prod_runs_migrations_before_the_rollout_under_argo_cd() -> None:
    annotations = named(render("prod"), "Job", "trellis-migrate")["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "PreSync"
