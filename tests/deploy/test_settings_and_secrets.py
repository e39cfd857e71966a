"""The settings each container gets are real settings that a production process accepts, and
no secret value is ever in the manifests."""

from __future__ import annotations

import base64
import os
import pytest
import yaml

from services.cli.settings import CliSettings
from pydantic import SecretStr

from services.console.entrypoints.settings import check_settings as check_console_settings
from services.kit.settings import DEFAULT_PORTS, Mode
from tests.support.settings import Settings
from tests.deploy.manifests import (
    GRPC_SERVICES, K8S, OVERLAYS, SERVICE_PORTS, Obj, config_map_data, container_env, containers, of_kind, pod_spec,
    render,
)

# Read outside Settings (services.kit.service.configure_logging).
EXTRA_VARIABLES = {"TRELLIS_LOG_LEVEL"}
PLACEHOLDER = "change-me"


def example_secrets() -> list[Obj]:
    return [d for d in yaml.safe_load_all((K8S / "secret.example.yaml").read_text()) if d]


def stand_in_value(secret: str, key: str) -> str:
    """A stand-in for a Secret's value, shaped like the real one."""
    if key in ("kek", "hmac-key"):
        return base64.b64encode(bytes(range(32))).decode()
    if key == "kek-version":
        return "2"
    if key == "kek-previous":
        return '["1:' + base64.b64encode(bytes(32)).decode() + '"]'
    if secret == "trellis-database-urls":
        return f"postgresql+asyncpg://{key}:secret@postgres:5432/{key}"
    return "value"


SECRET_VALUES = {(s["metadata"]["name"], key): stand_in_value(s["metadata"]["name"], key)
                 for s in example_secrets() for key in s["stringData"]}


def known_variables() -> set[str]:
    return {f"TRELLIS_{name.upper()}" for name in Settings.model_fields} | EXTRA_VARIABLES


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_trellis_variable_in_the_manifests_is_a_real_setting(overlay: str) -> None:
    objects = render(overlay)
    names = set(config_map_data(objects, "trellis-settings"))
    for workload in of_kind(objects, "Deployment", "Job"):
        for container in containers(workload):
            names |= {v["name"] for v in container.get("env", [])}
    unknown = {n for n in names if n.startswith("TRELLIS_")} - known_variables()
    assert not unknown, f"not settings (typo?): {sorted(unknown)}"


# The services that seal values with the KEK (identity: signing keys; registry: secret connection
# details of setup requests; webhooks: signing secrets).
SEALING_SERVICES = ("identity", "registry", "webhooks")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_container_gets_settings_production_accepts(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(overlay)
    for deployment in of_kind(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        (container,) = pod_spec(deployment)["containers"]
        env = container_env(objects, container, SECRET_VALUES)
        for variable in [v for v in os.environ if v.startswith("TRELLIS_")]:
            monkeypatch.delenv(variable)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.mode is Mode.PRODUCTION, name
        assert settings.bind_host == "0.0.0.0", name
        assert settings.listen_port(name) == SERVICE_PORTS[name] == container["ports"][0]["containerPort"], name
        if name in SEALING_SERVICES:
            settings.kek_keys()
        else:  # least privilege: a service that seals nothing never holds the key-encryption key
            assert not any(k.startswith("TRELLIS_KEK") for k in env), name
        if name in GRPC_SERVICES:
            assert settings.database_url(name).startswith("postgresql+asyncpg://"), name
        for peer in GRPC_SERVICES:
            host, port = getattr(settings, f"{peer}_addr").rsplit(":", 1)
            assert (host, int(port)) == (peer, DEFAULT_PORTS[peer]), f"{name} finds {peer} at its Service"
        assert settings.nats_url == "nats://nats:4222"
        if name == "logs":
            assert settings.audit_hmac_key.get_secret_value() != PLACEHOLDER
        if name == "edge":
            # The edge listens on the host of its own address (nobody dials the edge by it).
            assert settings.edge_addr.rpartition(":")[0] in ("0.0.0.0", "")
            assert settings.service_token_file.startswith("/")
            assert settings.edge_routes_file.startswith("/")
            mounts = [m["mountPath"] for m in container["volumeMounts"]]
            assert any(settings.service_token_file.startswith(m + "/") for m in mounts)
            assert any(settings.edge_routes_file.startswith(m + "/") for m in mounts)
        if name == "console":
            check_console_settings(settings)  # an OIDC client and an https:// public URL
            assert settings.console_addr.rpartition(":")[0] in ("0.0.0.0", "")
            assert settings.console_metrics_addr, "metrics off the port the Ingress exposes"
            assert settings.console_oidc_client_secret.get_secret_value() == SECRET_VALUES[("trellis-console-oidc", "client-secret")]
            # It calls as the signed-in user: no identity of its own, no key that signs, no data.
            assert not settings.service_token_file and not settings.actor_private_key_file
            assert not any(k.endswith("_DATABASE_URL") for k in env), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrations_job_gets_settings_the_cli_accepts(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(overlay)
    (job,) = of_kind(objects, "Job")
    for container in pod_spec(job)["containers"]:
        for variable in [v for v in os.environ if v.startswith("TRELLIS_")]:
            monkeypatch.delenv(variable)
        for key, value in container_env(objects, container, SECRET_VALUES).items():
            monkeypatch.setenv(key, value)
        service = container["args"][1]
        assert CliSettings().database_url(service).startswith("postgresql+asyncpg://")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_consoles_client_secret_comes_from_a_secret_it_may_do_without(overlay: str) -> None:
    """Optional: without trellis-console-oidc the console is a public client (PKCE only)."""
    objects = render(overlay)
    deployment = next(d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == "console")
    (container,) = pod_spec(deployment)["containers"]
    (var,) = [v for v in container["env"] if v["name"] == "TRELLIS_CONSOLE_OIDC_CLIENT_SECRET"]
    assert var["valueFrom"]["secretKeyRef"] == {"name": "trellis-console-oidc", "key": "client-secret", "optional": True}
    assert "TRELLIS_CONSOLE_OIDC_CLIENT_SECRET" not in config_map_data(objects, "trellis-settings")


def test_the_edge_route_table_loads() -> None:
    from services.edge.domain.routes import RouteTable
    from services.edge.entrypoints.main import BUILTINS

    table = RouteTable.load(K8S / "base" / "edge-routes.toml", builtins=BUILTINS)
    assert table.routes


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_committed_in_any_overlay(overlay: str) -> None:
    objects = render(overlay)
    assert not of_kind(objects, "Secret"), "Secrets are created in the cluster, never in deploy/k8s"
    secret_settings = {f"TRELLIS_{name.upper()}" for name, info in Settings.model_fields.items()
                       if info.annotation is SecretStr or name.endswith("_database_url") or name == "kek_previous"}
    assert {"TRELLIS_KEK", "TRELLIS_AUDIT_HMAC_KEY", "TRELLIS_LOGS_DATABASE_URL"} <= secret_settings
    for config_map in of_kind(objects, "ConfigMap"):
        leaked = secret_settings & set(config_map.get("data", {}))
        assert not leaked, f"{config_map['metadata']['name']}: {sorted(leaked)} belong in Secrets"
    for workload in of_kind(objects, "Deployment", "StatefulSet", "Job"):
        for container in containers(workload):
            for var in container.get("env", []):
                assert not (var["name"] in secret_settings and "value" in var), f"{var['name']} given as a plain value"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_referenced_secret_is_documented_in_the_example(overlay: str) -> None:
    documented = {(s["metadata"]["name"], key) for s in example_secrets() for key in s["stringData"]}
    referenced: set[tuple[str, str]] = set()
    for workload in of_kind(render(overlay), "Deployment", "StatefulSet", "Job"):
        for container in containers(workload):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referenced.add((ref["name"], ref["key"]))
        for volume in pod_spec(workload).get("volumes", []):
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                assert any(n == name for n, _ in documented), name
    assert referenced and referenced <= documented, sorted(referenced - documented)


def test_the_secret_example_holds_placeholders_only_and_is_deployed_nowhere() -> None:
    for secret in example_secrets():
        assert "data" not in secret, "stringData placeholders only"
        for key, value in secret["stringData"].items():
            assert PLACEHOLDER in value or value.isdigit() or (key == "username"), f"{secret['metadata']['name']}/{key}"
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        listed = [*spec.get("resources", []), *spec.get("components", [])]
        assert not any("secret" in entry for entry in listed), kustomization
        assert "secretGenerator" not in spec, kustomization


def test_no_file_under_deploy_looks_like_a_key() -> None:
    for path in (K8S.parent).rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert "PRIVATE KEY-----" not in text, path
            assert "grq_live_" not in text, path
