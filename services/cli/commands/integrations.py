"""`trellis integrations …`: the lifecycle of an integration, one registry call per command
(update with --add-scope/--remove-scope reads first, then writes with the version it read)."""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

from services.cli.client import CliError, Session
from services.cli.commands.args import ExtendList, help_handler, non_negative_int
from services.cli.handoff import HandoffExists, HandoffFile, handoff_document, key_handoff_document
from services.cli.output import (
    CREDENTIALS_WARNING, HISTORY_HEADERS, INTEGRATION_HEADERS, STATUS_NAMES, credentials_block,
    history_row, integration_details, integration_row, message_dict, print_json, status_label,
    status_value, table,
)
from services.contracts.trellis.registry.v1 import registry_pb2 as pb


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    group = subparsers.add_parser("integrations", help="request, approve, activate and manage integrations")
    commands = group.add_subparsers(title="commands", metavar="COMMAND")
    group.set_defaults(handler=help_handler(group))

    p = commands.add_parser("create", parents=[common], help="request a new integration (state Requested)")
    p.add_argument("--vendor", required=True, help="vendor id, see `trellis vendors`")
    p.add_argument("--name", required=True)
    p.add_argument("--description", required=True, help="the business purpose, for audits")
    p.add_argument("--owner", required=True, help="the person responsible for it")
    p.add_argument("--scope", dest="scopes", action=ExtendList, required=True, metavar="SCOPE",
                   help="category:action, repeatable or comma separated; see `trellis scopes`")
    p.add_argument("--rate-limit", type=non_negative_int, default=None, metavar="N",
                   help="requests per minute, 1-10000 (default 60)")
    p.add_argument("--daily-quota", type=non_negative_int, default=0, metavar="N", help="requests per day (default: none)")
    p.add_argument("--allow", dest="allow", action=ExtendList, metavar="CIDR", help="IP allowlist entries (default: all IPs)")
    p.set_defaults(handler=create)

    p = commands.add_parser("list", parents=[common], help="list integrations")
    p.add_argument("--status", dest="statuses", action=ExtendList, metavar="STATUS", help=f"one or more of {', '.join(STATUS_NAMES)}")
    p.add_argument("--vendor", default="", help="vendor id")
    p.set_defaults(handler=list_integrations)

    p = commands.add_parser("show", parents=[common], help="details and lifecycle history")
    p.add_argument("id")
    p.set_defaults(handler=show)

    p = commands.add_parser("approve", parents=[common], help="approve a request (a different administrator than the requester)")
    p.add_argument("id")
    p.set_defaults(handler=approve)

    for name, handler, text in (
        ("activate", activate, "activate an approved integration and show its credentials once"),
        ("reactivate", reactivate, "reactivate a suspended integration with new credentials (a different administrator than the suspender)"),
    ):
        p = commands.add_parser(name, parents=[common], help=text)
        p.add_argument("id")
        _add_handoff(p)
        p.set_defaults(handler=handler)

    p = commands.add_parser("update", parents=[common], help="change scopes, limits, owner, description or allowlist")
    p.add_argument("id")
    p.add_argument("--scopes", dest="scopes", action=ExtendList, default=None, metavar="SCOPE", help="replace the scopes")
    p.add_argument("--add-scope", dest="add_scopes", action=ExtendList, metavar="SCOPE")
    p.add_argument("--remove-scope", dest="remove_scopes", action=ExtendList, metavar="SCOPE")
    p.add_argument("--rate-limit", type=non_negative_int, metavar="N", help="requests per minute (1-10000)")
    p.add_argument("--daily-quota", type=non_negative_int, metavar="N", help="requests per day, 0 for none")
    p.add_argument("--owner")
    p.add_argument("--description")
    p.add_argument("--name")
    allow = p.add_mutually_exclusive_group()
    allow.add_argument("--allow", dest="allow", action=ExtendList, default=None, metavar="CIDR", help="replace the IP allowlist")
    allow.add_argument("--clear-allowlist", action="store_true", help="allow all IPs again")
    p.set_defaults(handler=update)

    p = commands.add_parser("suspend", parents=[common], help="suspend: credentials stop working at once")
    p.add_argument("id")
    p.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    p.set_defaults(handler=suspend)

    p = commands.add_parser("revoke", parents=[common], help="revoke permanently (terminal)")
    p.add_argument("id")
    p.add_argument("--reason", default="")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation on a terminal")
    p.set_defaults(handler=revoke)

    p = commands.add_parser("regenerate-key", parents=[common], help="new API key; the old one fails at once")
    p.add_argument("id")
    _add_handoff(p)
    p.set_defaults(handler=regenerate_key)


# `--handoff` without a file: under the data directory (services/cli/handoff.py).
_DEFAULT_HANDOFF = object()


def _add_handoff(p: argparse.ArgumentParser) -> None:
    p.add_argument("--handoff", nargs="?", const=_DEFAULT_HANDOFF, default=None, metavar="FILE",
                   help="also write the partner hand-off, a new file of mode 0600: FILE, or without FILE "
                        "<data dir>/handoffs/<id>.json (then <id>-2.json, ...)")


# --- commands -------------------------------------------------------------------------------

def create(args: argparse.Namespace, session: Session) -> int:
    integration = session.registry.CreateIntegration(pb.CreateIntegrationRequest(
        vendor_id=args.vendor, name=args.name, description=args.description, owner=args.owner,
        scopes=args.scopes, rate_limit_per_minute=args.rate_limit, daily_quota=args.daily_quota,
        ip_allowlist=args.allow,
    ))
    _print_integration(args, integration, f"Requested integration {integration.id}.",
                       f"Next: a different administrator approves it: trellis integrations approve {integration.id}")
    return 0


def list_integrations(args: argparse.Namespace, session: Session) -> int:
    try:
        statuses = [status_value(s) for s in args.statuses]
    except ValueError as exc:
        raise CliError(str(exc)) from None
    request = pb.ListIntegrationsRequest(statuses=statuses, vendor_id=args.vendor, page_size=500)
    found: list[pb.Integration] = []
    while True:
        page = session.registry.ListIntegrations(request)
        found.extend(page.integrations)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    if args.json:
        print_json({"integrations": [message_dict(i) for i in found]})
    elif found:
        print(table(INTEGRATION_HEADERS, (integration_row(i) for i in found)))
    else:
        print("No integrations.")
    return 0


def show(args: argparse.Namespace, session: Session) -> int:
    integration = session.registry.GetIntegration(pb.GetIntegrationRequest(integration_id=args.id))
    history = session.registry.GetIntegrationHistory(pb.GetIntegrationHistoryRequest(integration_id=args.id)).entries
    if args.json:
        print_json({"integration": message_dict(integration), "history": [message_dict(e) for e in history]})
        return 0
    print(integration_details(integration))
    print("\nHistory")
    print(table(HISTORY_HEADERS, (history_row(e) for e in history)))
    return 0


def approve(args: argparse.Namespace, session: Session) -> int:
    integration = session.registry.ApproveIntegration(pb.ApproveIntegrationRequest(integration_id=args.id))
    _print_integration(args, integration, f"Approved integration {integration.id}.",
                       f"Next: trellis integrations activate {integration.id} --handoff")
    return 0


def activate(args: argparse.Namespace, session: Session) -> int:
    request = pb.ActivateIntegrationRequest(integration_id=args.id, request_id=uuid.uuid4().hex)
    return _issue_credentials(args, session, lambda: session.registry.ActivateIntegration(request), "Activated")


def reactivate(args: argparse.Namespace, session: Session) -> int:
    request = pb.ReactivateIntegrationRequest(integration_id=args.id, request_id=uuid.uuid4().hex)
    return _issue_credentials(args, session, lambda: session.registry.ReactivateIntegration(request), "Reactivated")


def update(args: argparse.Namespace, session: Session) -> int:
    request = pb.UpdateIntegrationRequest(integration_id=args.id)
    mask = request.update_mask
    if args.scopes is not None or args.add_scopes or args.remove_scopes:
        request.scopes.extend(_new_scopes(args, session, request))
        mask.append("scopes")
    for option, field in (("rate_limit", "rate_limit_per_minute"), ("daily_quota", "daily_quota"),
                          ("owner", "owner"), ("description", "description"), ("name", "name")):
        value = getattr(args, option)
        if value is not None:
            setattr(request, field, value)
            mask.append(field)
    if args.allow is not None or args.clear_allowlist:
        request.ip_allowlist.extend(args.allow or [])
        mask.append("ip_allowlist")
    if not mask:
        raise CliError("nothing to update: give --scopes, --add-scope, --remove-scope, --rate-limit, "
                       "--daily-quota, --owner, --description, --name, --allow or --clear-allowlist")
    integration = session.registry.UpdateIntegration(request)
    _print_integration(args, integration, f"Updated integration {integration.id} ({', '.join(mask)}).")
    return 0


def suspend(args: argparse.Namespace, session: Session) -> int:
    integration = session.registry.SuspendIntegration(pb.SuspendIntegrationRequest(integration_id=args.id, reason=args.reason))
    _print_integration(args, integration, f"Suspended integration {integration.id}; its credentials no longer work.",
                       f"A different administrator can bring it back: trellis integrations reactivate {integration.id}")
    return 0


def revoke(args: argparse.Namespace, session: Session) -> int:
    if not args.yes and not args.json and sys.stdin.isatty():
        try:
            answer = input(f"Revoke {args.id} permanently? It can never be reactivated. [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("Not revoked.")
            return 1
    integration = session.registry.RevokeIntegration(pb.RevokeIntegrationRequest(integration_id=args.id, reason=args.reason))
    _print_integration(args, integration, f"Revoked integration {integration.id}; this is permanent.")
    return 0


def regenerate_key(args: argparse.Namespace, session: Session) -> int:
    handoff = _reserve_handoff(args, session)
    response = _calling(handoff, lambda: session.registry.RegenerateApiKey(pb.RegenerateApiKeyRequest(integration_id=args.id)))
    if args.json:
        print(CREDENTIALS_WARNING, file=sys.stderr)
        print_json({"integration": message_dict(response.integration), "api_key": response.api_key,
                    "api_key_prefix": response.api_key_prefix})
    else:
        print(f"New API key for integration {response.integration.id}; the previous key no longer works.\n")
        print(f"  API key  {response.api_key}\n")
        print(CREDENTIALS_WARNING)
    if handoff is not None:
        _write_handoff(args, handoff, key_handoff_document(response.integration, response.api_key,
                                                           api_docs_url=session.settings.api_docs_url))
    return 0


# --- helpers --------------------------------------------------------------------------------

def _new_scopes(args: argparse.Namespace, session: Session, request: pb.UpdateIntegrationRequest) -> list[str]:
    if not args.add_scopes and not args.remove_scopes:
        return list(args.scopes)
    current = session.registry.GetIntegration(pb.GetIntegrationRequest(integration_id=args.id))
    # Guards against a concurrent change between this read and the write.
    request.expected_version = current.version
    scopes = list(args.scopes) if args.scopes is not None else list(current.scopes)
    not_granted = [s for s in args.remove_scopes if s not in scopes]
    if not_granted:
        raise CliError(f"cannot remove {', '.join(not_granted)}: not granted (granted: {', '.join(scopes) or 'none'})")
    scopes = [s for s in scopes if s not in args.remove_scopes]
    return scopes + [s for s in args.add_scopes if s not in scopes]


def _reserve_handoff(args: argparse.Namespace, session: Session) -> HandoffFile | None:
    """The hand-off file, reserved before the call: the credentials are shown only once."""
    try:
        if args.handoff is _DEFAULT_HANDOFF:
            return HandoffFile.reserve_default(session.settings.data_dir, args.id)
        return HandoffFile.reserve(args.handoff) if args.handoff else None
    except (HandoffExists, OSError) as exc:
        raise CliError(str(exc)) from None


def _calling(handoff: HandoffFile | None, call: Any) -> Any:
    """call(), removing the reserved hand-off file if it fails."""
    try:
        return call()
    except BaseException:
        if handoff is not None:
            handoff.abandon()
        raise


def _write_handoff(args: argparse.Namespace, handoff: HandoffFile, document: dict[str, Any]) -> None:
    try:
        handoff.write(document)
    except OSError as exc:
        raise CliError(f"could not write the hand-off to {handoff.path}: {exc}") from None
    print(f"Partner hand-off written to {handoff.path} (mode 0600).", file=sys.stderr if args.json else sys.stdout)


def _issue_credentials(args: argparse.Namespace, session: Session, call: Any, verb: str) -> int:
    handoff = _reserve_handoff(args, session)
    response = _calling(handoff, call)
    integration, credentials = response.integration, response.credentials
    if args.json:
        print(CREDENTIALS_WARNING, file=sys.stderr)
        print_json({"integration": message_dict(integration), "credentials": message_dict(credentials)})
    else:
        print(f"{verb} integration {integration.id} ({integration.name}); it is now {status_label(integration.status)}.\n")
        print("Credentials (shown only now):")
        print(credentials_block(credentials))
        print(f"\n{CREDENTIALS_WARNING}")
    if handoff is not None:
        _write_handoff(args, handoff, handoff_document(integration, credentials, api_docs_url=session.settings.api_docs_url))
    return 0


def _print_integration(args: argparse.Namespace, integration: pb.Integration, headline: str, hint: str = "") -> None:
    if args.json:
        print_json({"integration": message_dict(integration)})
        return
    print(headline + "\n")
    print(integration_details(integration))
    if hint:
        print(f"\n{hint}")
