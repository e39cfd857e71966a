#!/usr/bin/env python3
"""Create the Secrets Trellis needs in a namespace, with fresh random values.

    .venv/bin/python deploy/k8s/create-secrets.py dev  [--namespace trellis] [--context CTX]
    .venv/bin/python deploy/k8s/create-secrets.py prod [--namespace trellis] [--context CTX]
                                                       [--edge-token-file FILE]
                                                       [--console-client-secret-file FILE]

A Secret that already exists is left exactly as it is (a new key-encryption key would make
every sealed value unreadable), so running this again is safe. Values never appear on a
command line: they are written to files in a private temporary directory, handed to
`kubectl create secret --from-file`, and deleted.

dev   trellis-kek, trellis-audit, trellis-postgres, trellis-database-urls (to the postgres
      StatefulSet of overlays/dev), trellis-actor-key (public half of a development actor key
      pair; the private half is written to --key-dir so you can mint actor tokens for the CLI)
      and trellis-edge-service-token (minted with that key).
prod  trellis-kek, trellis-audit, trellis-pg-<service> (CloudNativePG role passwords),
      trellis-database-urls (to the CloudNativePG cluster, TLS required) and, given
      --edge-token-file, trellis-edge-service-token (a token from your identity provider with
      the trellis_edge permission); given --console-client-secret-file, trellis-console-oidc
      (the console's client secret at your identity provider; without it the console is a
      public client). trellis-backup-s3, trellis-edge-tls and trellis-console-tls are yours to
      create (docs/operators.md).
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("identity", "registry", "webhooks", "logs")
DEV_POSTGRES_HOST = "postgres:5432"
PROD_POSTGRES_HOST = "trellis-postgres-rw:5432"
DEV_ACTOR_ISSUER = "trellis-dev"
ACTOR_AUDIENCE = "trellis"
DEV_EDGE_TOKEN_TTL_SECONDS = 30 * 24 * 3600


class SecretsError(Exception):
    """Something the operator must fix; printed as one line."""


class Kubectl:
    def __init__(self, namespace: str, context: str | None) -> None:
        if shutil.which("kubectl") is None:
            raise SecretsError("kubectl not found on PATH")
        self.prefix = ["kubectl", *(["--context", context] if context else []), "--namespace", namespace]
        self.namespace = namespace

    def exists(self, kind: str, name: str) -> bool:
        result = subprocess.run([*self.prefix, "get", kind, name, "-o", "name"], capture_output=True, text=True)
        return result.returncode == 0

    def create_secret(self, name: str, values: dict[str, str], *, secret_type: str | None = None) -> None:
        with tempfile.TemporaryDirectory(prefix="trellis-secret-") as directory:
            os.chmod(directory, 0o700)
            args = [*self.prefix, "create", "secret", "generic", name]
            if secret_type:
                args.append(f"--type={secret_type}")
            for key, value in values.items():
                path = Path(directory) / key
                path.touch(mode=0o600)
                path.write_text(value)
                args.append(f"--from-file={key}={path}")
            result = subprocess.run(args, capture_output=True, text=True)
        if result.returncode != 0:
            raise SecretsError(f"kubectl create secret {name} failed: {result.stderr.strip()}")


def random_key() -> str:
    """Base64 of 32 random bytes (TRELLIS_KEK, TRELLIS_AUDIT_HMAC_KEY)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def random_password() -> str:
    """Hex, so it needs no escaping inside a database URL."""
    return secrets.token_hex(24)


def database_url(user: str, password: str, host: str, database: str, *, require_tls: bool) -> str:
    url = f"postgresql+asyncpg://{user}:{password}@{host}/{database}"
    return url + "?ssl=require" if require_tls else url


class Planner:
    """Creates each missing Secret once, and refuses to create a half of a linked pair."""

    def __init__(self, kubectl: Kubectl) -> None:
        self.kubectl = kubectl

    def create(self, name: str, values: dict[str, str], *, secret_type: str | None = None) -> bool:
        if self.kubectl.exists("secret", name):
            print(f"secret/{name}: exists, left unchanged")
            return False
        self.kubectl.create_secret(name, values, secret_type=secret_type)
        print(f"secret/{name}: created")
        return True

    def linked(self, names: Sequence[str]) -> bool:
        """True when none of `names` exist (create them all); False when all do (keep them)."""
        present = [n for n in names if self.kubectl.exists("secret", n)]
        if not present:
            return True
        if len(present) == len(names):
            for name in names:
                print(f"secret/{name}: exists, left unchanged")
            return False
        missing = sorted(set(names) - set(present))
        raise SecretsError(
            f"{', '.join(present)} exist but {', '.join(missing)} do not; their passwords must match, "
            "so delete the existing ones too (or create the missing ones by hand)"
        )


def common(planner: Planner) -> None:
    planner.create("trellis-kek", {"kek": random_key(), "kek-version": "1"})
    planner.create("trellis-audit", {"hmac-key": random_key()})


def dev(planner: Planner, key_dir: Path) -> None:
    common(planner)
    if planner.linked(["trellis-postgres", "trellis-database-urls"]):
        password = random_password()
        planner.create("trellis-postgres", {"password": password})
        planner.create("trellis-database-urls", {
            s: database_url("trellis", password, DEV_POSTGRES_HOST, s, require_tls=False) for s in SERVICES
        })
    if planner.linked(["trellis-actor-key", "trellis-edge-service-token"]):
        sys.path.insert(0, str(REPO_ROOT))
        from services.kit.auth import EDGE_PERMISSION, generate_actor_key, mint_actor_token

        private_pem, public_pem = generate_actor_key()
        key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        private_file = key_dir / "actor_private.pem"
        private_file.touch(mode=0o600)
        private_file.write_bytes(private_pem)
        planner.create("trellis-actor-key", {"actor_public.pem": public_pem.decode()})
        token = mint_actor_token(private_pem, issuer=DEV_ACTOR_ISSUER, audience=ACTOR_AUDIENCE, user_id="edge",
                                 org_id="trellis", permissions=[EDGE_PERMISSION], ttl_seconds=DEV_EDGE_TOKEN_TTL_SECONDS)
        planner.create("trellis-edge-service-token", {"token": token})
        print(f"the development actor private key is {private_file} (mint CLI tokens with it; keep it private)")


def from_file(path: Path) -> str:
    value = path.read_text().strip()
    if not value:
        raise SecretsError(f"{path} is empty")
    return value


def prod(planner: Planner, edge_token_file: Path | None, console_secret_file: Path | None = None) -> None:
    common(planner)
    role_secrets = [f"trellis-pg-{s}" for s in SERVICES]
    if planner.linked([*role_secrets, "trellis-database-urls"]):
        passwords = {s: random_password() for s in SERVICES}
        for service in SERVICES:
            planner.create(f"trellis-pg-{service}", {"username": service, "password": passwords[service]},
                           secret_type="kubernetes.io/basic-auth")
        planner.create("trellis-database-urls", {
            s: database_url(s, passwords[s], PROD_POSTGRES_HOST, s, require_tls=True) for s in SERVICES
        })
    if edge_token_file is not None:
        planner.create("trellis-edge-service-token", {"token": from_file(edge_token_file)})
    elif not planner.kubectl.exists("secret", "trellis-edge-service-token"):
        print("secret/trellis-edge-service-token: missing; pass --edge-token-file with the edge's token "
              "from your identity provider (permission trellis_edge)")
    if console_secret_file is not None:
        planner.create("trellis-console-oidc", {"client-secret": from_file(console_secret_file)})
    for name in ("trellis-backup-s3", "trellis-edge-tls", "trellis-console-tls"):
        if not planner.kubectl.exists("secret", name):
            print(f"secret/{name}: missing; create it yourself (docs/operators.md, \"Secrets\")")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overlay", choices=["dev", "prod"])
    parser.add_argument("--namespace", default="trellis")
    parser.add_argument("--context", default=None, help="kubectl context (default: the current one)")
    parser.add_argument("--edge-token-file", type=Path, default=None, help="prod: the edge's service token")
    parser.add_argument("--console-client-secret-file", type=Path, default=None,
                        help="prod: the console's OIDC client secret at your identity provider")
    parser.add_argument("--key-dir", type=Path, default=REPO_ROOT / ".trellis" / "k8s-dev",
                        help="dev: where the development actor private key is written")
    args = parser.parse_args(argv)
    try:
        kubectl = Kubectl(args.namespace, args.context)
        if not kubectl.exists("namespace", args.namespace):
            raise SecretsError(f"namespace {args.namespace} does not exist; "
                               "apply deploy/k8s/base/namespace.yaml first")
        planner = Planner(kubectl)
        if args.overlay == "dev":
            dev(planner, args.key_dir)
        else:
            prod(planner, args.edge_token_file, args.console_client_secret_file)
    except SecretsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
