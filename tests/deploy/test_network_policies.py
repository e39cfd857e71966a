"""The NetworkPolicies, evaluated the way Kubernetes does, against who must and must not reach
whom: only the edge and the console from outside, each service only from its callers, everything
to NATS, PostgreSQL and DNS, webhooks to HTTPS on the public internet only, the console to the
four gRPC services, NATS and the identity provider only."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest

from tests.deploy.manifests import OVERLAYS, SERVICE_PORTS, Obj, named, of_kind, pod_labels, render, selects

NAMESPACE = "trellis"


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str]
    namespace_labels: dict[str, str] = field(default_factory=dict)
    ip: str = "10.0.0.10"


@dataclass(frozen=True)
class External:
    ip: str


def namespace_pod(name: str, extra: dict[str, str] | None = None, **labels: str) -> Pod:
    return Pod(name, labels, {"kubernetes.io/metadata.name": name, **(extra or {})})


INGRESS_CONTROLLER = namespace_pod("ingress-nginx", **{"app.kubernetes.io/name": "ingress-nginx"})
ADMIN = namespace_pod("platform-admin", {"trellis.io/admin": "true"}, app="admin-ui")
STRANGER = namespace_pod("someone-else", app="curious")
KUBE_DNS = namespace_pod("kube-system", **{"k8s-app": "kube-dns"})
IDENTITY_PROVIDER = namespace_pod("keycloak", {"trellis.io/identity-provider": "true"}, app="keycloak")


class Cluster:
    """The overlay's pods and policies; `allowed(src, dst, port)` as a CNI would decide."""

    def __init__(self, objects: list[Obj]) -> None:
        self.policies = of_kind(objects, "NetworkPolicy")
        namespace = named(objects, "Namespace", NAMESPACE)
        self.ns_labels = {"kubernetes.io/metadata.name": NAMESPACE, **namespace["metadata"].get("labels", {})}
        self.pods = {w["metadata"]["name"]: Pod(NAMESPACE, pod_labels(w), self.ns_labels)
                     for w in of_kind(objects, "Deployment", "StatefulSet", "Job")}
        for cluster in of_kind(objects, "Cluster"):  # CloudNativePG instances
            labels = {**cluster["spec"].get("inheritedMetadata", {}).get("labels", {}),
                      "cnpg.io/cluster": cluster["metadata"]["name"]}
            self.pods["postgres"] = Pod(NAMESPACE, labels, self.ns_labels)

    def _selecting(self, pod: Pod, direction: str) -> list[Obj]:
        if pod.namespace != NAMESPACE:
            return []
        return [p for p in self.policies if direction in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], pod.labels)]

    @staticmethod
    def _peer_matches(peer: Obj, other: Pod | External) -> bool:
        if "ipBlock" in peer:
            if not isinstance(other, External):
                return False
            ip = ipaddress.ip_address(other.ip)
            block = peer["ipBlock"]
            if ip.version != ipaddress.ip_network(block["cidr"]).version or ip not in ipaddress.ip_network(block["cidr"]):
                return False
            return not any(ip.version == ipaddress.ip_network(e).version and ip in ipaddress.ip_network(e)
                           for e in block.get("except", []))
        if isinstance(other, External):
            return False
        if "namespaceSelector" in peer:
            if not selects(peer["namespaceSelector"], other.namespace_labels):
                return False
        elif other.namespace != NAMESPACE:
            return False
        return selects(peer.get("podSelector", {}), other.labels)

    @staticmethod
    def _port_matches(rule: Obj, port: int, protocol: str) -> bool:
        ports = rule.get("ports")
        if not ports:
            return True
        return any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports)

    def _allows(self, policies: list[Obj], key: str, peers_key: str, other: Pod | External, port: int, protocol: str) -> bool:
        if not policies:
            return True  # not isolated in this direction
        for policy in policies:
            for rule in policy["spec"].get(key, []):
                peers = rule.get(peers_key)
                if (not peers or any(self._peer_matches(p, other) for p in peers)) and self._port_matches(rule, port, protocol):
                    return True
        return False

    def ingress_allowed(self, src: Pod | str, dst: str, port: int) -> bool:
        """The destination's side alone (each side must hold even if the other were open)."""
        src = self.pods[src] if isinstance(src, str) else src
        return self._allows(self._selecting(self.pods[dst], "Ingress"), "ingress", "from", src, port, "TCP")

    def allowed(self, src: Pod | str, dst: Pod | External | str, port: int, protocol: str = "TCP") -> bool:
        src = self.pods[src] if isinstance(src, str) else src
        dst = self.pods[dst] if isinstance(dst, str) else dst
        egress = self._allows(self._selecting(src, "Egress"), "egress", "to", dst, port, protocol)
        ingress = isinstance(dst, External) or self._allows(self._selecting(dst, "Ingress"), "ingress", "from", src, port, protocol)
        return egress and ingress


@pytest.fixture(params=OVERLAYS)
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return Cluster(render(request.param))


SERVICES = ("identity", "registry", "webhooks", "logs", "edge", "console")
# Who calls whom over gRPC, and nobody else.
CALLERS = {
    "identity": {"registry", "edge", "console"},
    "registry": {"edge", "webhooks", "console"},
    "webhooks": {"edge", "console"},
    "logs": {"console"},
}
# What is reached from outside, through the ingress controller.
PUBLIC = ("edge", "console")


def test_everything_is_denied_by_default(cluster: Cluster) -> None:
    deny = [p for p in cluster.policies if p["spec"]["podSelector"] == {}
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny, "a default-deny policy for every pod"


def test_only_the_edge_and_the_console_are_reachable_from_the_ingress_controller(cluster: Cluster) -> None:
    for name in PUBLIC:
        assert cluster.allowed(INGRESS_CONTROLLER, name, SERVICE_PORTS[name]), name
        assert not cluster.allowed(STRANGER, name, SERVICE_PORTS[name]), name
        assert not cluster.allowed(ADMIN, name, SERVICE_PORTS[name]), name
    # Each on its own port only.
    assert not cluster.allowed(INGRESS_CONTROLLER, "edge", SERVICE_PORTS["console"])
    assert not cluster.allowed(INGRESS_CONTROLLER, "console", SERVICE_PORTS["edge"])
    for name in CALLERS:
        assert not cluster.allowed(INGRESS_CONTROLLER, name, SERVICE_PORTS[name]), name
    assert not cluster.allowed(INGRESS_CONTROLLER, "nats", 4222)


def test_each_grpc_service_is_reachable_only_from_its_callers(cluster: Cluster) -> None:
    for name, callers in CALLERS.items():
        for caller in SERVICES:
            if caller == name:
                continue
            expected = caller in callers
            assert cluster.allowed(caller, name, SERVICE_PORTS[name]) is expected, f"{caller} -> {name}"
            assert cluster.ingress_allowed(caller, name, SERVICE_PORTS[name]) is expected, f"{name} admits {caller}"
        assert not cluster.allowed(STRANGER, name, SERVICE_PORTS[name]), name
        assert not cluster.allowed("nats", name, SERVICE_PORTS[name]), name
        assert not cluster.allowed("trellis-migrate", name, SERVICE_PORTS[name]), name


def test_the_admin_namespace_reaches_every_grpc_service_but_not_the_data(cluster: Cluster) -> None:
    for name in CALLERS:
        assert cluster.allowed(ADMIN, name, SERVICE_PORTS[name]), name
    assert not cluster.allowed(ADMIN, "nats", 4222)
    assert not cluster.allowed(ADMIN, "postgres", 5432)


def test_every_service_reaches_nats_and_nothing_else_does(cluster: Cluster) -> None:
    for name in SERVICES:
        assert cluster.allowed(name, "nats", 4222), name
    assert not cluster.allowed(STRANGER, "nats", 4222)
    assert not cluster.allowed("trellis-migrate", "nats", 4222)


def test_nats_servers_reach_each_other_on_the_cluster_port(cluster: Cluster) -> None:
    assert cluster.allowed("nats", "nats", 6222)
    assert not cluster.allowed("edge", "nats", 6222)


def test_services_with_a_database_and_the_migrations_reach_postgresql(cluster: Cluster) -> None:
    for name in ("identity", "registry", "webhooks", "logs", "trellis-migrate"):
        assert cluster.allowed(name, "postgres", 5432), name
    assert not cluster.allowed("edge", "postgres", 5432)
    assert not cluster.allowed("console", "postgres", 5432)
    assert not cluster.allowed("nats", "postgres", 5432)
    assert not cluster.allowed(STRANGER, "postgres", 5432)


def test_the_console_reaches_the_four_grpc_services_nats_and_the_identity_provider_only(cluster: Cluster) -> None:
    for name in CALLERS:
        assert cluster.allowed("console", name, SERVICE_PORTS[name]), name
    assert cluster.allowed("console", "nats", 4222)  # its session bucket
    assert cluster.allowed("console", IDENTITY_PROVIDER, 443)  # discovery, JWKS, token endpoint
    assert not cluster.allowed("console", "edge", SERVICE_PORTS["edge"])
    assert not cluster.allowed("console", "postgres", 5432)
    assert not cluster.allowed("console", "nats", 6222)
    assert not cluster.allowed("console", STRANGER, 443)
    assert not cluster.allowed("console", External("93.184.216.34"), 443)
    assert not cluster.allowed("console", External("10.1.2.3"), 443)
    # Nothing inside calls the console: it is for browsers, through the ingress controller.
    for name in ("identity", "registry", "webhooks", "logs", "edge", "nats", "trellis-migrate"):
        assert not cluster.allowed(name, "console", SERVICE_PORTS["console"]), name


def test_every_pod_resolves_names(cluster: Cluster) -> None:
    for name in cluster.pods:
        assert cluster.allowed(name, KUBE_DNS, 53, "UDP"), name
        assert cluster.allowed(name, KUBE_DNS, 53, "TCP"), name


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
def test_webhooks_post_to_public_https_receivers(cluster: Cluster, address: str) -> None:
    assert cluster.allowed("webhooks", External(address), 443)
    assert not cluster.allowed("webhooks", External(address), 80)
    for name in ("identity", "registry", "logs", "edge", "console", "nats"):
        assert not cluster.allowed(name, External(address), 443), name


@pytest.mark.parametrize("address", ["10.1.2.3", "172.20.0.5", "192.168.1.1", "169.254.169.254", "127.0.0.1",
                                     "100.64.0.1", "fd00::1", "fe80::1"])
def test_webhooks_cannot_reach_private_or_metadata_addresses(cluster: Cluster, address: str) -> None:
    assert not cluster.allowed("webhooks", External(address), 443)
