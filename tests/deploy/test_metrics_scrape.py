"""Prometheus can scrape every service: a `metrics` container port where the service serves
/metrics (a gRPC service's port + 1000, services.kit.settings; the edge's and the console's
own), scrape annotations, and a
NetworkPolicy that admits the monitoring namespace to that port and nobody else."""

from __future__ import annotations

import pytest

from services.kit.settings import DEFAULT_PORTS, METRICS_PORT_OFFSET
from tests.support.settings import Settings
from tests.deploy.manifests import (
    GRPC_SERVICES, HTTP_SERVICES, OVERLAYS, SERVICE_PORTS, config_map_data, containers, named, render,
)
from tests.deploy.test_network_policies import INGRESS_CONTROLLER, STRANGER, Cluster, namespace_pod

PROMETHEUS = namespace_pod("monitoring", {"trellis.io/monitoring": "true"}, app="prometheus")


# deploy/k8s/base/settings.env: TRELLIS_EDGE_METRICS_ADDR, TRELLIS_CONSOLE_METRICS_ADDR
HTTP_METRICS_PORTS = {"edge": 9090, "console": 9091}


def metrics_port(service: str) -> int:
    return HTTP_METRICS_PORTS.get(service) or DEFAULT_PORTS[service] + METRICS_PORT_OFFSET


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_grpc_service_declares_the_metrics_port_it_serves_and_asks_to_be_scraped(overlay: str) -> None:
    objects = render(overlay)
    for service in GRPC_SERVICES:
        deployment = named(objects, "Deployment", service)
        [container] = [c for c in containers(deployment) if c["name"] == service]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        served = Settings(bind_host="0.0.0.0").metrics_address(service, f"0.0.0.0:{ports['grpc']}")
        assert served == f"0.0.0.0:{ports['metrics']}" == f"0.0.0.0:{metrics_port(service)}", service
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "true", service
        assert annotations.get("prometheus.io/port") == str(ports["metrics"]), service


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_monitoring_namespace_reaches_the_metrics_ports(overlay: str) -> None:
    cluster = Cluster(render(overlay))
    for service in (*GRPC_SERVICES, *HTTP_SERVICES):
        assert cluster.ingress_allowed(PROMETHEUS, service, metrics_port(service)), service
        assert not cluster.ingress_allowed(STRANGER, service, metrics_port(service)), service
        assert not cluster.ingress_allowed(INGRESS_CONTROLLER, service, metrics_port(service)), service
        if service not in HTTP_SERVICES:
            assert not cluster.ingress_allowed(PROMETHEUS, service, DEFAULT_PORTS[service]), f"{service} gRPC"


@pytest.mark.parametrize("service", HTTP_SERVICES)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_http_services_serve_metrics_off_the_port_the_ingress_exposes(overlay: str, service: str) -> None:
    objects = render(overlay)
    [container] = [c for c in containers(named(objects, "Deployment", service)) if c["name"] == service]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": SERVICE_PORTS[service], "metrics": HTTP_METRICS_PORTS[service]}
    settings = config_map_data(objects, "trellis-settings")
    assert settings[f"TRELLIS_{service.upper()}_METRICS_ADDR"] == f"0.0.0.0:{HTTP_METRICS_PORTS[service]}"
    annotations = named(objects, "Deployment", service)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(HTTP_METRICS_PORTS[service])
