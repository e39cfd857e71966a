"""`trellis audit query|verify|checkpoint`: the hash-chained audit trail.

`verify` exits 0 when the chain proves itself and 1 when it names a problem, so a scheduled
job can alert on it; `checkpoint --output FILE` keeps the chain's head outside the database,
and `verify --checkpoint FILE` later proves no entry up to it was cut off.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from google.protobuf import json_format

from services.cli.client import CliError, Session
from services.cli.commands.args import help_handler
from services.cli.commands.logs import (
    add_logs_addr,
    limit_value,
    logs_client,
    parse_time,
    when_text,
)
from services.cli.output import changed_fields, message_dict, plural, print_json, table
from services.contracts.trellis.logs.v1 import logs_pb2 as pb
from services.kit.prototime import timestamp_or_none


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    audit = subparsers.add_parser("audit", help="the tamper-evident audit trail")
    commands = audit.add_subparsers(title="commands", metavar="COMMAND")
    audit.set_defaults(handler=help_handler(audit))

    p = commands.add_parser("query", parents=[common], help="audit entries newest first, filtered")
    p.add_argument("--object", default="", metavar="ID", help="entries about this object (an integration id, say)")
    p.add_argument("--object-type", default="", metavar="TYPE", help="integration, credentials, signing_key, subscription, setup_request")
    p.add_argument("--by", default="", metavar="USER", help="entries of this actor")
    p.add_argument("--action", default="", metavar="ACTION", help="e.g. integration.suspended, credentials.issued")
    p.add_argument("--since", type=parse_time, default=None, metavar="TIME", help="from this time (ISO 8601, or 24h/7d ago)")
    p.add_argument("--until", type=parse_time, default=None, metavar="TIME", help="before this time")
    p.add_argument("--limit", type=limit_value, default=50, metavar="N", help="entries to show (default 50)")
    add_logs_addr(p)
    p.set_defaults(handler=query)

    p = commands.add_parser("verify", parents=[common], help="walk the chain and name the first entry altered, removed or inserted")
    p.add_argument("--checkpoint", type=Path, default=None, metavar="FILE",
                   help="a file from `trellis audit checkpoint`: also detect entries cut off the end since")
    add_logs_addr(p)
    p.set_defaults(handler=verify)

    p = commands.add_parser("checkpoint", parents=[common], help="the chain's head now (count, last entry, MAC), signed")
    p.add_argument("--output", type=Path, default=None, metavar="FILE", help="write it here (default: print it)")
    add_logs_addr(p)
    p.set_defaults(handler=checkpoint)


HEADERS = ("SEQ", "WHEN", "BY", "ACTION", "OBJECT", "REASON", "CHANGED")


def query(args: argparse.Namespace, session: Session) -> int:
    entries: list[pb.AuditEntry] = []
    token = ""
    with logs_client(args, session) as client:
        while len(entries) < args.limit:
            page = client.QueryAudit(pb.QueryAuditRequest(
                object_id=args.object, object_type=args.object_type, actor_id=args.by, action=args.action,
                since=timestamp_or_none(args.since), until=timestamp_or_none(args.until),
                page_size=min(500, args.limit - len(entries)),
                page_token=token,
            ))
            entries += page.entries
            token = page.next_page_token
            if not token:
                break
    if args.json:
        print_json({"entries": [message_dict(e) for e in entries]})
        return 0
    if not entries:
        print("No audit entries match.")
        return 0
    print(table(HEADERS, [
        (e.seq, when_text(e.occurred_at), e.actor_id, e.action, f"{e.object_type} {e.object_id}".strip(), e.reason,
         ", ".join(changed_fields(e.before_json, e.after_json)))
        for e in entries
    ]))
    return 0


def read_checkpoint(path: Path) -> pb.AuditCheckpoint:
    try:
        data = json.loads(path.read_text())
        checkpoint: pb.AuditCheckpoint = json_format.ParseDict(data.get("checkpoint", data), pb.AuditCheckpoint(),
                                                               ignore_unknown_fields=True)
        return checkpoint
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, AttributeError, json_format.ParseError) as exc:
        raise CliError(f"{path} is not a checkpoint from `trellis audit checkpoint`: {exc}") from None


def verify(args: argparse.Namespace, session: Session) -> int:
    request = pb.VerifyAuditRequest()
    if args.checkpoint is not None:
        request.checkpoint.CopyFrom(read_checkpoint(args.checkpoint))
    with logs_client(args, session) as client:
        result = client.VerifyAudit(request)
    if args.json:
        print_json({"verification": message_dict(result)})
    elif result.intact:
        against = f", and it still reaches checkpoint entry {request.checkpoint.last_seq}" if args.checkpoint else ""
        print(f"Audit trail intact: {plural(result.entries_checked, 'entry', 'entries')} verified "
              f"(head: entry {result.head.last_seq}, MAC {result.head.head_mac[:16]}…){against}.")
    else:
        print(f"Audit trail NOT intact: {result.problem} at entry {result.seq}"
              f"{f' ({result.event_id})' if result.event_id else ''}.\n{result.message}\n"
              f"{plural(result.entries_checked, 'entry', 'entries')} before it verified.", file=sys.stderr)
    return 0 if result.intact else 1


def checkpoint(args: argparse.Namespace, session: Session) -> int:
    with logs_client(args, session) as client:
        head = client.GetAuditCheckpoint(pb.GetAuditCheckpointRequest())
    document = {"checkpoint": message_dict(head)}
    if args.output is None:
        print_json(document)
        return 0
    try:
        args.output.write_text(json.dumps(document, indent=2) + "\n")
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    if args.json:
        print_json({**document, "file": str(args.output)})
    else:
        print(f"Checkpoint of {plural(head.count, 'entry', 'entries')} (last entry {head.last_seq}, taken {when_text(head.created_at)}) "
              f"written to {args.output}. Keep it outside Trellis; `trellis audit verify --checkpoint {args.output}` "
              f"proves the trail still holds them.")
    return 0
