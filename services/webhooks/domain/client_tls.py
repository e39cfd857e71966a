"""A subscription's client certificate for mutual TLS: the checks a certificate and its key
pass before they are kept (they parse, the key is the certificate's, the certificate is valid
now), what is shown of it, and the form it is sealed in.

Pure computation (the `cryptography` package parses; nothing here does I/O). The key is never
shown, logged or returned; the certificate's subject, issuer, validity and fingerprint are.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from services.kit.errors import InvalidArgument

MAX_PEM_BYTES = 32 * 1024  # a certificate chain or a key; more is not a client certificate

FIELD = "client_certificate"


@dataclass(frozen=True)
class ClientCertificate:
    """What is shown of a subscription's client certificate (never its key)."""

    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    sha256_fingerprint: str  # hex, of the leaf certificate's DER

    def as_json(self) -> str:
        return json.dumps({"subject": self.subject, "issuer": self.issuer, "not_before": self.not_before.isoformat(),
                           "not_after": self.not_after.isoformat(), "sha256": self.sha256_fingerprint})

    @classmethod
    def from_json(cls, text: str) -> "ClientCertificate":
        doc = json.loads(text)
        return cls(str(doc["subject"]), str(doc["issuer"]), dt.datetime.fromisoformat(doc["not_before"]),
                   dt.datetime.fromisoformat(doc["not_after"]), str(doc["sha256"]))


def check_client_certificate(certificate_pem: str, private_key_pem: str, now: dt.datetime) -> ClientCertificate:
    """The certificate (leaf first, then any intermediates) and its unencrypted private key, both
    PEM: InvalidArgument naming what is wrong when they do not parse, do not belong together, or
    the certificate is not valid at `now`."""
    if not certificate_pem.strip() or not private_key_pem.strip():
        raise InvalidArgument("a client certificate needs both its certificate and its private key (PEM)", field=FIELD)
    for name, pem in (("certificate", certificate_pem), ("private key", private_key_pem)):
        if len(pem.encode()) > MAX_PEM_BYTES:
            raise InvalidArgument(f"the client {name} is larger than {MAX_PEM_BYTES // 1024} KiB", field=FIELD)
    try:
        chain = x509.load_pem_x509_certificates(certificate_pem.encode())
    except ValueError as exc:
        raise InvalidArgument(f"the client certificate does not parse as PEM X.509 ({exc})", field=FIELD) from None
    try:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except TypeError:
        raise InvalidArgument("the client private key is encrypted: give it without a passphrase (it is sealed at rest)",
                              field=FIELD) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidArgument(f"the client private key does not parse as a PEM private key ({exc})", field=FIELD) from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
                            ed448.Ed448PrivateKey, dsa.DSAPrivateKey)):
        raise InvalidArgument("the client private key is of a kind TLS cannot use", field=FIELD)
    leaf = chain[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, public) != \
            leaf.public_key().public_bytes(serialization.Encoding.DER, public):
        raise InvalidArgument("the client private key does not match the certificate (the first certificate of the PEM "
                              "must be the one the key belongs to)", field=FIELD)
    not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    if not_after <= now:
        raise InvalidArgument(f"the client certificate expired at {not_after.isoformat()}", field=FIELD)
    if not_before > now:
        raise InvalidArgument(f"the client certificate is not valid before {not_before.isoformat()}", field=FIELD)
    return ClientCertificate(leaf.subject.rfc4514_string(), leaf.issuer.rfc4514_string(), not_before, not_after,
                             leaf.fingerprint(hashes.SHA256()).hex())


def client_tls_aad(subscription_id: str) -> bytes:
    """What a sealed client certificate and key are bound to: this subscription's column only."""
    return f"subscriptions.client_tls:{subscription_id}".encode()


def seal_form(certificate_pem: str, private_key_pem: str) -> bytes:
    return json.dumps({"certificate": certificate_pem, "key": private_key_pem}).encode()


def opened_form(plain: bytes) -> tuple[str, str]:
    doc = json.loads(plain)
    return str(doc["certificate"]), str(doc["key"])
