"""Service logs: one JSON object per line with the trace and request ids, the caller's request
id bound for the handler, and no secret ever written, in the message, its arguments or an
exception."""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.kit.logcontext import request_id_var
from services.kit.service import configure_logging
from tests.support.settings import Settings
from tests.support.probe_service import probe_service

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
def service_logging(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., list[str]]]:
    """service_logging(settings, service) -> configure logging as a service process does; returns
    a function giving the lines written to stderr since. The root logger is restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def _configure(settings: Settings, service: str) -> Callable[[], list[str]]:
        configure_logging(settings, service)
        capsys.readouterr()
        return lambda: [line for line in capsys.readouterr().err.splitlines() if line]

    yield _configure  # type: ignore[misc]
    root.handlers[:] = handlers
    root.setLevel(level)


def test_production_log_lines_are_json_objects_with_the_trace_and_request_ids(
    service_logging: Callable[..., Callable[[], list[str]]], make_settings: Callable[..., Settings],
    spans: InMemorySpanExporter,
) -> None:
    lines = service_logging(make_settings(log_format="json"), "registry")
    token = request_id_var.set("req-0001")
    try:
        with trace.get_tracer("test").start_as_current_span("work") as span:
            logging.getLogger("services.registry.handlers").warning("integration %s suspended", "int_42")
    finally:
        request_id_var.reset(token)
    logging.getLogger("services.registry").warning("outside any request")

    first, second = (json.loads(line) for line in lines())
    context = span.get_span_context()
    assert first == {
        "time": first["time"], "level": "WARNING", "logger": "services.registry.handlers",
        "message": "integration int_42 suspended", "service": "registry",
        "trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x"), "request_id": "req-0001",
    }
    assert first["time"].endswith("Z")
    assert "trace_id" not in second and "request_id" not in second and second["message"] == "outside any request"


def test_the_embedded_mode_logs_text_unless_told_otherwise(make_settings: Callable[..., Settings]) -> None:
    assert make_settings().effective_log_format() == "text"
    assert make_settings(log_format="json").effective_log_format() == "json"
    assert Settings(mode="production", kek=base64.b64encode(bytes(32)).decode(),
                    actor_public_key_file="/dev/null").effective_log_format() == "json"


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_no_secret_reaches_the_log_in_a_message_its_arguments_or_an_exception(
    service_logging: Callable[..., Callable[[], list[str]]], make_settings: Callable[..., Settings], log_format: str,
) -> None:
    api_key = "grq_live_" + secrets.token_urlsafe(32)
    webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    client_secret = secrets.token_urlsafe(32)
    while not (any(c.isupper() for c in client_secret) and any(c.isdigit() for c in client_secret)):
        client_secret = secrets.token_urlsafe(32)
    jwt = "eyJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(40) + "." + secrets.token_urlsafe(60)
    bearer = secrets.token_urlsafe(24)
    lines = service_logging(make_settings(log_format=log_format), "identity")
    log = logging.getLogger("services.identity.application.handlers")

    log.warning("issued %s for %s", api_key, "int_1")
    log.warning(f"subscription secret {webhook_secret} and client secret {client_secret}")
    log.warning("header was %r", {"authorization": f"Bearer {bearer}", "token": jwt})
    log.warning("form: grant_type=client_credentials&client_secret=%s", "hunter2-not-random")
    try:
        raise ValueError(f"could not verify {api_key}")
    except ValueError:
        log.exception("verification failed")

    output = "\n".join(lines())
    for secret in (api_key, api_key[len("grq_live_"):], webhook_secret[len("whsec_"):], client_secret, jwt, bearer,
                   "hunter2-not-random"):
        assert secret not in output
    assert output.count("[redacted]") >= 7  # one per secret: they were masked, not dropped
    assert "int_1" in output and "verification failed" in output and "ValueError" in output  # the rest stays readable


async def test_the_callers_request_id_is_bound_while_a_grpc_call_is_served(
    actor_keys: tuple[bytes, Path], as_actor: Callable[..., Metadata],
) -> None:
    service_name = "trellis.test.RequestIds"

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request_id_var.get().encode()

    async with probe_service(service_name, "Echo", echo, actor_public_key_pem=actor_keys[1].read_bytes()) as port:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo_call = channel.unary_unary(f"/{service_name}/Echo")
            tagged = await echo_call(b"", metadata=(*as_actor("alice", "org_a"), ("x-request-id", "req-from-edge-7")))
            untagged = await echo_call(b"", metadata=as_actor("alice", "org_a"))
    assert (tagged, untagged) == (b"req-from-edge-7", b"")
