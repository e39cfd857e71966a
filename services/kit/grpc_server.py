"""grpc.aio server bootstrap: health and reflection, actor-token authentication, one
error-mapping interceptor, tracing, call metrics and the caller's request id, and graceful
shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
import jwt
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.kit import errors
from services.kit.auth import ActorVerifier, bind_actor, reset_actor
from services.kit.logcontext import request_id_var
from services.kit.metrics import ServiceMetrics
from services.kit.rpc_errors import to_status
from services.kit.telemetry import server_interceptors

log = logging.getLogger(__name__)

# Methods any caller may reach without an actor token.
ALWAYS_PUBLIC = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.health.v1.Health/List",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)

Around = Callable[[Callable[..., Any], Any, grpc.aio.ServicerContext], Awaitable[Any]]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def _wrap_handler(handler: grpc.RpcMethodHandler, around: Around,
                  deserializer: Callable[[bytes], Any] | None = None) -> grpc.RpcMethodHandler:
    """The same handler with `around(behaviour, request, context)` in front of its behaviour
    (and `deserializer`, when given, reading its requests)."""
    request_deserializer = deserializer or handler.request_deserializer
    if handler.unary_unary:
        inner = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await around(inner, request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, request_deserializer=request_deserializer, response_serializer=handler.response_serializer
        )
    if handler.unary_stream:
        inner_stream = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            # An async generator, as the tracing interceptor in front of this one iterates the
            # handler's result. `around` runs the inner stream in a task (so the actor it binds
            # and the errors it maps apply there) and hands items over one at a time, each one
            # taken up by the layer in front before the next is asked for: an error's status
            # (which ends the call at once) never overtakes items already produced.
            items: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
            end = object()

            async def produce(req: Any, ctx: grpc.aio.ServicerContext) -> None:
                async for item in inner_stream(req, ctx):
                    await items.put(item)
                    await items.join()

            async def run() -> None:
                try:
                    await around(produce, request, context)
                finally:
                    await items.put(end)

            task = asyncio.create_task(run())
            try:
                while (item := await items.get()) is not end:
                    yield item
                    items.task_done()
                await task  # raises what `around` raised (an abort with the mapped status)
            finally:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                elif not task.cancelled():
                    task.exception()  # retrieved: the call was closed before it was awaited

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, request_deserializer=request_deserializer, response_serializer=handler.response_serializer
        )
    # Streaming-request methods (reflection) pass through untouched.
    return handler


def nul_field(message: object, prefix: str = "") -> str | None:
    """The path of the first text field of a request that holds a NUL character, if any.

    PostgreSQL's text cannot store NUL (SQLite can), so such text is refused at the door on
    every backend alike rather than failing deep in a store as a server error.
    """
    if not isinstance(message, Message) or (not prefix and b"\x00" not in message.SerializeToString()):
        return None  # no zero byte in the encoding: no NUL in any text (the common case, fast)
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        kind = field
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            if any("\x00" in key for key in value if isinstance(key, str)):
                return path
            kind, value = field.message_type.fields_by_name["value"], list(value.values())
        elif not field.is_repeated:
            value = [value]
        if kind.type == FieldDescriptor.TYPE_STRING and any("\x00" in text for text in value):
            return path
        if kind.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value:
                if (found := nul_field(item, f"{path}.")) is not None:
                    return found
    return None


@dataclass(frozen=True)
class _Unreadable:
    """A request that did not parse as its message, handed on so that it is refused as
    INVALID_ARGUMENT here rather than as gRPC's UNKNOWN `Unexpected DecodeError`."""

    reason: str


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as exc:  # a corrupt wire format, or a text field that is not UTF-8
            return _Unreadable(str(exc))

    return parse


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc has no stubs here: its base is Any
    """Sends a TrellisError as its status, message and fields (services.kit.rpc_errors, always
    sendable); anything else is INTERNAL with no detail leaked."""

    async def intercept_service(self, continuation: Continuation,
                                handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method

        async def around(behaviour: Callable[..., Any], request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                if isinstance(request, _Unreadable):
                    raise errors.InvalidArgument(f"the request is not a valid message: {request.reason}")
                if (field := nul_field(request)) is not None:
                    raise errors.InvalidArgument(f"{field} must not contain NUL characters", field=field)
                return await behaviour(request, context)
            except errors.TrellisError as exc:
                await context.abort_with_status(to_status(exc))
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception:
                log.exception("unhandled error in %s", method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")

        return _wrap_handler(handler, around, _tolerant(handler.request_deserializer))


class ObserveInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc has no stubs here: its base is Any
    """Outermost of the kit's own interceptors: counts and times each call by method and final
    status code, and binds the caller's `x-request-id` for the handler's log lines."""

    def __init__(self, metrics: ServiceMetrics | None) -> None:
        self._metrics = metrics

    async def intercept_service(self, continuation: Continuation,
                                handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        metrics = self._metrics

        async def around(behaviour: Callable[..., Any], request: Any, context: grpc.aio.ServicerContext) -> Any:
            request_id = dict(context.invocation_metadata() or ()).get("x-request-id", "")
            bound = request_id_var.set(request_id[:128]) if request_id else None
            started = time.perf_counter()
            failed = ""
            try:
                return await behaviour(request, context)
            except asyncio.CancelledError:
                failed = "CANCELLED"
                raise
            except grpc.aio.AbortError:
                raise
            except Exception:
                failed = "UNKNOWN"
                raise
            finally:
                if metrics is not None:
                    metrics.observe_call(method, failed or _code_name(context.code()), time.perf_counter() - started)
                if bound is not None:
                    request_id_var.reset(bound)

        return _wrap_handler(handler, around)


def _code_name(code: object) -> str:
    """The status name a handler left on its context (None, the default, is OK)."""
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return str(status.name)
    return str(code)


class ActorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc has no stubs here: its base is Any
    """Verifies the actor token of every non-public call and binds the actor for the handler.

    `refused(code)` hears each refusal: `missing_token`, `token_expired` or `invalid_token`.
    """

    def __init__(self, verifier: ActorVerifier, public_methods: Iterable[str] = (),
                 refused: Callable[[str], None] | None = None) -> None:
        self._verifier = verifier
        self._public = ALWAYS_PUBLIC | frozenset(public_methods)
        self._refused = refused or (lambda code: None)

    async def intercept_service(self, continuation: Continuation,
                                handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method in self._public:
            return handler
        verifier = self._verifier
        refused = self._refused

        async def around(behaviour: Callable[..., Any], request: Any, context: grpc.aio.ServicerContext) -> Any:
            metadata = dict(context.invocation_metadata() or ())
            header = metadata.get("authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                refused("missing_token")
                raise errors.Unauthenticated("missing actor token: send authorization: Bearer <token>")
            try:
                actor = verifier.verify(token.strip())
            except errors.Unauthenticated as exc:
                refused("token_expired" if isinstance(exc.__cause__, jwt.ExpiredSignatureError) else "invalid_token")
                raise
            bound = bind_actor(actor)
            try:
                return await behaviour(request, context)
            finally:
                reset_actor(bound)

        return _wrap_handler(handler, around)


def create_server(
    address: str,
    *,
    register: Callable[[grpc.aio.Server], None],
    service_names: Iterable[str],
    verifier: ActorVerifier,
    public_methods: Iterable[str] = (),
    metrics: ServiceMetrics | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A server bound to `address` ("[::]:0" in tests) with health, reflection and interceptors;
    `metrics` (when given) counts its calls and refused actor tokens.

    Returns the server, the port it bound, and the health servicer (set SERVING once ready).
    """
    refused = metrics.auth_refused if metrics is not None else None
    server = grpc.aio.server(
        interceptors=[*server_interceptors(), ObserveInterceptor(metrics), ErrorInterceptor(),
                      ActorInterceptor(verifier, public_methods, refused)],
        options=[("grpc.so_reuseport", 0)],
    )
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = list(service_names)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    return server, port, health_servicer


async def mark_serving(health_servicer: health.aio.HealthServicer, service_names: Iterable[str]) -> None:
    for name in ["", *service_names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


async def serve_until_signalled(server: grpc.aio.Server, *, grace: float, on_stop: Callable[[], Awaitable[None]] | None = None) -> None:
    """Run until SIGTERM or SIGINT, then stop taking calls and finish those in flight."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down (grace %.1fs)", grace)
    await server.stop(grace)
    if on_stop is not None:
        await on_stop()
