"""Prometheus can scrape every service: a `metrics` container port where the service serves
/metrics (its gRPC port + 1000, services.kit.settings), scrape annotations, and a
NetworkPolicy that admits the monitoring namespace to that port and nobody else."""

from __future__ import annotations

import pytest

from services.kit.settings import DEFAULT_PORTS, METRICS_PORT_OFFSET, Settings
from tests.deploy.manifests import GRPC_SERVICES, OVERLAYS, config_map_data, containers, named, render
from tests.deploy.test_network_policies import STRANGER, Cluster, namespace_pod

PROMETHEUS = namespace_pod("monitoring", {"trellis.io/monitoring": "true"}, app="prometheus")


EDGE_METRICS_PORT = 9090  # deploy/k8s/base/settings.env: TRELLIS_EDGE_METRICS_ADDR


def metrics_port(service: str) -> int:
    return DEFAULT_PORTS[service] + METRICS_PORT_OFFSET if service != "edge" else EDGE_METRICS_PORT


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
    for service in (*GRPC_SERVICES, "edge"):
        assert cluster.ingress_allowed(PROMETHEUS, service, metrics_port(service)), service
        assert not cluster.ingress_allowed(STRANGER, service, metrics_port(service)), service
        if service != "edge":
            assert not cluster.ingress_allowed(PROMETHEUS, service, DEFAULT_PORTS[service]), f"{service} gRPC"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_edge_serves_metrics_off_the_partner_port_the_ingress_exposes(overlay: str) -> None:
    objects = render(overlay)
    [container] = [c for c in containers(named(objects, "Deployment", "edge")) if c["name"] == "edge"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": DEFAULT_PORTS["edge"], "metrics": EDGE_METRICS_PORT}
    settings = config_map_data(objects, "trellis-settings")
    assert settings["TRELLIS_EDGE_METRICS_ADDR"] == f"0.0.0.0:{EDGE_METRICS_PORT}"
    annotations = named(objects, "Deployment", "edge")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(EDGE_METRICS_PORT)
