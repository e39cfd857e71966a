"""`trellis logs query|show|export`: the API request log (QA or administrator roles), or with
`--platform` the platform log of requests no organisation can be attributed (platform operators).

Also the connection to the logs service that `trellis audit` and `trellis review` share.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.cli.client import CliError, ServiceClient, Session
from services.cli.commands.args import help_handler
from services.cli.output import fields, message_dict, plural, print_json, table
from services.contracts.trellis.logs.v1 import logs_pb2 as pb
from services.contracts.trellis.logs.v1 import logs_pb2_grpc
from services.kit.prototime import rfc3339, timestamp_or_none

MAX_LIMIT = 10_000
EXPORT_TIMEOUT_SECONDS = 3600.0
_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


# --- the connection -------------------------------------------------------------------------

class LogsClient(ServiceClient):
    """The logs service's stub with the CLI's actor token, deadline and readable errors."""

    def __init__(self, address: str, channel: grpc.Channel, metadata: Callable[[], tuple[tuple[str, str], ...]]) -> None:
        self.name, self.address = "logs", address
        self._stub = logs_pb2_grpc.LogsStub(channel)
        self._metadata = metadata

    def stream(self, method: str, request: Any) -> Iterator[Any]:
        """A server-streaming call's messages; errors surface as CliError, even mid-stream."""
        try:
            yield from getattr(self._stub, method)(request, metadata=self._metadata(), timeout=EXPORT_TIMEOUT_SECONDS)
        except grpc.RpcError as exc:
            raise self._translate(exc) from None


@contextlib.contextmanager
def logs_client(args: argparse.Namespace, session: Session) -> Iterator[LogsClient]:
    address = getattr(args, "logs_addr", None) or session.settings.logs_addr
    channel = grpc.insecure_channel(address)
    try:
        yield LogsClient(address, channel, session.metadata)
    finally:
        channel.close()


def add_logs_addr(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--logs-addr", default=None, metavar="HOST:PORT", help="default: TRELLIS_LOGS_ADDR")


# --- values ---------------------------------------------------------------------------------

def parse_time(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """`2026-04-01`, `2026-04-01T09:30`, `…Z`/`…+02:00` (no zone means UTC), or `30m`, `24h`,
    `7d`, `2w` ago."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2)
        return (now or dt.datetime.now(dt.timezone.utc)) - dt.timedelta(**{_UNITS[unit]: amount})
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use ISO 8601 (2026-04-01, 2026-04-01T09:30Z) or an age such as 30m, 24h, 7d"
        ) from None
    return when.replace(tzinfo=dt.timezone.utc) if when.tzinfo is None else when


def when_text(ts: Timestamp, *, millis: bool = False) -> str:
    return rfc3339(ts, "milliseconds" if millis else "seconds")


def limit_value(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"--limit must be between 1 and {MAX_LIMIT}")
    return value


# --- commands -------------------------------------------------------------------------------

def _add_filters(p: argparse.ArgumentParser) -> None:
    f = p.add_argument_group("filters (they combine)")
    f.add_argument("--integration", default="", metavar="ID", help="one integration's requests")
    f.add_argument("--since", type=parse_time, default=None, metavar="TIME", help="from this time (ISO 8601, or 24h/7d ago)")
    f.add_argument("--until", type=parse_time, default=None, metavar="TIME", help="before this time")
    f.add_argument("--status", default="", metavar="STATUS", help="success, error, a class such as 4xx, or a code such as 429")
    f.add_argument("--endpoint", default="", metavar="TEXT", help="endpoints containing this text (any case)")
    f.add_argument("--ip", default="", metavar="ADDRESS", help="requests from this IP address")
    f.add_argument("--error-code", default="", metavar="CODE", help="e.g. insufficient_scope, rate_limit_exceeded")
    _add_platform(p)
    add_logs_addr(p)


def _add_platform(p: argparse.ArgumentParser) -> None:
    p.add_argument("--platform", action="store_true",
                   help="the platform log: requests no organisation can be attributed (unknown keys, clients or "
                        "tokens, no credentials); needs the trellis_platform_operations permission")


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {"integration_id": args.integration, "since": timestamp_or_none(args.since), "until": timestamp_or_none(args.until),
            "status": args.status, "endpoint": args.endpoint, "ip": args.ip, "error_code": args.error_code,
            "platform": args.platform}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    logs = subparsers.add_parser("logs", help="the API request log (QA or administrator roles)")
    commands = logs.add_subparsers(title="commands", metavar="COMMAND")
    logs.set_defaults(handler=help_handler(logs))

    p = commands.add_parser("query", parents=[common], help="requests newest first, filtered")
    _add_filters(p)
    p.add_argument("--limit", type=limit_value, default=50, metavar="N", help=f"rows to show (default 50, at most {MAX_LIMIT})")
    p.add_argument("--page-token", default="", metavar="TOKEN", help="continue after the previous query's last row")
    p.set_defaults(handler=query)

    p = commands.add_parser("show", parents=[common], help="one request by its request id (X-Request-ID)")
    p.add_argument("request_id", metavar="REQUEST_ID")
    _add_platform(p)
    add_logs_addr(p)
    p.set_defaults(handler=show)

    p = commands.add_parser("export", parents=[common], help="every matching request to a CSV or JSON Lines file")
    _add_filters(p)
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="default: csv")
    p.add_argument("--output", type=Path, required=True, metavar="FILE", help="the file to write")
    p.set_defaults(handler=export)


HEADERS = ("TIME", "INTEGRATION", "METHOD", "ENDPOINT", "STATUS", "MS", "IP", "REQUEST ID", "ERROR")
# The platform log has no integrations, and a row may stand for many requests of one source.
PLATFORM_HEADERS = ("TIME", "METHOD", "ENDPOINT", "STATUS", "MS", "IP", "REQUEST ID", "ERROR", "REQUESTS")


def row(r: pb.RequestRecord) -> tuple[object, ...]:
    return (when_text(r.timestamp, millis=True), r.integration_name or r.integration_id or "-", r.method, r.endpoint,
            r.status, f"{r.duration_ms:.1f}", r.ip, r.request_id, r.error_code or "")


def platform_row(r: pb.RequestRecord) -> tuple[object, ...]:
    return (when_text(r.timestamp, millis=True), r.method, r.endpoint, r.status, f"{r.duration_ms:.1f}",
            r.ip or "(many)", r.request_id, r.error_code or "", max(1, r.repeats))


def query(args: argparse.Namespace, session: Session) -> int:
    records: list[pb.RequestRecord] = []
    token = args.page_token
    with logs_client(args, session) as client:
        while len(records) < args.limit:
            page = client.QueryRequests(pb.QueryRequestsRequest(
                page_size=min(500, args.limit - len(records)), page_token=token, **_filters(args)))
            records += page.records
            token = page.next_page_token
            if not token:
                break
    if args.json:
        print_json({"records": [message_dict(r) for r in records], "next_page_token": token})
        return 0
    if not records:
        print("No requests match.")
        return 0
    if args.platform:
        print(table(PLATFORM_HEADERS, [platform_row(r) for r in records]))
    else:
        print(table(HEADERS, [row(r) for r in records]))
    if token:
        print(f"\nMore requests match: add --page-token {token} (or raise --limit).", file=sys.stderr)
    return 0


def show(args: argparse.Namespace, session: Session) -> int:
    with logs_client(args, session) as client:
        r = client.GetRequest(pb.GetRequestRequest(request_id=args.request_id, platform=args.platform))
    if args.json:
        print_json({"record": message_dict(r)})
        return 0
    shown = [
        ("Request ID", r.request_id), ("Time", when_text(r.timestamp, millis=True)),
        ("Integration", f"{r.integration_name} ({r.integration_id})" if r.integration_name else r.integration_id or "-"),
        ("Method", r.method), ("Endpoint", r.endpoint), ("Status", r.status), ("Duration", f"{r.duration_ms:.1f} ms"),
        ("IP address", r.ip), ("Error", r.error_code or "-"), ("Scope category", r.scope_category or "-"),
    ]
    if r.repeats > 1:
        shown.append(("Requests", f"{r.repeats} (the last of them shown; one source, one error code, one minute)"))
    print(fields(shown))
    return 0


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, a line per tenth elsewhere."""

    WIDTH = 30

    def __init__(self, out: TextIO, what: str) -> None:
        self._out, self._what = out, what
        self._tty = out.isatty()
        self._last_tenth = -1

    def update(self, done: int, total: int) -> None:
        share = done / total if total else 1.0
        filled = int(self.WIDTH * min(share, 1.0))
        line = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {share:4.0%} {done:,}/{total:,} {self._what}"
        if self._tty:
            self._out.write("\r" + line)
        elif int(share * 10) != self._last_tenth:
            self._last_tenth = int(share * 10)
            self._out.write(line + "\n")
        self._out.flush()

    def close(self) -> None:
        if self._tty:
            self._out.write("\n")
            self._out.flush()


def export(args: argparse.Namespace, session: Session) -> int:
    output: Path = args.output
    fmt = pb.EXPORT_FORMAT_JSONL if args.format == "jsonl" else pb.EXPORT_FORMAT_CSV
    partial = output.with_name(f".{output.name}.part")
    progress = Progress(sys.stderr, "requests")
    done = 0
    try:
        with logs_client(args, session) as client, open(partial, "wb") as out:
            for chunk in client.stream("ExportRequests", pb.ExportRequestsRequest(format=fmt, **_filters(args))):
                out.write(chunk.data)
                done += chunk.rows
                progress.update(done, chunk.total_rows)
        os.replace(partial, output)  # a file under its real name is always a whole export
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        progress.close()
        partial.unlink(missing_ok=True)
    if args.json:
        print_json({"export": {"file": str(output), "format": args.format, "rows": done}})
    else:
        print(f"Exported {plural(done, 'request')} to {output} ({args.format}).")
    return 0
