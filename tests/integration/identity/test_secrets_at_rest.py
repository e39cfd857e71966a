"""No API key or client secret in plain text: not in the database file, not in the logs."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from services.contracts.trellis.identity.v1 import identity_pb2 as pb
from tests.integration.identity.conftest import Identity, Metadata, issue, new_integration_id


def database_bytes(identity: Identity) -> bytes:
    """The SQLite database with its WAL and journal files, as stored on disk."""
    path = Path(identity.settings.database_url("identity").split("///", 1)[1])
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


async def test_secrets_appear_neither_in_the_database_file_nor_in_logs(
    identity: Identity, admin: Metadata, edge: Metadata, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stub = identity.stub
    integration_id = new_integration_id()
    creds = await issue(stub, admin, integration_id)
    await stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=creds.api_key), metadata=edge)
    token = await stub.IssueToken(pb.IssueTokenRequest(client_id=creds.client_id, client_secret=creds.client_secret), metadata=edge)
    await stub.VerifyAccessToken(pb.VerifyAccessTokenRequest(token=token.access_token), metadata=edge)
    regenerated = await stub.RegenerateApiKey(pb.RegenerateApiKeyRequest(integration_id=integration_id), metadata=admin)
    await stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=regenerated.api_key), metadata=edge)
    # A wrong secret goes through the same code paths and must not be logged either.
    wrong_secret = creds.client_secret[::-1]
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do; what is checked is the logs
        await stub.IssueToken(pb.IssueTokenRequest(client_id=creds.client_id, client_secret=wrong_secret), metadata=edge)

    stored = database_bytes(identity)
    # What must be there is there, so the search below looks at the right bytes.
    assert hashlib.sha256(creds.api_key.encode()).hexdigest().encode() in stored
    assert hashlib.sha256(creds.client_secret.encode()).hexdigest().encode() in stored
    assert creds.client_id.encode() in stored
    logs = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert caplog.records, "expected some DEBUG log output to search"
    for secret in (creds.api_key, creds.client_secret, regenerated.api_key, wrong_secret):
        assert secret.encode() not in stored
        # The random part alone, in case something stored the key without its prefix.
        assert secret[-32:].encode() not in stored
        assert secret not in logs and secret[-32:] not in logs
    # Nor the signing key in the clear.
    assert b"PRIVATE KEY" not in stored
