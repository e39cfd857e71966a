"""`trellis setup-requests …`: pre-built integrations (WooCommerce, Shopify, QuickBooks Online)
are requested, not provisioned. An administrator submits a request with the connection details
(`create`) and follows it (`list`, `show`); the platform team (`trellis_platform_operations`)
works the queue of every organisation (`list --all`, `start`, `complete`, `decline`) and reads a
request's secret connection details while configuring it (`secrets`). The one who submitted a
request does none of the platform team's steps on it (separation of duties).

Secret connection details are read with `--secret NAME`: from a prompt that does not echo on a
terminal, else one line of standard input per name, so they stay out of shell history; on a
terminal a required secret left out is asked for. They are sealed by the registry and never
shown back to the organisation: a request lists only which secrets were given. `secrets` prints
them to a platform operator while the request is In progress; each read is in the request's
history and the organisation's audit trail, and completing or declining erases them.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import uuid
from collections.abc import Iterable

from services.cli.client import CliError, Session
from services.cli.commands.args import ExtendList, help_handler
from services.cli.output import SETUP_STATUS_PREFIX, fields, message_dict, print_json, table, timestamp
from services.contracts.trellis.registry.v1 import registry_pb2 as pb

SETUP_STATUS_NAMES = tuple(
    name.removeprefix(SETUP_STATUS_PREFIX).lower() for name in pb.SetupRequestStatus.keys()
    if name != f"{SETUP_STATUS_PREFIX}UNSPECIFIED"
)
REVEAL_WARNING = ("warning: these are the organisation's secret connection details, shown for configuring the "
                  "connection only; "
                  "this read is recorded in the request's history and the organisation's audit trail. Do not "
                  "store or share them; they are erased when the request is completed or declined.")
SHELL_HISTORY_WARNING = ("warning: {name} is a secret and was given on the command line, which shell history keeps; "
                         "next time use --secret {name}")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    group = subparsers.add_parser("setup-requests", help="request pre-built integrations; the platform team's queue")
    commands = group.add_subparsers(title="commands", metavar="COMMAND")
    group.set_defaults(handler=help_handler(group))

    p = commands.add_parser("catalogue", parents=[common],
                            help="the pre-built integrations and the connection details each asks for")
    p.set_defaults(handler=catalogue)

    p = commands.add_parser("create", parents=[common], help="submit a setup request with your connection details")
    p.add_argument("--prebuilt", required=True, metavar="ID", help="woocommerce, shopify or quickbooks_online; "
                   "see `trellis setup-requests catalogue`")
    p.add_argument("--field", dest="fields", action="append", default=[], metavar="NAME=VALUE",
                   help="a connection detail that is not secret, repeatable")
    p.add_argument("--secret", dest="secrets", action=ExtendList, metavar="NAME",
                   help="a secret connection detail to read from a prompt (or one line of stdin per name)")
    p.add_argument("--contact-email", default="", help="whom the platform team contacts")
    p.add_argument("--notes", default="", help="anything the platform team should know")
    p.add_argument("--request-id", default="", help="makes a retry safe: the same id returns the first request")
    p.set_defaults(handler=create)

    p = commands.add_parser("list", parents=[common], help="your organisation's requests, newest first")
    p.add_argument("--status", dest="statuses", action=ExtendList, metavar="STATUS",
                   help=f"one or more of {', '.join(SETUP_STATUS_NAMES)}")
    p.add_argument("--all", dest="all_organisations", action="store_true",
                   help="every organisation's queue, oldest first (needs trellis_platform_operations)")
    p.set_defaults(handler=list_requests)

    p = commands.add_parser("show", parents=[common], help="a request's details and history")
    p.add_argument("id")
    p.set_defaults(handler=show)

    p = commands.add_parser("start", parents=[common], help="platform team: Submitted -> In progress")
    p.add_argument("id")
    p.set_defaults(handler=start)

    p = commands.add_parser("complete", parents=[common], help="platform team: In progress -> Configured")
    p.add_argument("id")
    p.add_argument("--note", default="", help="what was set up, for the organisation")
    p.set_defaults(handler=complete)

    p = commands.add_parser("decline", parents=[common], help="platform team: decline with a reason the organisation reads")
    p.add_argument("id")
    p.add_argument("--reason", required=True)
    p.set_defaults(handler=decline)

    p = commands.add_parser("secrets", parents=[common],
                            help="platform team: print an In progress request's secret connection details (audited)")
    p.add_argument("id")
    p.add_argument("--reason", default="", help="why, beyond configuring the connection (recorded with the read)")
    p.set_defaults(handler=secrets)


# --- values ---------------------------------------------------------------------------------

def status_label(status: int) -> str:
    """`SETUP_REQUEST_STATUS_IN_PROGRESS` -> `In progress`."""
    if status == pb.SETUP_REQUEST_STATUS_UNSPECIFIED:
        return "-"
    name: str = pb.SetupRequestStatus.Name(status)
    return name.removeprefix(SETUP_STATUS_PREFIX).replace("_", " ").capitalize()


def status_value(name: str) -> pb.SetupRequestStatus:
    key = name.strip().upper().replace(" ", "_").replace("-", "_")
    try:
        value: pb.SetupRequestStatus = pb.SetupRequestStatus.Value(SETUP_STATUS_PREFIX + key)
        return value
    except ValueError:
        raise CliError(f"unknown status {name!r}; choose from {', '.join(SETUP_STATUS_NAMES)}") from None


def _catalogue(session: Session) -> list[pb.PrebuiltIntegration]:
    return list(session.registry.ListPrebuiltIntegrations(pb.ListPrebuiltIntegrationsRequest()).integrations)


def _read_secret(f: pb.ConnectionField) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"{f.label} ({f.name}): ")
    line = sys.stdin.readline()
    if not line:
        raise CliError(f"no value for --secret {f.name} on standard input (one line per secret, in the order named)")
    return line.rstrip("\r\n")


def _connection(args: argparse.Namespace, entry: pb.PrebuiltIntegration) -> dict[str, str]:
    """The connection details: --field pairs, then --secret values read, then (on a terminal)
    the required secrets still missing. Unknown names go to the registry, which names them."""
    by_name = {f.name: f for f in entry.fields}
    connection: dict[str, str] = {}
    for pair in args.fields:
        name, eq, value = pair.partition("=")
        if not eq or not name.strip():
            raise CliError(f"--field takes NAME=VALUE, got {pair!r}")
        connection[name.strip()] = value
        if name.strip() in by_name and by_name[name.strip()].secret:
            print(SHELL_HISTORY_WARNING.format(name=name.strip()), file=sys.stderr)
    for name in args.secrets:
        if name not in by_name:
            raise CliError(f"{entry.name} has no field {name!r}; its fields are: {', '.join(by_name)}")
        connection[name] = _read_secret(by_name[name])
    if sys.stdin.isatty():
        for f in entry.fields:
            if f.secret and f.required and f.name not in connection:
                connection[f.name] = _read_secret(f)
    return connection


# --- commands -------------------------------------------------------------------------------

def catalogue(args: argparse.Namespace, session: Session) -> int:
    entries = _catalogue(session)
    if args.json:
        print_json({"integrations": [message_dict(p) for p in entries]})
        return 0
    for n, p in enumerate(entries):
        print(("\n" if n else "") + f"{p.name} ({p.id})\n  {p.description}\n")
        rows = ((f.name, f.label, "yes" if f.required else "no", "yes" if f.secret else "no", f.max_length, f.help)
                for f in p.fields)
        print(table(("FIELD", "LABEL", "REQUIRED", "SECRET", "MAX", "WHERE TO FIND IT"), rows))
    return 0


def create(args: argparse.Namespace, session: Session) -> int:
    entries = _catalogue(session)
    entry = next((p for p in entries if p.id == args.prebuilt), None)
    if entry is None:
        raise CliError(f"unknown pre-built integration {args.prebuilt!r}; pre-built integrations are: "
                       f"{', '.join(p.id for p in entries)} (see `trellis setup-requests catalogue`)")
    request = session.registry.CreateSetupRequest(pb.CreateSetupRequestRequest(
        prebuilt_id=args.prebuilt, connection=_connection(args, entry), contact_email=args.contact_email,
        notes=args.notes, request_id=args.request_id or uuid.uuid4().hex,
    ))
    _print_request(args, request, f"Submitted setup request {request.id} for {entry.name}.",
                   "The platform team configures it, most within one business day; follow it with "
                   f"`trellis setup-requests show {request.id}`.")
    return 0


def list_requests(args: argparse.Namespace, session: Session) -> int:
    request = pb.ListSetupRequestsRequest(statuses=[status_value(s) for s in args.statuses],
                                          all_organisations=args.all_organisations, page_size=500)
    found: list[pb.SetupRequest] = []
    while True:
        page = session.registry.ListSetupRequests(request)
        found.extend(page.setup_requests)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    if args.json:
        print_json({"setup_requests": [message_dict(r) for r in found]})
    elif found:
        print(table(("ID", "ORG", "PREBUILT", "STATUS", "REQUESTED BY", "SUBMITTED", "HANDLED BY"),
                    ((r.id, r.org_id, r.prebuilt_id, status_label(r.status), r.requested_by, timestamp(r.created_at),
                      r.handled_by or "-") for r in found)))
    else:
        print("No setup requests.")
    return 0


def show(args: argparse.Namespace, session: Session) -> int:
    request = session.registry.GetSetupRequest(pb.GetSetupRequestRequest(setup_request_id=args.id))
    _print_request(args, request)
    return 0


def start(args: argparse.Namespace, session: Session) -> int:
    request = session.registry.StartSetupRequest(pb.StartSetupRequestRequest(setup_request_id=args.id))
    _print_request(args, request, f"Started setup request {request.id}; it is now In progress.",
                   f"When it is configured: trellis setup-requests complete {request.id} --note '…'")
    return 0


def complete(args: argparse.Namespace, session: Session) -> int:
    request = session.registry.CompleteSetupRequest(pb.CompleteSetupRequestRequest(setup_request_id=args.id,
                                                                                  note=args.note))
    _print_request(args, request, f"Setup request {request.id} is Configured.")
    return 0


def decline(args: argparse.Namespace, session: Session) -> int:
    request = session.registry.DeclineSetupRequest(pb.DeclineSetupRequestRequest(setup_request_id=args.id,
                                                                                reason=args.reason))
    _print_request(args, request, f"Declined setup request {request.id}.")
    return 0


def secrets(args: argparse.Namespace, session: Session) -> int:
    answer = session.registry.RevealSetupRequestSecrets(pb.RevealSetupRequestSecretsRequest(
        setup_request_id=args.id, reason=args.reason))
    # The warning goes to stderr, so that --json output stays one document on stdout.
    print(REVEAL_WARNING, file=sys.stderr)
    values = dict(sorted(answer.secrets.items()))
    if args.json:
        print_json({"setup_request_id": args.id, "secrets": values})
    else:
        print(fields(values.items()))
    return 0


# --- printing -------------------------------------------------------------------------------

def _details(r: pb.SetupRequest) -> str:
    pairs: list[tuple[str, object]] = [
        ("ID", r.id), ("Organisation", r.org_id), ("Pre-built", r.prebuilt_id), ("Status", status_label(r.status)),
    ]
    pairs += [(f"  {name}", value) for name, value in sorted(r.connection.items())]
    pairs += [
        ("Secrets given", ", ".join(r.secrets_given) or "-"), ("Contact email", r.contact_email or "-"),
        ("Notes", r.notes or "-"), ("Requested by", r.requested_by), ("Handled by", r.handled_by or "-"),
    ]
    if r.decline_reason:
        pairs.append(("Decline reason", r.decline_reason))
    if r.configured_note:
        pairs.append(("Configured note", r.configured_note))
    pairs += [("Submitted", timestamp(r.created_at)), ("Updated", timestamp(r.updated_at)), ("Version", r.version)]
    return fields(pairs)


def _history_rows(steps: Iterable[pb.SetupRequestStep]) -> Iterable[tuple[str, ...]]:
    return ((timestamp(s.at), s.action, s.actor_id, status_label(s.from_status), status_label(s.to_status), s.note)
            for s in steps)


def _print_request(args: argparse.Namespace, r: pb.SetupRequest, headline: str = "", hint: str = "") -> None:
    if args.json:
        print_json({"setup_request": message_dict(r)})
        return
    if headline:
        print(headline + "\n")
    print(_details(r))
    print("\nHistory")
    print(table(("WHEN", "STEP", "BY", "FROM", "TO", "NOTE"), _history_rows(r.history)))
    if hint:
        print(f"\n{hint}")
