"""The CLI's connection to the services: settings, the caller's actor token, and stubs whose
errors come back as one readable line.

    CliError              a message for the user; `trellis` prints it and exits 1
    ├── ServiceUnreachable  no connection to a service's address (is `trellis up` running?)
    └── ServiceError        the service answered with a gRPC status
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import grpc

from services.kit.errors import TrellisError
from services.cli.settings import CliSettings
from services.kit.settings import KitSettings, Mode

CALL_TIMEOUT_SECONDS = 30.0

# Each service's stub class, imported when a command first calls that service: a command
# loads only the contracts it uses (docs/benchmarks.md, "CLI").
_STUBS: dict[str, tuple[str, str]] = {
    "identity": ("services.contracts.trellis.identity.v1.identity_pb2_grpc", "IdentityStub"),
    "registry": ("services.contracts.trellis.registry.v1.registry_pb2_grpc", "RegistryStub"),
}


def _stub(name: str, channel: grpc.Channel) -> Any:
    module, cls = _STUBS[name]
    return getattr(importlib.import_module(module), cls)(channel)


class CliError(Exception):
    """An error the CLI reports as `error: <message>` and exit code 1."""


class ServiceUnreachable(CliError):
    def __init__(self, service: str, address: str) -> None:
        super().__init__(
            f"cannot reach the {service} service at {address}; is Trellis running? "
            f"Start it with `trellis up` (or point TRELLIS_{service.upper()}_ADDR at it)"
        )
        self.service, self.address = service, address


class ServiceError(CliError):
    """The service refused (or failed): `error` is the services.kit.errors class the status
    stands for, with the service's fields (services.kit.rpc_errors, the map every client uses)."""

    def __init__(self, service: str, code: grpc.StatusCode, error: TrellisError) -> None:
        super().__init__(f"{code.name}: {error.message}")
        self.service, self.code, self.error, self.details = service, code, error, error.message


# gRPC core's own messages when no connection could be made; a service that answers
# UNAVAILABLE (say, because one of its peers is down) sends its own message instead.
_TRANSPORT_FAILURES = ("failed to connect to all addresses", "errors resolving", "DNS resolution failed")


class ServiceClient:
    """A service's stub whose calls carry the actor token, a deadline, and readable errors."""

    def __init__(self, name: str, address: str, channel: grpc.Channel, metadata: Callable[[], tuple[tuple[str, str], ...]]) -> None:
        self.name, self.address = name, address
        self._stub = _stub(name, channel)
        self._metadata = metadata

    def __getattr__(self, method: str) -> Callable[[Any], Any]:
        rpc = getattr(self._stub, method)

        def call(request: Any) -> Any:
            try:
                return rpc(request, metadata=self._metadata(), timeout=CALL_TIMEOUT_SECONDS)
            except grpc.RpcError as exc:
                raise self._translate(exc) from None

        return call

    def _translate(self, exc: grpc.RpcError) -> CliError:
        # The error map loads google.rpc's messages: only a command that meets an error pays for it.
        from services.kit.rpc_errors import code_of, from_rpc_error

        code, error = code_of(exc), from_rpc_error(exc, peer=self.name)
        if code is grpc.StatusCode.UNAVAILABLE and error.message.startswith(_TRANSPORT_FAILURES):
            return ServiceUnreachable(self.name, self.address)
        return ServiceError(self.name, code, error)


class Session:
    """What every command needs: settings, who is acting, and clients for the services."""

    def __init__(self, settings: CliSettings, *, actor: str, org: str) -> None:
        self.settings = settings
        self.actor, self.org = actor, org
        self._token = ""
        self._channels: list[grpc.Channel] = []
        self._clients: dict[str, ServiceClient] = {}

    @property
    def registry(self) -> ServiceClient:
        return self._client("registry")

    @property
    def identity(self) -> ServiceClient:
        return self._client("identity")

    def token(self) -> str:
        """The actor token: minted locally in embedded mode, else taken from TRELLIS_ACTOR_TOKEN."""
        if not self._token:
            self._token = actor_token(self.settings, actor=self.actor, org=self.org)
        return self._token

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token()}"),)

    def _client(self, name: str) -> ServiceClient:
        if name not in self._clients:
            address = getattr(self.settings, f"{name}_addr")
            channel = grpc.insecure_channel(address)
            self._channels.append(channel)
            self._clients[name] = ServiceClient(name, address, channel, self.metadata)
        return self._clients[name]

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        self._clients.clear()


def actor_token(settings: KitSettings, *, actor: str, org: str) -> str:
    if settings.mode is Mode.EMBEDDED:
        # Signing needs PyJWT and cryptography, which only the embedded mode loads.
        from services.cli.embedded import EmbeddedSecretsMissing, mint_cli_token

        try:
            return mint_cli_token(settings, user_id=actor, org_id=org)
        except EmbeddedSecretsMissing as exc:
            raise CliError(str(exc)) from None
    token = os.environ.get("TRELLIS_ACTOR_TOKEN", "").strip()
    if not token:
        raise CliError(
            "outside embedded mode the CLI needs an actor token from your identity provider: "
            "set TRELLIS_ACTOR_TOKEN (--actor and --org apply only to the embedded mode)"
        )
    return token
