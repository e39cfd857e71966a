"""deploy/k8s/create-secrets.py against a stand-in kubectl that keeps Secrets in a directory:
what it creates matches what the manifests read, values never travel on a command line, and
nothing that exists is ever replaced."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jwt
import pytest
from sqlalchemy.engine import make_url

from services.kit.auth import EDGE_PERMISSION
from tests.deploy.manifests import GRPC_SERVICES, K8S, config_map_data, named, of_kind, render

SCRIPT = K8S / "create-secrets.py"

FAKE_KUBECTL = textwrap.dedent('''\
    #!{python}
    """Stand-in kubectl: namespaces and Secrets are files under $FAKE_KUBE; every call is logged."""
    import json, os, sys
    from pathlib import Path
    state = Path(os.environ["FAKE_KUBE"])
    argv = sys.argv[1:]
    with open(state / "calls.jsonl", "a") as log:
        log.write(json.dumps(argv) + "\\n")
    args = [a for a in argv]
    while args and args[0] in ("--namespace", "--context"):
        args = args[2:]
    verb, kind, name = args[0], args[1], args[2]
    if verb == "get":
        sys.exit(0 if (state / kind / name).exists() else 1)
    if verb == "create" and kind == "secret":
        name = args[3]
        data, secret_type = {{}}, "Opaque"
        for arg in args[4:]:
            if arg.startswith("--from-file="):
                key, _, path = arg[len("--from-file="):].partition("=")
                data[key] = Path(path).read_text()
            elif arg.startswith("--type="):
                secret_type = arg[len("--type="):]
        (state / "secret").mkdir(exist_ok=True)
        (state / "secret" / name).write_text(json.dumps({{"type": secret_type, "data": data}}))
        sys.exit(0)
    sys.exit(2)
''')


class FakeKube:
    def __init__(self, root: Path) -> None:
        self.root = root
        bin_dir = root / "bin"
        bin_dir.mkdir()
        kubectl = bin_dir / "kubectl"
        kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable))
        kubectl.chmod(0o755)
        (root / "namespace").mkdir()
        (root / "namespace" / "trellis").write_text("{}")
        (root / "secret").mkdir()
        self.env = {**os.environ, "FAKE_KUBE": str(root), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=self.env, timeout=60)

    def secret(self, name: str) -> dict:
        return json.loads((self.root / "secret" / name).read_text())

    def secrets(self) -> set[str]:
        return {p.name for p in (self.root / "secret").iterdir()}

    def calls(self) -> list[list[str]]:
        path = self.root / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def kube(tmp_path: Path) -> FakeKube:
    return FakeKube(tmp_path)


def referenced_secret_keys(overlay: str) -> set[tuple[str, str]]:
    refs = set()
    for workload in of_kind(render(overlay), "Deployment", "StatefulSet", "Job"):
        spec = workload["spec"]["template"]["spec"]
        for container in spec["containers"]:
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    refs.add((ref["name"], ref["key"]))
        refs |= {(v["secret"]["secretName"], None) for v in spec.get("volumes", []) if "secret" in v}
    return refs


def test_prod_creates_linked_role_passwords_and_database_urls(kube: FakeKube) -> None:
    result = kube.run("prod", "--edge-token-file", str(_write(kube.root / "edge.token", "eyJ.edge.token\n")))
    assert result.returncode == 0, result.stderr
    assert len(base64.b64decode(kube.secret("trellis-kek")["data"]["kek"], validate=True)) == 32
    assert kube.secret("trellis-kek")["data"]["kek-version"] == "1"
    assert len(base64.b64decode(kube.secret("trellis-audit")["data"]["hmac-key"])) == 32
    assert kube.secret("trellis-edge-service-token")["data"] == {"token": "eyJ.edge.token"}
    (cluster,) = of_kind(render("prod"), "Cluster")
    urls = kube.secret("trellis-database-urls")["data"]
    assert set(urls) == set(GRPC_SERVICES)
    for service in GRPC_SERVICES:
        role = kube.secret(f"trellis-pg-{service}")
        assert role["type"] == "kubernetes.io/basic-auth"
        url = make_url(urls[service])
        assert url.drivername == "postgresql+asyncpg"
        assert (url.username, url.password, url.database) == (service, role["data"]["password"], service)
        assert role["data"]["username"] == service
        assert url.host == f"{cluster['metadata']['name']}-rw" and url.query["ssl"] == "require"
    for name, key in referenced_secret_keys("prod"):
        assert name in kube.secrets(), name
        if key is not None:
            assert key in kube.secret(name)["data"], f"{name}/{key}"


def test_prod_stores_the_consoles_client_secret_given_in_a_file_under_the_key_the_console_reads(kube: FakeKube) -> None:
    result = kube.run("prod", "--console-client-secret-file", str(_write(kube.root / "console.secret", "s3cr3t-0f-th3-c0ns0le\n")))
    assert result.returncode == 0, result.stderr
    console = named(render("prod"), "Deployment", "console")
    (ref,) = [v["valueFrom"]["secretKeyRef"] for v in console["spec"]["template"]["spec"]["containers"][0]["env"]
              if v["name"] == "TRELLIS_CONSOLE_OIDC_CLIENT_SECRET"]
    assert kube.secret(ref["name"])["data"] == {ref["key"]: "s3cr3t-0f-th3-c0ns0le"}
    assert not any("s3cr3t-0f-th3-c0ns0le" in arg for call in kube.calls() for arg in call)
    assert "secret/trellis-console-tls: missing" in result.stdout
    # Without the file it is left out (a public client) and nothing fails.
    (kube.root / "other").mkdir()
    other = FakeKube(kube.root / "other")
    assert other.run("prod").returncode == 0 and "trellis-console-oidc" not in other.secrets()


def test_values_never_appear_on_a_command_line(kube: FakeKube) -> None:
    assert kube.run("prod").returncode == 0
    values = [v for name in kube.secrets() for v in kube.secret(name)["data"].values() if len(v) > 8]
    assert values
    for call in kube.calls():
        for value in values:
            assert not any(value in arg for arg in call), call


def test_existing_secrets_are_never_replaced(kube: FakeKube) -> None:
    assert kube.run("prod").returncode == 0
    before = {name: kube.secret(name) for name in kube.secrets()}
    calls_before = len(kube.calls())
    result = kube.run("prod")
    assert result.returncode == 0
    assert {name: kube.secret(name) for name in kube.secrets()} == before
    assert "left unchanged" in result.stdout
    assert not any("create" in call for call in kube.calls()[calls_before:])


def test_half_of_a_linked_pair_is_refused(kube: FakeKube) -> None:
    _write(kube.root / "secret" / "trellis-pg-identity", json.dumps({"type": "kubernetes.io/basic-auth", "data": {}}))
    result = kube.run("prod")
    assert result.returncode == 1
    assert "trellis-pg-identity" in result.stderr and "trellis-database-urls" in result.stderr
    assert "trellis-database-urls" not in kube.secrets()


def test_a_missing_namespace_is_reported(kube: FakeKube) -> None:
    (kube.root / "namespace" / "trellis").unlink()
    result = kube.run("dev")
    assert result.returncode == 1 and "namespace trellis does not exist" in result.stderr
    assert not kube.secrets()


def test_dev_makes_an_actor_key_and_an_edge_token_the_dev_overlay_accepts(kube: FakeKube) -> None:
    key_dir = kube.root / "keys"
    result = kube.run("dev", "--key-dir", str(key_dir))
    assert result.returncode == 0, result.stderr
    objects = render("dev")
    settings = config_map_data(objects, "trellis-settings")
    public_pem = kube.secret("trellis-actor-key")["data"]["actor_public.pem"]
    assert settings["TRELLIS_ACTOR_PUBLIC_KEY_FILE"].endswith("/actor_public.pem")
    claims = jwt.decode(kube.secret("trellis-edge-service-token")["data"]["token"], public_pem, algorithms=["ES256"],
                        audience=settings["TRELLIS_ACTOR_AUDIENCE"], issuer=settings["TRELLIS_ACTOR_ISSUER"])
    assert claims["permissions"] == [EDGE_PERMISSION]
    private = key_dir / "actor_private.pem"
    assert private.stat().st_mode & 0o077 == 0
    password = kube.secret("trellis-postgres")["data"]["password"]
    postgres = named(objects, "Service", "postgres")
    for service, raw in kube.secret("trellis-database-urls")["data"].items():
        url = make_url(raw)
        assert (url.username, url.password, url.host, url.port, url.database) == (
            "trellis", password, postgres["metadata"]["name"], postgres["spec"]["ports"][0]["port"], service)
    for name, key in referenced_secret_keys("dev"):
        assert name in kube.secrets(), name
        if key is not None:
            assert key in kube.secret(name)["data"], f"{name}/{key}"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
