"""What every log line carries and what it never does: the request id of the call being served
(a context variable the edge and the gRPC server set), the current trace and span ids, one
JSON object per line (or plain text), and secrets masked before anything is written.

Secrets masked (`redact`): API keys (`grq_live_…`, `grq_test_…`), webhook signing secrets
(`whsec_…`), bearer and basic credentials, JWTs, PEM private keys, `secret=`/`password=`
pairs, and bare 43-character URL-safe tokens of mixed case (the shape of an OAuth client
secret, `secrets.token_urlsafe(32)`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from contextvars import ContextVar

from opentelemetry import trace

# The X-Request-ID of the request being served in this task ("" outside a request).
request_id_var: ContextVar[str] = ContextVar("trellis_request_id", default="")

MASK = "[redacted]"

_SECRET = re.compile(
    r"(?P<keep>\bgrq_[a-z]+_|\bwhsec_|\b[Bb]earer\s+|\b[Bb]asic\s+)[A-Za-z0-9._~+/=-]+"
    r"|(?P<pem>-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z))"
    r"|(?P<jwt>\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)"
    r"|(?P<pair>\b(?:client_secret|secret|password|api_key|kek)\b[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,;]+"
    r"|(?<![A-Za-z0-9_-])(?P<bare>[A-Za-z0-9_-]{43})(?![A-Za-z0-9_-])",
    re.DOTALL,
)


def _mask(match: re.Match[str]) -> str:
    if match.group("keep"):
        return match.group("keep") + MASK
    if match.group("pair"):
        return match.group("pair") + MASK
    bare = match.group("bare")
    if bare is not None:
        # Hex digests and ids are one case; a random URL-safe token mixes both and digits.
        mixed = any(c.islower() for c in bare) and any(c.isupper() for c in bare) and any(c.isdigit() for c in bare)
        return MASK if mixed else bare
    return MASK


def redact(text: str) -> str:
    """`text` with anything that looks like a secret replaced by `[redacted]`."""
    return _SECRET.sub(_mask, text)


class RedactSecrets(logging.Filter):
    """Masks secrets in a record's message and arguments before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is logged as it is
            return True
        record.msg, record.args = redact(message), None
        return True


def _context_fields() -> dict[str, str]:
    fields: dict[str, str] = {}
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        fields["trace_id"] = format(span_context.trace_id, "032x")
        fields["span_id"] = format(span_context.span_id, "016x")
    request_id = request_id_var.get()
    if request_id:
        fields["request_id"] = request_id
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, service, trace_id, span_id,
    request_id (when known) and exception text."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self._service,
            **_context_fields(),
        }
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The human-readable line, with the request and trace ids appended when known."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _context_fields()
        if fields:
            text += " [" + " ".join(f"{k}={v}" for k, v in fields.items() if k != "span_id") + "]"
        return redact(text) if record.exc_info or record.exc_text else text
