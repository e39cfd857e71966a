"""The HTTP side of a delivery: one signed POST, its answer or its failure, never followed.

The host name is resolved once, by `CheckedResolver`: every address is checked against the
`AddressPolicy` and only the allowed ones are handed to aiohttp, which connects to exactly
those while keeping the URL's host name for TLS (SNI, certificate check) and `Host`. No second
lookup happens between the check and the connection, so DNS rebinding cannot slip a private
address in. IP literals never reach a resolver, so they are checked before the request.

Sessions send no cookies, read no proxy settings from the environment, and carry no
authorisation: the signature is the receiver's proof.

`SignedSender` is application.ports.DeliveryPort over the client: it signs the body for the
moment of the attempt and POSTs it in a `webhook.deliver` span (`send_attempt`, which the
dispatcher calls with its own tracer).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import json
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from opentelemetry import context as otel_context
from opentelemetry import trace

from services.kit.bus import context_from_headers
from services.kit.clock import utcnow
from services.kit.settingcheck import SettingError
from services.kit.telemetry import current_span, traceparent, tracer
from services.webhooks.domain.model import (
    RESPONSE_BODY_LIMIT, AttemptError, AttemptExchange, HttpResult, Masker, SignatureScheme, classify_status,
    delivery_headers, masked_body, truncate_body,
)
from services.webhooks.adapters.ssrf import AddressPolicy

# (host, port) -> the addresses it resolves to; the default asks the system resolver.
Lookup = Callable[[str, int], Awaitable[list[tuple[int, str]]]]

# Read at most this much of an answer; a longer one is cut and its connection dropped.
MAX_READ = 64 * 1024
# Client-certificate TLS contexts kept (one per certificate in use); the oldest goes first.
MAX_CLIENT_CONTEXTS = 1024
# URLs whose refusal (for an IP-literal host) is kept; the cache is emptied when full.
MAX_LITERAL_VERDICTS = 4096


class RefusedAddress(OSError):
    """The host resolved only to addresses deliveries must not go to."""

    def __init__(self, host: str, reasons: list[str]) -> None:
        super().__init__(f"{host} resolves only to refused addresses: {'; '.join(reasons)}")
        self.host = host
        self.reasons = reasons


async def system_lookup(host: str, port: int) -> list[tuple[int, str]]:
    """(family, address) pairs from getaddrinfo, in its order, without duplicates."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[tuple[int, str]] = []
    for family, _, _, _, sockaddr in infos:
        entry = (int(family), str(sockaddr[0]))
        if entry not in seen:
            seen.append(entry)
    return seen


class CheckedResolver(AbstractResolver):
    """Resolves once and returns only the addresses the policy allows."""

    def __init__(self, policy: AddressPolicy, lookup: Lookup = system_lookup) -> None:
        self._policy = policy
        self._lookup = lookup

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = await self._lookup(host, port)
        allowed: list[ResolveResult] = []
        reasons: list[str] = []
        for fam, address in answers:
            reason = self._policy.refusal(address)
            if reason is not None:
                reasons.append(f"{address} ({reason})")
                continue
            allowed.append(ResolveResult(hostname=host, host=address, port=port, family=fam, proto=0,
                                         flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV))
        if not allowed:
            if not answers:
                raise OSError(f"{host} has no addresses")
            raise RefusedAddress(host, reasons)
        return allowed

    async def close(self) -> None:
        return None


def tls_context(ca_bundle: str = "") -> ssl.SSLContext:
    """Certificate and host name checks always on. The system's CAs are trusted, and those of
    `ca_bundle` (a PEM file) besides: it extends the store, so receivers with public
    certificates keep working when it names a private CA (docs/operators.md says how to replace)."""
    context = ssl.create_default_context()
    if ca_bundle:
        try:
            context.load_verify_locations(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise SettingError("TRELLIS_WEBHOOKS_CA_BUNDLE", f"a readable PEM file of CA certificates ({_reason(exc)})",
                               given=ca_bundle) from exc
    return context


class DeliveryClient:
    """Sends one signed body to one URL and reports what happened, within `timeout` seconds."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        timeout_seconds: float,
        ca_bundle: str = "",
        max_connections: int = 256,
        lookup: Lookup = system_lookup,
        record_exchange: bool = True,
    ) -> None:
        # Whether attempts keep what they sent and what came back (send_attempt reads it).
        self.record_exchange = record_exchange
        self._policy = policy
        self._timeout = timeout_seconds
        self._ca_bundle = ca_bundle
        self._ssl = tls_context(ca_bundle)
        # Contexts that also present a subscription's client certificate, by a digest of the pair.
        self._client_contexts: dict[bytes, ssl.SSLContext] = {}
        self._max_connections = max_connections
        self._lookup = lookup
        self._session: aiohttp.ClientSession | None = None
        self._literal_verdicts: dict[str, str | None] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=CheckedResolver(self._policy, self._lookup),
            ssl=self._ssl,
            limit=self._max_connections,
            limit_per_host=0,
            ttl_dns_cache=10,
            enable_cleanup_closed=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            auto_decompress=True,
            skip_auto_headers=("Accept-Encoding",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _refused_literal(self, url: str) -> str | None:
        """Why a URL whose host is an IP address is refused (None: allowed, or a name). The
        answer depends on the URL alone, so it is kept (bounded): it is on every attempt's path."""
        try:
            return self._literal_verdicts[url]
        except KeyError:
            pass
        verdict = self._literal_verdict(url)
        if len(self._literal_verdicts) >= MAX_LITERAL_VERDICTS:
            self._literal_verdicts.clear()
        self._literal_verdicts[url] = verdict
        return verdict

    def _literal_verdict(self, url: str) -> str | None:
        host = urlsplit(url).hostname or ""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        reason = self._policy.refusal(address)
        return f"{host} is refused ({reason})" if reason else None

    def _context_for(self, client_tls: tuple[str, str] | None) -> ssl.SSLContext:
        """The server-verifying context, presenting the client certificate when one is given."""
        if client_tls is None:
            return self._ssl
        digest = hashlib.sha256("\0".join(client_tls).encode()).digest()
        context = self._client_contexts.get(digest)
        if context is None:
            context = tls_context(self._ca_bundle)
            load_client_certificate(context, *client_tls)
            if len(self._client_contexts) >= MAX_CLIENT_CONTEXTS:
                self._client_contexts.pop(next(iter(self._client_contexts)))
            self._client_contexts[digest] = context
        return context

    async def post(self, url: str, body: bytes, headers: Mapping[str, str],
                   client_tls: tuple[str, str] | None = None) -> HttpResult:
        """POST `body` with `headers`, presenting `client_tls` (certificate and key PEM) when
        given; redirects are answers (3xx), never followed."""
        assert self._session is not None, "DeliveryClient.start() first"
        started = time.perf_counter()

        def took() -> float:
            return (time.perf_counter() - started) * 1000.0

        refused = self._refused_literal(url)
        if refused:
            return HttpResult(error=AttemptError.SSRF_REFUSED, error_detail=refused, duration_ms=took())
        try:
            context = self._context_for(client_tls)
        except (OSError, ssl.SSLError, ValueError) as exc:
            return HttpResult(error=AttemptError.TLS, error_detail=f"TLS: the client certificate cannot be used ({_reason(exc)})",
                              duration_ms=took())
        try:
            async with asyncio.timeout(self._timeout):
                async with self._session.post(url, data=body, headers=dict(headers), allow_redirects=False,
                                              ssl=context) as response:
                    raw = await _read_limited(response)
                    result = classify_status(response.status, truncate_body(raw), took())
                    return replace(result, raw_body=raw, response_headers=tuple(response.headers.items()),
                                   sent_headers=tuple(response.request_info.headers.items()))
        except TimeoutError:
            return HttpResult(error=AttemptError.TIMEOUT, error_detail=f"timed out after {self._timeout:g}s", duration_ms=took())
        except aiohttp.ClientConnectorDNSError as exc:
            if isinstance(exc.os_error, RefusedAddress):
                return HttpResult(error=AttemptError.SSRF_REFUSED, error_detail=str(exc.os_error), duration_ms=took())
            return HttpResult(error=AttemptError.DNS, error_detail=f"DNS: {exc.os_error}", duration_ms=took())
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            return HttpResult(error=AttemptError.TLS, error_detail=f"TLS: {_reason(exc)}", duration_ms=took())
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ConnectionRefusedError):
                return HttpResult(error=AttemptError.CONNECTION_REFUSED, error_detail="connection refused", duration_ms=took())
            return HttpResult(error=AttemptError.CONNECTION, error_detail=f"connection failed: {exc.os_error}", duration_ms=took())
        except (aiohttp.ClientError, OSError) as exc:
            return HttpResult(error=AttemptError.CONNECTION, error_detail=f"connection failed: {_reason(exc)}", duration_ms=took())


def load_client_certificate(context: ssl.SSLContext, certificate_pem: str, private_key_pem: str) -> None:
    """Makes `context` present this certificate and key. The ssl module loads them only from
    files: they exist for the call only, in a private directory (0700, the files 0600), in
    memory-backed /dev/shm where there is one, and are removed before it returns."""
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="trellis-mtls-", dir=shm) as directory:
        certfile, keyfile = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        for path, text in ((certfile, certificate_pem), (keyfile, private_key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(text)
        context.load_cert_chain(certfile, keyfile)


async def _read_limited(response: aiohttp.ClientResponse) -> bytes:
    """The answer's first MAX_READ bytes; a longer answer's connection is closed, not reused."""
    chunks: list[bytes] = []
    size = 0
    while size < MAX_READ:
        chunk = await response.content.read(MAX_READ - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    if not response.content.at_eof():
        response.close()
    return b"".join(chunks)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]


async def send_attempt(client: DeliveryClient, *, url: str, scheme: SignatureScheme, secret: str, event_id: str,
                       event_type: str, body: bytes, user_agent: str, trace_headers: str = "",
                       spans: trace.Tracer | None = None,
                       custom_headers: Mapping[str, str] | None = None,
                       client_tls: tuple[str, str] | None = None,
                       previous_secret: str | None = None) -> tuple[HttpResult, dt.datetime]:
    """Signs `body` for this moment and POSTs it with the subscription's custom headers (checked
    when saved never to name one of ours); returns the result and when the attempt began."""
    started = utcnow()
    timestamp = int(time.time())
    custom = dict(custom_headers or {})
    headers = {**custom, **delivery_headers(scheme, secret, event_id=event_id, event_type=event_type,
                                            timestamp=timestamp, body=body, user_agent=user_agent,
                                            previous_secret=previous_secret)}
    # An activity that came without trace context (stored as "{}") parents on an empty context,
    # as extracting from no headers gives: without parsing and extracting on every attempt.
    parent = context_from_headers(json.loads(trace_headers)) if trace_headers not in ("", "{}") else \
        (otel_context.Context() if trace_headers else None)
    spans = spans or tracer(__name__)
    with current_span(spans, "webhook.deliver", context=parent, kind=trace.SpanKind.CLIENT) as span:
        span.set_attribute("webhook.event_id", event_id)
        span.set_attribute("webhook.event_type", event_type)
        # The receiver gets `traceparent` (this span as its parent) so its tracing can join the
        # trace; not `tracestate`, which may carry vendors' internal data.
        if parent_id := traceparent():
            headers = {**headers, "traceparent": parent_id}
        result = await client.post(url, body, headers, client_tls)
        span.set_attribute("http.response.status_code", result.status_code)
        if not result.succeeded:
            span.set_attribute("webhook.error", result.error.value)
    signing = [secret] if previous_secret is None else [secret, previous_secret]
    return _recorded(client, result, headers, Masker.for_signing(signing, custom)), started


def _recorded(client: DeliveryClient, result: HttpResult, sent: Mapping[str, str], masker: Masker) -> HttpResult:
    """The result as the log keeps it: the answer's first 2 KB with secrets a receiver echoed
    masked, and (when the client records them) what was sent and what came back."""
    exchange = None
    if client.record_exchange:
        exchange = AttemptExchange.record(result.sent_headers or tuple(sent.items()), result.response_headers,
                                          result.raw_body, masker)
    body = masked_body(result.raw_body, masker, RESPONSE_BODY_LIMIT)[0] if result.raw_body else result.response_body
    return replace(result, response_body=body, raw_body=b"", response_headers=(), sent_headers=(), exchange=exchange)


class SignedSender:
    """application.ports.DeliveryPort: one signed, traced POST through `client`."""

    def __init__(self, client: DeliveryClient, *, spans: trace.Tracer | None = None) -> None:
        self._client = client
        self._spans = spans

    async def send(self, *, url: str, scheme: SignatureScheme, secret: str, event_id: str, event_type: str,
                   body: bytes, user_agent: str, trace_headers: str = "",
                   custom_headers: Mapping[str, str] | None = None,
                   client_tls: tuple[str, str] | None = None,
                   previous_secret: str | None = None) -> tuple[HttpResult, dt.datetime]:
        return await send_attempt(self._client, url=url, scheme=scheme, secret=secret, event_id=event_id,
                                  event_type=event_type, body=body, user_agent=user_agent,
                                  trace_headers=trace_headers, spans=self._spans, custom_headers=custom_headers,
                                  client_tls=client_tls, previous_secret=previous_secret)
