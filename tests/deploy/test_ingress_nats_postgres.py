"""The Ingresses (the edge's and the console's), the NATS JetStream cluster and the PostgreSQL
of each overlay."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from services.kit.natsproc import nats_server_path
from tests.deploy.manifests import (
    GRPC_SERVICES, HTTP_SERVICES, OVERLAYS, SERVICE_PORTS, config_map_data, named, of_kind, pod_labels, pod_spec, render,
    selects,
)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ingresses_route_each_host_to_the_edge_or_the_console_only_over_tls(overlay: str) -> None:
    objects = render(overlay)
    ingresses = {i["metadata"]["name"]: i["spec"] for i in of_kind(objects, "Ingress")}
    assert set(ingresses) == set(HTTP_SERVICES)
    hosts_of = {}
    for name, spec in ingresses.items():
        assert "defaultBackend" not in spec, name
        backends, hosts = [], set()
        for rule in spec["rules"]:
            hosts.add(rule["host"])
            backends += [path["backend"] for path in rule["http"]["paths"]]
        # Each Ingress sends its host to its own Service, on its HTTP port, and nothing else.
        assert backends and {b["service"]["name"] for b in backends} == {name}
        assert {b["service"]["port"].get("name") or b["service"]["port"].get("number") for b in backends} <= {
            "http", SERVICE_PORTS[name]}
        assert hosts <= {h for tls in spec["tls"] for h in tls["hosts"]}, f"{name}: every host is served over TLS"
        service = named(objects, "Service", name)
        assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(named(objects, "Deployment", name)))
        hosts_of[name] = hosts
    assert not hosts_of["edge"] & hosts_of["console"], "the console has a host (an origin) of its own"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_consoles_public_url_is_its_ingress_host_at_the_root(overlay: str) -> None:
    """The OIDC redirect URI is TRELLIS_CONSOLE_PUBLIC_URL + /signin/callback, and the session
    cookie is __Host- prefixed (Path=/): the console must own its host's root path, over https."""
    objects = render(overlay)
    url = urlsplit(config_map_data(objects, "trellis-settings")["TRELLIS_CONSOLE_PUBLIC_URL"])
    assert url.scheme == "https" and url.path in ("", "/")
    (rule,) = named(objects, "Ingress", "console")["spec"]["rules"]
    assert rule["host"] == url.hostname
    assert [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] == [("/", "Prefix")]


def nats_conf(overlay: str) -> str:
    return config_map_data(render(overlay), "nats-config")["nats-server.conf"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_fsyncs_every_write(overlay: str) -> None:
    assert re.search(r"^\s*sync_interval:\s*always\s*$", nats_conf(overlay), re.M)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_config_is_accepted_by_nats_server(overlay: str, tmp_path: Path) -> None:
    conf = tmp_path / "nats-server.conf"
    conf.write_text(nats_conf(overlay))
    result = subprocess.run([nats_server_path(), "-t", "-c", str(conf)], capture_output=True, text=True,
                            env={**os.environ, "POD_NAME": "nats-0"}, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prod_nats_is_a_three_node_cluster_routing_to_every_pod() -> None:
    objects = render("prod")
    nats = named(objects, "StatefulSet", "nats")
    assert nats["spec"]["replicas"] == 3
    headless = named(objects, "Service", nats["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"].get("publishNotReadyAddresses") is True
    routes = re.findall(r"nats://[\w.-]+:\d+", nats_conf("prod").split("cluster", 1)[1])
    assert routes == [f"nats://nats-{i}.{headless['metadata']['name']}:6222" for i in range(3)]
    assert {c["mountPath"] for c in pod_spec(nats)["containers"][0]["volumeMounts"]} >= {"/data", "/etc/nats"}
    (claim,) = nats["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert "store_dir: /data/" in nats_conf("prod")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_streams_have_as_many_replicas_as_the_design_says(overlay: str) -> None:
    objects = render(overlay)
    replicas = int(config_map_data(objects, "trellis-settings")["TRELLIS_NATS_STREAM_REPLICAS"])
    servers = named(objects, "StatefulSet", "nats")["spec"]["replicas"]
    assert replicas == (3 if overlay == "prod" else 1)
    assert replicas <= servers
    if servers == 1:
        assert "cluster {" not in nats_conf(overlay), "a lone server must not wait for cluster peers"


def test_prod_postgresql_is_a_three_instance_cloudnativepg_cluster_with_a_database_per_service() -> None:
    objects = render("prod")
    (cluster,) = of_kind(objects, "Cluster")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["spec"]["instances"] == 3
    roles = {r["name"]: r for r in cluster["spec"]["managed"]["roles"]}
    databases = {d["spec"]["name"]: d["spec"] for d in of_kind(objects, "Database")}
    assert set(databases) == set(GRPC_SERVICES)
    for service, spec in databases.items():
        assert spec["cluster"]["name"] == cluster["metadata"]["name"]
        assert spec["owner"] == service and roles[service]["login"] is True
        assert roles[service]["passwordSecret"]["name"] == f"trellis-pg-{service}"
    assert cluster["spec"]["inheritedMetadata"]["labels"]["trellis.io/database"] == "true"
    (backup,) = of_kind(objects, "ScheduledBackup")
    assert backup["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    plugin = cluster["spec"]["plugins"][0]
    assert plugin["isWALArchiver"] is True
    assert plugin["parameters"]["barmanObjectName"] == of_kind(objects, "ObjectStore")[0]["metadata"]["name"]


def test_dev_postgresql_is_one_server_creating_a_database_per_service() -> None:
    objects = render("dev")
    postgres = named(objects, "StatefulSet", "postgres")
    assert postgres["spec"]["replicas"] == 1
    assert pod_labels(postgres)["trellis.io/database"] == "true"
    init = " ".join(named(objects, "ConfigMap", "postgres-init")["data"].values())
    assert set(re.findall(r"CREATE DATABASE (\w+);", init)) == set(GRPC_SERVICES)
    assert not of_kind(objects, "Cluster")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_is_recent_enough_for_counter_streams(overlay: str) -> None:
    """The edge's shared rate limit needs JetStream counter streams (nats-server 2.12+)."""
    (container,) = pod_spec(named(render(overlay), "StatefulSet", "nats"))["containers"]
    match = re.fullmatch(r"(?:[\w./-]+/)?nats:(\d+)\.(\d+)[\w.-]*(@sha256:[0-9a-f]{64})?", container["image"])
    assert match, container["image"]
    assert (int(match.group(1)), int(match.group(2))) >= (2, 12)
