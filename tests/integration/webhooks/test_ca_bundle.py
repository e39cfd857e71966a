"""TRELLIS_WEBHOOKS_CA_BUNDLE extends the system's CA store: with it, receivers whose certificates
chain to the system's CAs are still delivered to, and those chaining to the bundle's CAs are too.
Real HTTPS receivers with `trustme` CAs; the "system store" is a test CA of its own, put where
OpenSSL looks for the system's CAs (SSL_CERT_FILE, SSL_CERT_DIR), which is what the system's
store is to the process."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from services.webhooks.domain.model import AttemptError, HttpResult
from services.webhooks.adapters.sender import DeliveryClient
from services.webhooks.adapters.ssrf import AddressPolicy
from tests.integration.webhooks.receiver import CERT_NAMES, Receiver


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*CERT_NAMES).configure_cert(context)
    return context


@dataclass
class Receivers:
    system: Receiver      # its certificate chains to a CA of the (stand-in) system store
    bundled: Receiver     # ... to the CA of the bundle
    unknown: Receiver     # ... to a CA trusted nowhere
    bundle: Path


@pytest.fixture
async def receivers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Receivers]:
    system_ca, bundle_ca, unknown_ca = trustme.CA(), trustme.CA(), trustme.CA()
    system_store = tmp_path / "system-store.pem"
    system_ca.cert_pem.write_to_path(str(system_store))
    (tmp_path / "no-certs").mkdir()
    monkeypatch.setenv("SSL_CERT_FILE", str(system_store))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-certs"))
    bundle = tmp_path / "bundle.pem"
    bundle_ca.cert_pem.write_to_path(str(bundle))
    started = [await Receiver(server_context(ca)).start() for ca in (system_ca, bundle_ca, unknown_ca)]
    yield Receivers(*started, bundle=bundle)
    for receiver in started:
        await receiver.stop()


async def deliver(ca_bundle: str, *receivers: Receiver) -> list[HttpResult]:
    client = DeliveryClient(AddressPolicy.allowing(["127.0.0.0/8"]), timeout_seconds=10, ca_bundle=ca_bundle)
    await client.start()
    try:
        return [await client.post(r.url(), b"{}", {"Content-Type": "application/json"}) for r in receivers]
    finally:
        await client.close()


async def test_the_bundle_extends_the_system_store(receivers: Receivers) -> None:
    system, bundled, unknown = await deliver(str(receivers.bundle), receivers.system, receivers.bundled, receivers.unknown)
    assert system.succeeded, system        # the system's CAs are still trusted with a bundle
    assert bundled.succeeded, bundled      # and the bundle's besides
    assert unknown.error is AttemptError.TLS and "certificate verify failed" in unknown.error_detail
    assert [len(r.received) for r in (receivers.system, receivers.bundled, receivers.unknown)] == [1, 1, 0]


async def test_without_a_bundle_only_the_system_store_is_trusted(receivers: Receivers) -> None:
    system, bundled = await deliver("", receivers.system, receivers.bundled)
    assert system.succeeded, system
    assert bundled.error is AttemptError.TLS and not receivers.bundled.received
