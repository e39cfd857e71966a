"""Mutual TLS against a real HTTPS receiver that requires a client certificate
(ssl.CERT_REQUIRED), both certificates from one `trustme` CA: deliveries present the
subscription's certificate, the server's is still verified, the SSRF guard still applies, and
a certificate that does not parse, does not match its key or has expired is refused."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Awaitable, Callable

import grpc
import pytest
import trustme

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from tests.integration.webhooks.conftest import Webhooks
from tests.integration.webhooks.receiver import CERT_NAMES, Receiver, Tls


def _requiring_client_certs(tls: Tls, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.ca.issue_cert(*CERT_NAMES).configure_cert(context)
    (client_ca or tls.ca).configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _upload(cert: trustme.LeafCert, key_of: trustme.LeafCert | None = None) -> pb.ClientCertificateUpload:
    return pb.ClientCertificateUpload(certificate_pem=b"".join(p.bytes() for p in cert.cert_chain_pems).decode(),
                                      private_key_pem=(key_of or cert).private_key_pem.bytes().decode())


@pytest.fixture
async def mtls_receiver(tls: Tls) -> Receiver:
    receiver = await Receiver(_requiring_client_certs(tls)).start()
    yield receiver
    await receiver.stop()


async def _test_send(webhooks: Webhooks, subscription_id: str) -> pb.SendTestDeliveryResponse:
    return await webhooks.stub.SendTestDelivery(pb.SendTestDeliveryRequest(subscription_id=subscription_id),
                                                metadata=webhooks.admin)


async def test_deliveries_present_the_subscriptions_client_certificate(webhooks: Webhooks, mtls_receiver: Receiver,
                                                                       tls: Tls) -> None:
    client = tls.ca.issue_cert("acme-hooks.example.test", common_name="acme-hooks")
    created = await webhooks.subscribe(mtls_receiver.url(), client_certificate=_upload(client))
    shown = created.subscription.client_certificate
    assert "CN=acme-hooks" in shown.subject and shown.sha256_fingerprint and shown.not_after.seconds
    await webhooks.publish()
    [got] = await mtls_receiver.wait_for(1)
    assert got.headers["X-Webhook-Signature"].startswith("sha256=")
    got_back = await webhooks.subscription(created.subscription.id)
    assert "PRIVATE KEY" not in str(got_back) and got_back.client_certificate == shown

    # Without a client certificate the same receiver refuses the handshake.
    plain = await webhooks.subscribe(mtls_receiver.url())
    result = await _test_send(webhooks, plain.subscription.id)
    assert not result.attempt.succeeded and result.attempt.error in (pb.ATTEMPT_ERROR_TLS, pb.ATTEMPT_ERROR_CONNECTION)
    assert len(mtls_receiver.received) == 1


async def test_the_server_certificate_is_still_verified(webhooks: Webhooks, tls: Tls) -> None:
    other_ca = trustme.CA()  # the receiver's certificate chains to a CA webhooks does not trust
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other_ca.issue_cert(*CERT_NAMES).configure_cert(context)
    tls.ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    receiver = await Receiver(context).start()
    try:
        created = await webhooks.subscribe(receiver.url(), client_certificate=_upload(tls.ca.issue_cert("acme")))
        result = await _test_send(webhooks, created.subscription.id)
        assert result.attempt.error == pb.ATTEMPT_ERROR_TLS and "certificate verify failed" in result.attempt.error_detail
        assert receiver.received == []
    finally:
        await receiver.stop()


async def test_the_ssrf_guard_still_refuses_with_a_client_certificate(start_webhooks: Callable[..., Awaitable[Webhooks]],
                                                                      mtls_receiver: Receiver, tls: Tls) -> None:
    answers = {"hooks.example.test": ["8.8.8.8"]}  # public when saved, loopback when delivered (rebinding)
    webhooks = await start_webhooks(dns=lambda host: answers.get(host), webhooks_allowed_private_networks=[])
    created = await webhooks.subscribe(mtls_receiver.url(host="hooks.example.test"),
                                       client_certificate=_upload(tls.ca.issue_cert("acme")))
    answers["hooks.example.test"] = ["127.0.0.1"]
    result = await _test_send(webhooks, created.subscription.id)
    assert result.attempt.error == pb.ATTEMPT_ERROR_SSRF_REFUSED, result.attempt
    assert mtls_receiver.received == []


@pytest.mark.parametrize("case, says", [
    ("garbage certificate", "does not parse as PEM X.509"),
    ("garbage key", "does not parse as a PEM private key"),
    ("another key", "does not match the certificate"),
    ("expired", "expired at"),
    ("not yet valid", "not valid before"),
    ("no key", "needs both"),
])
async def test_a_bad_client_certificate_is_refused_and_nothing_is_written(webhooks: Webhooks, mtls_receiver: Receiver,
                                                                          tls: Tls, case: str, says: str) -> None:
    good = tls.ca.issue_cert("acme")
    now = dt.datetime.now(dt.timezone.utc)
    upload = {
        "garbage certificate": pb.ClientCertificateUpload(certificate_pem="-----BEGIN CERTIFICATE-----\nnope\n"
                                                                          "-----END CERTIFICATE-----\n",
                                                          private_key_pem=good.private_key_pem.bytes().decode()),
        "garbage key": pb.ClientCertificateUpload(certificate_pem=good.cert_chain_pems[0].bytes().decode(),
                                                  private_key_pem="-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
        "another key": _upload(good, key_of=tls.ca.issue_cert("someone-else")),
        "expired": _upload(tls.ca.issue_cert("acme", not_before=now - dt.timedelta(days=30),
                                             not_after=now - dt.timedelta(days=1))),
        "not yet valid": _upload(tls.ca.issue_cert("acme", not_before=now + dt.timedelta(days=1),
                                                   not_after=now + dt.timedelta(days=30))),
        "no key": pb.ClientCertificateUpload(certificate_pem=good.cert_chain_pems[0].bytes().decode()),
    }[case]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await webhooks.subscribe(mtls_receiver.url(), client_certificate=upload)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and says in refused.value.details()
    listed = await webhooks.stub.ListSubscriptions(pb.ListSubscriptionsRequest(), metadata=webhooks.admin)
    assert list(listed.subscriptions) == []


async def test_an_update_replaces_or_removes_the_client_certificate_and_a_refused_one_changes_nothing(
        webhooks: Webhooks, mtls_receiver: Receiver, tls: Tls) -> None:
    created = await webhooks.subscribe(mtls_receiver.url())
    sid = created.subscription.id
    assert not (await _test_send(webhooks, sid)).attempt.succeeded
    now = dt.datetime.now(dt.timezone.utc)
    expired = _upload(tls.ca.issue_cert("acme", not_before=now - dt.timedelta(days=3), not_after=now - dt.timedelta(days=1)))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await webhooks.stub.UpdateSubscription(pb.UpdateSubscriptionRequest(
            subscription_id=sid, update_mask=["client_certificate", "description"], description="x",
            client_certificate=expired), metadata=webhooks.admin)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await webhooks.subscription(sid)).version == created.subscription.version

    updated = await webhooks.stub.UpdateSubscription(pb.UpdateSubscriptionRequest(
        subscription_id=sid, update_mask=["client_certificate"], client_certificate=_upload(tls.ca.issue_cert("acme"))),
        metadata=webhooks.admin)
    assert updated.HasField("client_certificate")
    assert (await _test_send(webhooks, sid)).attempt.succeeded

    removed = await webhooks.stub.UpdateSubscription(pb.UpdateSubscriptionRequest(
        subscription_id=sid, update_mask=["client_certificate"]), metadata=webhooks.admin)
    assert not removed.HasField("client_certificate")
    assert not (await _test_send(webhooks, sid)).attempt.succeeded
