"""The rooms of a service in the shape of docs/architecture.md keep to their imports, counted
in a fresh interpreter so that what a module pulls in through others counts too: a domain
imports no I/O library and nothing of its service's outer rooms; an application layer no
SQLAlchemy, gRPC, NATS or aiohttp, nor its service's adapters or entrypoints; no room imports
another service. A service joins SHAPED when it is converted. The console and the CLI are
clients: the console imports no service, the CLI only their settings groups."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHAPED = ("registry", "identity", "webhooks", "logs", "edge")
IO_LIBRARIES = ("sqlalchemy", "alembic", "grpc", "grpc_health", "nats", "aiohttp", "opentelemetry")
OTHER_SERVICES = ("identity", "registry", "webhooks", "logs", "edge", "cli", "console")


def imported_by(*modules: str) -> set[str]:
    """Every module loaded by importing `modules` in a new interpreter."""
    code = (f"import importlib, json, sys\nfor m in {list(modules)!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(result.stdout))


def modules_of(service: str, room: str) -> list[str]:
    folder = ROOT / "services" / service / room
    return [f"services.{service}.{room}.{path.stem}" for path in sorted(folder.glob("*.py")) if path.stem != "__init__"]


def offending(loaded: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if any(m == p or m.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize("service", SHAPED)
def test_a_domain_imports_no_io_library_and_no_outer_room(service: str) -> None:
    loaded = imported_by(*modules_of(service, "domain"))
    outer = tuple(f"services.{service}.{room}" for room in ("application", "adapters", "entrypoints"))
    assert offending(loaded, (*IO_LIBRARIES, "google.protobuf", "pydantic", *outer)) == []


@pytest.mark.parametrize("service", SHAPED)
def test_an_application_layer_imports_no_storage_transport_or_bus(service: str) -> None:
    loaded = imported_by(*modules_of(service, "application"))
    outer = tuple(f"services.{service}.{room}" for room in ("adapters", "entrypoints"))
    assert offending(loaded, (*IO_LIBRARIES, *outer)) == []


@pytest.mark.parametrize("service", SHAPED)
def test_no_room_imports_another_service(service: str) -> None:
    rooms = ("domain", "application", "adapters", "entrypoints")
    loaded = imported_by(*(m for room in rooms for m in modules_of(service, room)))
    others = tuple(f"services.{other}" for other in OTHER_SERVICES if other != service)
    assert offending(loaded, others) == []


def test_the_kits_unit_of_work_protocol_imports_no_database_library() -> None:
    assert offending(imported_by("services.kit.uow"), IO_LIBRARIES) == []


def every_module_of(package: str) -> list[str]:
    """The modules of a package and its subpackages, `__main__` aside (it runs the program)."""
    folder = ROOT / package.replace(".", "/")
    return sorted(package + "." + ".".join(path.relative_to(folder).with_suffix("").parts)
                  for path in folder.rglob("*.py") if path.stem not in ("__init__", "__main__"))


def test_the_console_imports_no_service_only_their_contracts() -> None:
    # The console is a client of the four services' gRPC APIs, as the signed-in user: it
    # imports their stubs (services.contracts) and the kit, never their code.
    loaded = imported_by(*every_module_of("services.console"))
    assert offending(loaded, tuple(f"services.{other}" for other in OTHER_SERVICES if other != "console")) == []


def test_the_cli_imports_of_the_services_only_their_settings_groups() -> None:
    # `trellis up` starts every service as a process (`python -m services.<name>`) and reads
    # every component's settings to pass them on; of a service it may import that alone.
    loaded = imported_by(*every_module_of("services.cli"))
    settings_modules = {f"services.{s}{suffix}" for s in OTHER_SERVICES for suffix in ("", ".entrypoints", ".entrypoints.settings")}
    others = tuple(f"services.{other}" for other in OTHER_SERVICES if other != "cli")
    assert sorted(set(offending(loaded, others)) - settings_modules) == []
