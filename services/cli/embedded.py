"""Local secrets of the embedded mode, kept under `<data dir>/secrets/`.

`trellis up` creates them on first run and reuses them afterwards: the actor signing key pair
(the CLI signs actor tokens with the private key, the services verify with the public one)
and the key-encryption key the services encrypt their stored secrets with. The directory is
0700 and every secret file 0600, created exclusively so an existing file is never replaced.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from services.kit.auth import ADMIN_PERMISSION, PLATFORM_PERMISSION, QA_PERMISSION, generate_actor_key
from services.kit.settings import KitSettings

SECRETS_DIR = "secrets"
PRIVATE_KEY_FILE = "actor_private.pem"
PUBLIC_KEY_FILE = "actor_public.pem"
KEK_FILE = "kek"
AUDIT_KEY_FILE = "audit_hmac_key"

# What an administrator using the CLI may do; the services still check each call.
# The embedded mode's one user is also its platform operator (`trellis keys rotate`).
CLI_PERMISSIONS = (ADMIN_PERMISSION, QA_PERMISSION, PLATFORM_PERMISSION)
# Short-lived: each CLI invocation mints a fresh token.
CLI_TOKEN_TTL_SECONDS = 300


class EmbeddedSecretsMissing(Exception):
    """The data directory has no local secrets yet (`trellis up` has never run there)."""


@dataclass(frozen=True)
class EmbeddedSecrets:
    """Paths of the local actor key pair and the key-encryption key (base64 of 32 bytes)."""

    directory: Path
    private_key_file: Path
    public_key_file: Path
    kek: str
    # Keys the logs service's audit chain (base64 of 32 bytes); "" in a data directory made
    # before the audit trail existed, until `trellis up` runs there again.
    audit_hmac_key: str = ""

    def private_key_pem(self) -> bytes:
        return self.private_key_file.read_bytes()


def secrets_dir(data_dir: Path) -> Path:
    return Path(data_dir) / SECRETS_DIR


def ensure_secrets(data_dir: Path) -> EmbeddedSecrets:
    """Create whatever local secret is missing under `data_dir/secrets`, reuse the rest."""
    directory = secrets_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    private_file, public_file, kek_file = (directory / n for n in (PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, KEK_FILE))

    if not private_file.exists():
        private_pem, public_pem = generate_actor_key()
        write_new_file(private_file, private_pem, mode=0o600)
        public_file.unlink(missing_ok=True)  # a stale public key would not match the new private one
        write_new_file(public_file, public_pem, mode=0o644)
    elif not public_file.exists():
        write_new_file(public_file, _public_pem_of(private_file.read_bytes()), mode=0o644)

    if not kek_file.exists():
        write_new_file(kek_file, base64.b64encode(secrets.token_bytes(32)) + b"\n", mode=0o600)
    audit_key_file = directory / AUDIT_KEY_FILE
    if not audit_key_file.exists():
        write_new_file(audit_key_file, base64.b64encode(secrets.token_bytes(32)) + b"\n", mode=0o600)
    return load_secrets(data_dir)


def load_secrets(data_dir: Path) -> EmbeddedSecrets:
    """The existing local secrets; EmbeddedSecretsMissing when `trellis up` never made them."""
    directory = secrets_dir(data_dir)
    private_file, public_file, kek_file = (directory / n for n in (PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, KEK_FILE))
    missing = [p.name for p in (private_file, public_file, kek_file) if not p.exists()]
    if missing:
        raise EmbeddedSecretsMissing(
            f"no local secrets in {directory} (missing {', '.join(missing)}): "
            f"start Trellis there first with `trellis up --data-dir {data_dir}`"
        )
    audit_key_file = directory / AUDIT_KEY_FILE
    audit_key = audit_key_file.read_text().strip() if audit_key_file.exists() else ""
    return EmbeddedSecrets(directory, private_file, public_file, kek_file.read_text().strip(), audit_key)


def write_new_file(path: Path, content: bytes, *, mode: int) -> None:
    """Write `content` to a file that must not exist yet, created with `mode` from the start."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # os.open's mode is filtered by the umask; set it exactly
        os.write(fd, content)
    finally:
        os.close(fd)


def mint_cli_token(settings: KitSettings, *, user_id: str, org_id: str,
                   permissions: tuple[str, ...] = CLI_PERMISSIONS) -> str:
    """An actor token for one CLI invocation, signed with the data directory's local key: the
    claims of services.kit.auth.mint_actor_token, which the services verify."""
    local = load_secrets(settings.data_dir)
    now = int(time.time())
    return es256_jwt(local.private_key_pem(), {
        "iss": settings.actor_issuer,
        "aud": settings.actor_audience,
        "sub": user_id,
        "org": org_id,
        "permissions": list(permissions),
        "iat": now,
        "exp": now + CLI_TOKEN_TTL_SECONDS,
        "jti": uuid.uuid4().hex,
    })


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def es256_jwt(private_key_pem: bytes, claims: dict[str, object]) -> str:
    """A compact JWS (RFC 7515) of `claims`, ES256 (RFC 7518 section 3.4) with a P-256 key.

    Written here rather than with PyJWT, which the services verify these tokens with: importing
    PyJWT costs a CLI command about a tenth of its time (docs/benchmarks.md, "CLI"). Signing
    is the small half of JWT: the JSON header and claims, base64url without padding, and the
    ECDSA signature as R || S, 32 bytes each (not DER). tests/unit/cli/test_embedded.py checks
    these tokens against PyJWT, the gate for changing either."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the local actor key is not a P-256 (ES256) key; remove it and run `trellis up` to make a new one")
    header = {"alg": "ES256", "typ": "JWT"}
    signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims))
    r, s = decode_dss_signature(key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _public_pem_of(private_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(private_pem, password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
