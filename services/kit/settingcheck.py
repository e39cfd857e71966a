"""The forms settings must take, and one line per bad setting when they do not.

`Settings` (services.kit.settings) checks each value against its form when it is built: a
host:port, a URL, a JSON list of networks, a base64 key. A value in the wrong form is reported
as one line naming the variable, what was given (never a secret's value, never a URL's
password) and the form expected; `exit_on_bad_settings` prints those lines and exits with 2,
as every `python -m services.<name>` and the `trellis` command do.

    ValueError
    ├── SettingError      one setting found unusable after start (a missing file, a production refusal)
    └── InvalidSettings   the settings could not be built; `problems` holds one line per bad setting
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import json
import os
import re
import sys
import types
from collections.abc import Iterator, Mapping
from enum import Enum
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin
from urllib.parse import urlsplit

import annotated_types
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import SettingsError

# The error type of a value in the wrong form; its message is the form expected.
FORM_ERROR = "setting_form"
# A process that cannot use its settings exits with this (as argparse does for bad arguments).
EXIT_BAD_SETTINGS = 2
SHOWN_CHARACTERS = 200
NATS_SCHEMES = ("nats", "tls", "ws", "wss")
NETWORKS_FORM = 'a JSON list of networks, like ["10.0.0.0/8", "fd00::/8"]'

M = TypeVar("M", bound=BaseModel)


class SettingError(ValueError):
    """One setting that cannot be used: `variable`, the form `expected`, what was `given`
    (None: not set). A secret's value is never part of the message."""

    def __init__(self, variable: str, expected: str, *, given: object = None, secret: bool = False) -> None:
        super().__init__(describe(variable, given, expected, secret=secret))
        self.variable, self.expected, self.given, self.secret = variable, expected, given, secret


class InvalidSettings(ValueError):
    """Settings that could not be built; `problems` holds one line per bad setting."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def form_error(expected: str) -> PydanticCustomError:
    """The error a field check raises: pydantic keeps it, `problems()` reads the form from it."""
    return PydanticCustomError(FORM_ERROR, "{expected}", {"expected": expected})


def describe(variable: str, given: object, expected: str, *, secret: bool = False) -> str:
    """One line: the variable, what was given and the form expected."""
    if given is None:
        return f"{variable} is not set; expected {expected}"
    if secret:
        return f"{variable} is not valid (its value is a secret, not shown); expected {expected}"
    return f"{variable} is {_shown(given)}; expected {expected}"


def _shown(given: object) -> str:
    text = given if isinstance(given, str) else json.dumps(given, default=str)
    # A URL's password (a database or NATS URL) is a secret too.
    text = re.sub(r"(://[^/@:\s]*:)[^/@\s]*@", r"\1***@", text)
    if len(text) > SHOWN_CHARACTERS:
        text = text[:SHOWN_CHARACTERS] + "…"
    # In single quotes, as a shell would take it back (JSON lists keep their double quotes).
    if "'" in text or any(not c.isprintable() for c in text):
        return json.dumps(text, ensure_ascii=False)
    return f"'{text}'"


# --- forms -------------------------------------------------------------------------------------

def address(value: str, *, host_required: bool = True) -> str:
    """host:port (an IPv6 host in brackets); the port 0 to 65535."""
    host, colon, port = value.rpartition(":")
    expected = ("host:port, like 127.0.0.1:50051" if host_required
                else "host:port, like 0.0.0.0:8080 (an empty host: every interface)")
    unbracketed_v6 = ":" in host and "/" not in host and not (host.startswith("[") and host.endswith("]"))
    if (not colon or not port.isdigit() or int(port) > 65535 or (host_required and not host)
            or unbracketed_v6 or any(c.isspace() for c in value)):
        raise form_error(expected + (" (an IPv6 host in brackets: [::1]:50051)" if unbracketed_v6 else ""))
    return value


def host(value: str) -> str:
    """A host name or IP address to listen on (an IPv6 address in brackets)."""
    bracketed = value.startswith("[") and value.endswith("]")
    try:
        address = ipaddress.ip_address(value[1:-1] if bracketed else value)
    except ValueError:
        address = None
    if address is not None:
        if (address.version == 6) != bracketed:
            raise form_error("a host name or IP address, an IPv6 address in brackets ([::])")
        return value
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*", value):
        raise form_error("a host name or IP address, like 0.0.0.0 or [::]")
    return value


def name(value: str, what: str) -> str:
    """Letters, digits, `-` and `_` (a JetStream durable consumer's name, say)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", value):
        raise form_error(f"{what}: letters, digits, - and _")
    return value


def header_value(value: str) -> str:
    """Visible ASCII and spaces: what may go into an HTTP header as it is."""
    if not value or not all(" " <= c <= "~" for c in value):
        raise form_error("visible ASCII text, no line breaks (it is sent as an HTTP header)")
    return value


def http_url(value: str, *, what: str = "an http:// or https:// URL") -> str:
    """An absolute http(s) URL with a host."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise form_error(what) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise form_error(what)
    return value


def database_url(value: str) -> str:
    if value and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://\S*$", value):
        raise form_error("a SQLAlchemy URL like postgresql+asyncpg://user:password@host:5432/name, "
                         "or empty (SQLite under the data directory, embedded mode only)")
    return value


def nats_url(value: str) -> str:
    """One nats:// URL, or several separated by commas (a cluster)."""
    servers = [part.strip() for part in value.split(",") if part.strip()]
    expected = "nats://host:port, or several separated by commas (nats://a:4222,nats://b:4222)"
    if not servers:
        raise form_error(expected)
    for server in servers:
        try:
            parts = urlsplit(server)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise form_error(expected) from None
        if parts.scheme not in NATS_SCHEMES or not parts.hostname:
            raise form_error(expected)
    return value


def networks(values: list[str]) -> list[str]:
    """Each entry a network in CIDR form (a lone address is its /32 or /128), no host bits set."""
    expected = NETWORKS_FORM
    for value in values:
        try:
            ipaddress.ip_network(value.strip(), strict=True)
        except ValueError:
            try:
                meant = ipaddress.ip_network(value.strip(), strict=False)
            except ValueError:
                raise form_error(f"{expected}; {json.dumps(value)} is not a network") from None
            raise form_error(f"{expected}; {json.dumps(value)} has host bits set (the network is {meant})") from None
    return values


def base64_key(value: str, *, size: int, exact: bool) -> bytes:
    """The bytes of a base64 key of `size` bytes (at least `size` unless `exact`)."""
    expected = f"base64 of {'' if exact else 'at least '}{size} random bytes"
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise form_error(expected) from None
    if len(key) < size or (exact and len(key) != size):
        raise form_error(f"{expected} (it decodes to {len(key)})")
    return key


# --- the form of a field, from its type and bounds --------------------------------------------

def describe_form(info: FieldInfo) -> str:
    """What a field takes, in words: `a whole number from 1 to 5`, `true or false`, …"""
    annotation = info.annotation
    optional = False
    if get_origin(annotation) in (Union, types.UnionType):
        arguments = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(arguments) < len(get_args(annotation))
        annotation = arguments[0] if len(arguments) == 1 else annotation
    form = _form_of(annotation, info.metadata)
    return f"{form}, or unset" if optional else form


def _form_of(annotation: Any, metadata: list[Any]) -> str:
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "a whole number" + _bounds(metadata)
    if annotation is float:
        return "a number" + _bounds(metadata)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return _one_of([member.value for member in annotation])
    if get_origin(annotation) is Literal:
        return _one_of(list(get_args(annotation)))
    if get_origin(annotation) is list:
        (item,) = get_args(annotation) or (str,)
        if item in (int, float):
            return "a JSON list of numbers, like [60, 300]"
        return 'a JSON list of strings, like ["a", "b"]'
    if annotation is Path:
        return "a path"
    if annotation is SecretStr:
        return "a secret"
    return "text"


def _one_of(values: list[Any]) -> str:
    shown = [f"{v}" if v != "" else "empty" for v in values]
    return "one of " + ", ".join(shown)


def _bounds(metadata: list[Any]) -> str:
    low = high = ""
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            low = f"at least {item.ge:g}"
        elif isinstance(item, annotated_types.Gt):
            low = f"above {item.gt:g}"
        elif isinstance(item, annotated_types.Le):
            high = f"at most {item.le:g}"
        elif isinstance(item, annotated_types.Lt):
            high = f"below {item.lt:g}"
    if low.startswith("at least") and high.startswith("at most"):
        return f" from {low.removeprefix('at least ')} to {high.removeprefix('at most ')}"
    if low.startswith("at least") and not high:
        return f" of {low}"
    return "".join(f" {part}" for part in (low, "and" if low and high else "", high) if part)


def is_secret(info: FieldInfo) -> bool:
    annotation = info.annotation
    return annotation is SecretStr or (get_origin(annotation) is list and get_args(annotation) == (SecretStr,))


# --- reporting ---------------------------------------------------------------------------------

def problems(exc: ValidationError, model: type[BaseModel], *, given: Mapping[str, object] | None = None,
             labels: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per bad setting of `exc`. `given` holds values passed in code (the CLI's options,
    named by `labels`); the others came from the environment, where their text is read back."""
    given, labels = given or {}, labels or {}
    environ = os.environ if environ is None else environ
    prefix = str(model.model_config.get("env_prefix", ""))
    by_field: dict[str, list[Any]] = {}
    across: list[str] = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        if loc and loc[0] in model.model_fields:
            by_field.setdefault(str(loc[0]), []).append(error)
        else:  # a check across settings (the production refusals) names its variables itself
            across.append(str(error["msg"]).removeprefix("Value error, "))
    lines: list[str] = []
    for name, errors in by_field.items():
        info = model.model_fields[name]
        variable = labels[name] if name in given and name in labels else f"{prefix}{name}".upper()
        custom = next((e for e in errors if e["type"] == FORM_ERROR), None)
        expected = str(custom["msg"]) if custom else (getattr(model, "SETTING_FORMS", {}).get(name) or describe_form(info))
        if name in given:
            value = given[name]
        else:
            value = _environment_value(environ, variable)
            if value is None:
                value = errors[0]["input"] if len(errors[0]["loc"]) == 1 else None
        lines.append(describe(variable, value, expected, secret=is_secret(info)))
    return lines + across


def _environment_value(environ: Mapping[str, str], variable: str) -> str | None:
    for key, value in environ.items():
        if key.upper() == variable:
            return value
    return None


def load(model: type[M], *, labels: Mapping[str, str] | None = None, **values: Any) -> M:
    """`model(**values)`, or InvalidSettings with one line per bad setting."""
    try:
        return model(**values)
    except ValidationError as exc:
        raise InvalidSettings(problems(exc, model, given=values, labels=labels)) from None
    except SettingsError as exc:
        raise InvalidSettings([str(exc)]) from None


@contextlib.contextmanager
def exit_on_bad_settings() -> Iterator[None]:
    """Bad settings inside (built, or found unusable at start): their lines on stderr, exit 2."""
    try:
        yield
    except InvalidSettings as exc:
        _exit(exc.problems)
    except SettingError as exc:
        _exit([str(exc)])


def _exit(lines: list[str]) -> None:
    for line in lines:
        print(f"error: {line}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_SETTINGS)
