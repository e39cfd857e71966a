"""`trellis webhooks …` and `trellis activities …`: webhook subscriptions, their delivery log,
and platform activities to try them with. One webhooks call per command (update with
--add-type/--remove-type reads first)."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc

from services.cli.client import CliError, ServiceClient, Session
from services.cli.commands.args import ExtendList, help_handler, non_negative_int
from services.cli.commands.logs import Progress, parse_time
from services.cli.output import fields, message_dict, plural, print_json, table, timestamp
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.contracts.trellis.webhooks.v1 import webhooks_pb2_grpc
from services.kit.prototime import timestamp_or_none

SECRET_WARNING = (
    "warning: this signing secret is shown only now and cannot be retrieved again. "
    "Store it in a secrets manager now; your receiver verifies deliveries with it (see docs/receivers.md)."
)
# --scheme names, as the API's `signature_scheme` and JSON output spell them; `standard` is
# accepted for `standard_webhooks`.
SCHEMES = {"spec": pb.SIGNATURE_SCHEME_SPEC, "standard_webhooks": pb.SIGNATURE_SCHEME_STANDARD_WEBHOOKS}
SCHEME_ALIASES = {"standard": "standard_webhooks"}
SCHEME_HELP = ("spec: X-Webhook-Signature: sha256=<hex> (the default); standard_webhooks (or standard): "
               "the Standard Webhooks headers, webhook-signature: v1,<base64>")
STATUSES = ("active", "paused", "failing", "disabled")
# Enum fields of this contract, printed as short lower-case names in JSON (`active`, `timeout`).
_ENUM_PREFIXES = {"status": ("SUBSCRIPTION_STATUS_", "DELIVERY_STATUS_"), "signature_scheme": ("SIGNATURE_SCHEME_",),
                  "last_error": ("ATTEMPT_ERROR_",), "error": ("ATTEMPT_ERROR_",)}


class WebhooksClient(ServiceClient):
    """The webhooks service's stub with the CLI's token, deadline and readable errors."""

    def __init__(self, address: str, channel: grpc.Channel, session: Session) -> None:
        self.name, self.address = "webhooks", address
        self._stub = webhooks_pb2_grpc.WebhooksStub(channel)
        self._metadata = session.metadata


@contextlib.contextmanager
def connect(args: argparse.Namespace, session: Session) -> Iterator[Any]:
    address = getattr(args, "webhooks_addr", None) or session.settings.webhooks_addr
    with grpc.insecure_channel(address) as channel:
        yield WebhooksClient(address, channel, session)


def scheme_name(text: str) -> str:
    """A --scheme value: `standard_webhooks` for its alias `standard`; argparse checks the rest."""
    name = text.strip().lower()
    return SCHEME_ALIASES.get(name, name)


FILTER_HELP = ("a JMESPath expression over the delivery body (https://jmespath.org), e.g. "
               "\"data.facility_id == 'fac_1'\"; events it does not pass are recorded as Filtered, not sent; "
               "see docs/receivers.md")


def add_header_options(p: argparse.ArgumentParser, *, replaces: bool = False) -> None:
    then = "; replaces every custom header the subscription had" if replaces else ""
    p.add_argument("--header", dest="headers", action="append", default=[], metavar="NAME=VALUE",
                   help=f"a custom header every delivery sends (its value stays in your shell history: prefer "
                        f"--secret-header for a key), repeatable{then}")
    p.add_argument("--secret-header", dest="secret_headers", action=ExtendList, metavar="NAME",
                   help="a custom header whose value is read from a prompt (or one line of stdin per name)")


def add_client_cert_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--client-cert", metavar="FILE", help="mutual TLS: a PEM certificate (leaf first) deliveries present")
    p.add_argument("--client-key", metavar="FILE", help="its unencrypted PEM private key (sealed at rest)")


def client_certificate(args: argparse.Namespace) -> pb.ClientCertificateUpload | None:
    """--client-cert and --client-key, read from their files; the service checks them."""
    if not args.client_cert and not args.client_key:
        return None
    if not args.client_cert or not args.client_key:
        raise CliError("give --client-cert and --client-key together")
    texts = []
    for option, path in (("--client-cert", args.client_cert), ("--client-key", args.client_key)):
        try:
            with open(path, encoding="utf-8") as file:
                texts.append(file.read(64 * 1024 + 1))
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"{option} {path}: cannot read it ({exc.__class__.__name__})") from None
    return pb.ClientCertificateUpload(certificate_pem=texts[0], private_key_pem=texts[1])


def _read_header_value(name: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"value of header {name}: ")
    line = sys.stdin.readline()
    if not line:
        raise CliError(f"no value for --secret-header {name} on standard input (one line per header, in the order named)")
    return line.rstrip("\r\n")


def custom_headers(args: argparse.Namespace) -> list[pb.CustomHeader]:
    """--header NAME=VALUE and --secret-header NAME (prompted), in the order given; the service checks them."""
    found: list[pb.CustomHeader] = []
    for text in args.headers:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise CliError(f"--header takes NAME=VALUE, got {text.split('=')[0][:64]!r}; "
                           "use --secret-header NAME to be asked for the value")
        found.append(pb.CustomHeader(name=name.strip(), value=value))
    found += [pb.CustomHeader(name=name, value=_read_header_value(name)) for name in args.secret_headers]
    return found


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--webhooks-addr", default=argparse.SUPPRESS, metavar="HOST:PORT", help="default: TRELLIS_WEBHOOKS_ADDR")
    parents = [common, where]

    group = subparsers.add_parser("webhooks", help="webhook subscriptions, test deliveries and the delivery log")
    commands = group.add_subparsers(title="commands", metavar="COMMAND")
    group.set_defaults(handler=help_handler(group))

    p = commands.add_parser("create", parents=parents, help="subscribe an HTTPS endpoint; shows its signing secret once")
    p.add_argument("--url", required=True, help="the receiver's https:// URL")
    p.add_argument("--type", dest="types", action=ExtendList, required=True, metavar="TYPE",
                   help="activity types, repeatable or comma separated, or * for all; see `trellis activities types`")
    p.add_argument("--description", default="")
    p.add_argument("--scheme", type=scheme_name, choices=list(SCHEMES), default="spec", help=SCHEME_HELP)
    p.add_argument("--integration", default="", metavar="ID", help="the integration that owns it (default: none)")
    p.add_argument("--filter", default="", metavar="EXPR", help=FILTER_HELP)
    add_header_options(p)
    add_client_cert_options(p)
    p.set_defaults(handler=create)

    p = commands.add_parser("list", parents=parents, help="list subscriptions with their status")
    p.add_argument("--status", dest="statuses", action=ExtendList, metavar="STATUS", help=f"one or more of {', '.join(STATUSES)}")
    p.add_argument("--integration", default="", metavar="ID", help="only those this integration owns")
    p.set_defaults(handler=list_subscriptions)

    p = commands.add_parser("show", parents=parents, help="details and the latest attempts")
    p.add_argument("id")
    p.set_defaults(handler=show)

    p = commands.add_parser("update", parents=parents, help="change URL, types, description or scheme (from the next event)")
    p.add_argument("id")
    p.add_argument("--url")
    p.add_argument("--types", dest="types", action=ExtendList, default=None, metavar="TYPE", help="replace the types")
    p.add_argument("--add-type", dest="add_types", action=ExtendList, metavar="TYPE")
    p.add_argument("--remove-type", dest="remove_types", action=ExtendList, metavar="TYPE")
    p.add_argument("--description")
    p.add_argument("--scheme", type=scheme_name, choices=list(SCHEMES), help=SCHEME_HELP)
    p.add_argument("--filter", metavar="EXPR", help=FILTER_HELP + "; \"\" removes it")
    add_header_options(p, replaces=True)
    p.add_argument("--clear-headers", action="store_true", help="send no custom headers any more")
    add_client_cert_options(p)
    p.add_argument("--remove-client-cert", action="store_true", help="present no client certificate any more")
    p.set_defaults(handler=update)

    for name, handler, text in (
        ("pause", pause, "stop deliveries (events meanwhile are not delivered later)"),
        ("resume", resume, "deliver again"),
        ("test", send_test, "send a webhook.test delivery now; success returns a Failing subscription to Active"),
        ("regenerate-secret", regenerate_secret, "new signing secret; the old one stops working at once, "
                                                 "or after --overlap"),
    ):
        p = commands.add_parser(name, parents=parents, help=text)
        p.add_argument("id")
        if name == "regenerate-secret":
            p.add_argument("--overlap", type=overlap_seconds, default=0, metavar="DURATION",
                           help="keep signing with the old secret too for this long (like 30m, 24h, 7d; at most 7 days): "
                                "standard_webhooks subscriptions only, whose webhook-signature carries both signatures")
        p.set_defaults(handler=handler)

    p = commands.add_parser("delete", parents=parents, help="delete for good; pending deliveries are cancelled")
    p.add_argument("id")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation on a terminal")
    p.set_defaults(handler=delete)

    p = commands.add_parser("deliveries", parents=parents, help="the delivery log: one row per attempt, newest first")
    p.add_argument("id", help="subscription id")
    outcome = p.add_mutually_exclusive_group()
    outcome.add_argument("--succeeded", action="store_true")
    outcome.add_argument("--failed", action="store_true")
    outcome.add_argument("--filtered", action="store_true", help="the events its filter did not pass (never attempted)")
    p.add_argument("--event", default="", metavar="EVENT_ID", help="every attempt of one event")
    p.add_argument("--limit", type=non_negative_int, default=50, metavar="N")
    p.add_argument("--attempt", default="", metavar="ATTEMPT_ID",
                   help="one attempt: the headers it sent and the receiver's status, headers and first 4 KiB")
    p.set_defaults(handler=deliveries)

    p = commands.add_parser("redeliver", parents=parents, help="send a failed delivery again (same event id)")
    p.add_argument("delivery_id")
    p.set_defaults(handler=redeliver)

    p = commands.add_parser("recover", parents=parents,
                            help="after an outage: send again every failed delivery whose event arrived in a range")
    p.add_argument("id", help="subscription id")
    p.add_argument("--since", type=parse_time, required=True, metavar="TIME",
                   help="events that arrived from this time (RFC 3339, or an age such as 2h, 7d)")
    p.add_argument("--until", type=parse_time, default=None, metavar="TIME", help="... and before this time (default: now)")
    p.add_argument("--no-wait", action="store_true", help="print the recovery's id and return once it is queued")
    p.set_defaults(handler=recover)

    p = commands.add_parser("recovery", parents=parents, help="the progress of a recovery")
    p.add_argument("recovery_id")
    p.set_defaults(handler=show_recovery)

    p = commands.add_parser("recoveries", parents=parents, help="the organisation's recoveries, newest first")
    p.add_argument("id", nargs="?", default="", help="only this subscription's")
    p.add_argument("--limit", type=non_negative_int, default=50, metavar="N")
    p.set_defaults(handler=list_recoveries)

    p = commands.add_parser("retention", parents=parents, help="how long deliveries, attempts and activities are kept")
    retention = p.add_subparsers(title="commands", metavar="COMMAND")
    p.set_defaults(handler=help_handler(p))
    r = retention.add_parser("show", parents=parents, help="the organisation's retention")
    r.set_defaults(handler=show_retention)
    r = retention.add_parser("set", parents=parents, help="the organisation's own retention (0: the default)")
    r.add_argument("--days", type=non_negative_int, required=True, metavar="N")
    r.set_defaults(handler=set_retention)

    group = subparsers.add_parser("activities", help="platform activities that webhooks deliver")
    commands = group.add_subparsers(title="commands", metavar="COMMAND")
    group.set_defaults(handler=help_handler(group))

    p = commands.add_parser("publish", parents=parents, help="publish one activity, as the platform would")
    p.add_argument("--type", required=True, help="e.g. lot.created")
    p.add_argument("--data", default="{}", metavar="JSON", help="the event's data (default {})")
    p.add_argument("--event-id", default="", help="a retry with the same id is dropped as a duplicate")
    p.set_defaults(handler=publish)

    p = commands.add_parser("list", parents=parents, help="activities received, newest first")
    p.add_argument("--type", dest="types", action=ExtendList, metavar="TYPE")
    p.add_argument("--limit", type=non_negative_int, default=50, metavar="N")
    p.set_defaults(handler=list_activities)

    p = commands.add_parser("types", parents=parents, help="the activity types a subscription can choose")
    p.add_argument("--schema", action="store_true", help="with the JSON Schema of each type's data")
    p.set_defaults(handler=activity_types)


# --- output -------------------------------------------------------------------------------------

def as_json(message: Any) -> dict[str, Any]:
    """message_dict with this contract's enums as short names."""
    def short(value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if k in _ENUM_PREFIXES and isinstance(v, str):
                    v = v.lower()  # message_dict may have lower-cased it already
                    for prefix in _ENUM_PREFIXES[k]:
                        v = v.removeprefix(prefix.lower())
                    out[k] = v
                else:
                    out[k] = short(v)
            return out
        if isinstance(value, list):
            return [short(v) for v in value]
        return value

    shortened: dict[str, Any] = short(message_dict(message))
    return shortened


def _label(enum: Any, value: int, prefix: str) -> str:
    name: str = enum.Name(value)
    return name.removeprefix(prefix).replace("_", " ").capitalize()


def status_label(s: pb.Subscription) -> str:
    label = _label(pb.SubscriptionStatus, s.status, "SUBSCRIPTION_STATUS_")
    return f"{label} (integration suspended)" if s.integration_suspended else label


def subscription_details(s: pb.Subscription) -> str:
    return fields([
        ("ID", s.id), ("URL", s.url), ("Status", status_label(s)), ("Activity types", ", ".join(s.activity_types)),
        ("Description", s.description or "-"), ("Filter", s.filter or "- (every event of its types)"),
        ("Signature", "standard_webhooks (webhook-signature: v1,<base64>)" if s.signature_scheme == pb.SIGNATURE_SCHEME_STANDARD_WEBHOOKS
         else "spec (X-Webhook-Signature: sha256=<hex>)"),
        ("Integration", s.integration_id or "- (organisation)"), ("Created by", s.created_by),
        ("Created", timestamp(s.created_at)), ("Updated", timestamp(s.updated_at)),
        ("Secret created", timestamp(s.secret_created_at)), ("Failing since", timestamp(s.failing_since) or "-"),
        *([("Previous secret signs until", timestamp(s.previous_secret_expires_at))]
          if s.HasField("previous_secret_expires_at") else []),
        ("Custom headers", "; ".join(f"{h.name}: {h.hint}" for h in s.custom_headers) or "-"),
        ("Client certificate", f"{s.client_certificate.subject} (SHA-256 {s.client_certificate.sha256_fingerprint[:16]}…, "
                               f"valid until {timestamp(s.client_certificate.not_after)})"
         if s.HasField("client_certificate") else "-"),
    ])


ATTEMPT_HEADERS = ("WHEN", "EVENT", "TYPE", "ATTEMPT", "STATUS", "DURATION", "ERROR", "NEXT ATTEMPT", "DELIVERY")


def attempt_row(a: pb.Attempt) -> tuple[str, ...]:
    status = str(a.status_code) if a.status_code else "-"
    error = "" if a.error == pb.ATTEMPT_ERROR_NONE else a.error_detail or _label(pb.AttemptError, a.error, "ATTEMPT_ERROR_")
    attempt = f"{a.attempt}" if a.round <= 1 else f"{a.attempt} (round {a.round})"
    return (timestamp(a.attempted_at), a.event_id, a.event_type, attempt, status, f"{a.duration_ms:.0f} ms", error,
            timestamp(a.next_attempt_at), a.delivery_id)


def waiting_note(s: pb.Subscription) -> str:
    """What the subscription's pending deliveries wait for beyond their due time, as a sentence
    ("" when they go when due)."""
    if s.status == pb.SUBSCRIPTION_STATUS_PAUSED:
        return f"Subscription {s.id} is Paused: its pending deliveries wait until it is resumed (trellis webhooks resume {s.id})."
    if s.status == pb.SUBSCRIPTION_STATUS_FAILING:
        return f"Subscription {s.id} is Failing: nothing is attempted until a test delivery succeeds (trellis webhooks test {s.id})."
    if s.status == pb.SUBSCRIPTION_STATUS_DISABLED:
        return f"Subscription {s.id} is Disabled (its integration was revoked): nothing more is sent."
    if s.integration_suspended:
        return f"Its integration {s.integration_id} is suspended: pending deliveries wait until the integration is reactivated."
    return ""


def _print_subscription(args: argparse.Namespace, s: pb.Subscription, headline: str) -> None:
    if args.json:
        print_json({"subscription": as_json(s)})
    else:
        print(headline)
        print(subscription_details(s))


def _print_secret(args: argparse.Namespace, s: pb.Subscription, secret: str, headline: str) -> None:
    if args.json:
        print(SECRET_WARNING, file=sys.stderr)
        print_json({"subscription": as_json(s), "signing_secret": secret})
        return
    print(headline + "\n")
    print(subscription_details(s))
    print(f"\nSigning secret (shown only now):\n  {secret}\n")
    print(SECRET_WARNING)


# --- commands -------------------------------------------------------------------------------------

def create(args: argparse.Namespace, session: Session) -> int:
    with connect(args, session) as hooks:
        response = hooks.CreateSubscription(pb.CreateSubscriptionRequest(
            url=args.url, activity_types=args.types, description=args.description, signature_scheme=SCHEMES[args.scheme],
            integration_id=args.integration, filter=args.filter, custom_headers=custom_headers(args),
            client_certificate=client_certificate(args),
        ))
    _print_secret(args, response.subscription, response.signing_secret, f"Created webhook subscription {response.subscription.id}.")
    return 0


def list_subscriptions(args: argparse.Namespace, session: Session) -> int:
    unknown = [s for s in args.statuses if s.lower() not in STATUSES]
    if unknown:
        raise CliError(f"unknown status {', '.join(unknown)}; choose from {', '.join(STATUSES)}")
    request = pb.ListSubscriptionsRequest(
        statuses=[pb.SubscriptionStatus.Value(f"SUBSCRIPTION_STATUS_{s.upper()}") for s in args.statuses],
        integration_id=args.integration, page_size=500,
    )
    found: list[pb.Subscription] = []
    with connect(args, session) as hooks:
        while True:
            page = hooks.ListSubscriptions(request)
            found.extend(page.subscriptions)
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
    if args.json:
        print_json({"subscriptions": [as_json(s) for s in found]})
    elif found:
        print(table(("ID", "URL", "STATUS", "TYPES", "INTEGRATION", "CREATED"), (
            (s.id, s.url, status_label(s), ", ".join(s.activity_types), s.integration_id or "-", timestamp(s.created_at))
            for s in found)))
    else:
        print("No webhook subscriptions.")
    return 0


def show(args: argparse.Namespace, session: Session) -> int:
    with connect(args, session) as hooks:
        s = hooks.GetSubscription(pb.GetSubscriptionRequest(subscription_id=args.id))
        recent = hooks.ListAttempts(pb.ListAttemptsRequest(subscription_id=args.id, page_size=20)).attempts
    if args.json:
        print_json({"subscription": as_json(s), "recent_attempts": [as_json(a) for a in recent]})
        return 0
    print(subscription_details(s))
    print("\nLatest attempts")
    print(table(ATTEMPT_HEADERS, (attempt_row(a) for a in recent)) if recent else "  none yet")
    waiting = waiting_note(s)
    if waiting and any(a.HasField("next_attempt_at") for a in recent):
        print(f"\n{waiting}")
    return 0


def update(args: argparse.Namespace, session: Session) -> int:
    request = pb.UpdateSubscriptionRequest(subscription_id=args.id)
    with connect(args, session) as hooks:
        if args.types is not None or args.add_types or args.remove_types:
            types = list(args.types) if args.types is not None else None
            if types is None:
                types = list(hooks.GetSubscription(pb.GetSubscriptionRequest(subscription_id=args.id)).activity_types)
            types = [t for t in types if t not in args.remove_types] + [t for t in args.add_types if t not in types]
            if not types:
                raise CliError("a subscription needs at least one activity type")
            request.activity_types.extend(types)
            request.update_mask.append("activity_types")
        for option in ("url", "description", "filter"):
            if getattr(args, option) is not None:
                setattr(request, option, getattr(args, option))
                request.update_mask.append(option)
        if args.scheme is not None:
            request.signature_scheme = SCHEMES[args.scheme]
            request.update_mask.append("signature_scheme")
        headers = custom_headers(args)
        if headers and args.clear_headers:
            raise CliError("--clear-headers removes every custom header: give it alone, or --header/--secret-header "
                           "for the new set")
        if headers or args.clear_headers:
            request.custom_headers.extend(headers)
            request.update_mask.append("custom_headers")
        upload = client_certificate(args)
        if upload is not None and args.remove_client_cert:
            raise CliError("--remove-client-cert cannot go with --client-cert/--client-key")
        if upload is not None or args.remove_client_cert:
            if upload is not None:
                request.client_certificate.CopyFrom(upload)
            request.update_mask.append("client_certificate")
        if not request.update_mask:
            raise CliError("nothing to update: give --url, --types, --add-type, --remove-type, --description, --scheme, "
                           "--filter, --header, --secret-header, --clear-headers, --client-cert/--client-key or --remove-client-cert")
        s = hooks.UpdateSubscription(request)
    _print_subscription(args, s, f"Updated webhook subscription {s.id} ({', '.join(request.update_mask)}); "
                                 "it applies from the next event.")
    return 0


def pause(args: argparse.Namespace, session: Session) -> int:
    with connect(args, session) as hooks:
        s = hooks.PauseSubscription(pb.PauseSubscriptionRequest(subscription_id=args.id))
    _print_subscription(args, s, f"Paused webhook subscription {s.id}: it receives no deliveries.")
    return 0


def resume(args: argparse.Namespace, session: Session) -> int:
    with connect(args, session) as hooks:
        # Resuming what is not paused changes nothing; the answer alone cannot tell, so read first.
        before = hooks.GetSubscription(pb.GetSubscriptionRequest(subscription_id=args.id))
        s = hooks.ResumeSubscription(pb.ResumeSubscriptionRequest(subscription_id=args.id))
    resumed = before.status == pb.SUBSCRIPTION_STATUS_PAUSED and s.status != pb.SUBSCRIPTION_STATUS_PAUSED
    if args.json:
        print_json({"subscription": as_json(s), "resumed": resumed})
        return 0
    waiting = waiting_note(s)
    if resumed:
        print(f"Resumed webhook subscription {s.id}. {waiting}" if waiting
              else f"Resumed webhook subscription {s.id}: it receives deliveries again.")
    else:
        print(f"Webhook subscription {s.id} was not paused; nothing changed. {waiting or 'It is Active and receives deliveries.'}")
    print(subscription_details(s))
    return 0


def delete(args: argparse.Namespace, session: Session) -> int:
    if not args.yes and not args.json and sys.stdin.isatty():
        try:
            answer = input(f"Delete webhook subscription {args.id}? Pending deliveries are cancelled. [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("Not deleted.")
            return 1
    with connect(args, session) as hooks:
        response = hooks.DeleteSubscription(pb.DeleteSubscriptionRequest(subscription_id=args.id))
    if args.json:
        print_json(as_json(response))
    else:
        print(f"Deleted webhook subscription {args.id}; {plural(response.cancelled_deliveries, 'pending delivery', 'pending deliveries')} cancelled.")
    return 0


def send_test(args: argparse.Namespace, session: Session) -> int:
    with connect(args, session) as hooks:
        response = hooks.SendTestDelivery(pb.SendTestDeliveryRequest(subscription_id=args.id))
    a = response.attempt
    if args.json:
        print_json({"delivery": as_json(response.delivery), "attempt": as_json(a), "subscription": as_json(response.subscription)})
    elif a.succeeded:
        print(f"Test delivery {a.event_id} succeeded: HTTP {a.status_code} in {a.duration_ms:.0f} ms. "
              f"Subscription is {status_label(response.subscription)}.")
    else:
        answer = f"HTTP {a.status_code}" if a.status_code else a.error_detail
        print(f"Test delivery {a.event_id} failed: {answer} ({a.duration_ms:.0f} ms).")
        if a.response_body:
            print(f"Response: {a.response_body[:500]}")
    return 0 if a.succeeded else 1


def overlap_seconds(text: str) -> int:
    """--overlap: seconds, or a number with s, m, h or d."""
    match = re.fullmatch(r"\s*(\d{1,9})\s*([smhd]?)\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: give it like 90s, 30m, 24h or 7d")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def regenerate_secret(args: argparse.Namespace, session: Session) -> int:
    with connect(args, session) as hooks:
        response = hooks.RegenerateSecret(pb.RegenerateSecretRequest(subscription_id=args.id,
                                                                     overlap_seconds=args.overlap))
    s = response.subscription
    if s.HasField("previous_secret_expires_at"):
        headline = (f"New signing secret for {s.id}; the previous secret signs too until "
                    f"{timestamp(s.previous_secret_expires_at)} (both signatures in webhook-signature).")
    else:
        headline = f"New signing secret for {s.id}; the previous secret no longer signs anything."
    _print_secret(args, s, response.signing_secret, headline)
    return 0


def deliveries(args: argparse.Namespace, session: Session) -> int:
    if args.filtered:
        return filtered_deliveries(args, session)
    if args.attempt:
        return show_attempt(args, session)
    outcome = pb.OUTCOME_SUCCEEDED if args.succeeded else pb.OUTCOME_FAILED if args.failed else pb.OUTCOME_UNSPECIFIED
    with connect(args, session) as hooks:
        found = hooks.ListAttempts(pb.ListAttemptsRequest(subscription_id=args.id, outcome=outcome, event_id=args.event,
                                                          page_size=min(args.limit or 50, 500))).attempts
        # A retry goes at NEXT ATTEMPT only while the subscription delivers: say when it does not.
        retries = not args.json and any(a.HasField("next_attempt_at") for a in found)
        waiting = waiting_note(hooks.GetSubscription(pb.GetSubscriptionRequest(subscription_id=args.id))) if retries else ""
    if args.json:
        print_json({"attempts": [as_json(a) for a in found]})
    elif found:
        print(table(ATTEMPT_HEADERS, (attempt_row(a) for a in found)))
        if waiting:
            print(f"\n{waiting}")
    else:
        print("No delivery attempts.")
    return 0


def filtered_deliveries(args: argparse.Namespace, session: Session) -> int:
    """The events the subscription's filter did not pass: deliveries without attempts."""
    with connect(args, session) as hooks:
        found = hooks.ListDeliveries(pb.ListDeliveriesRequest(subscription_id=args.id, outcome=pb.OUTCOME_FILTERED,
                                                              event_id=args.event, page_size=min(args.limit or 50, 500))).deliveries
    if args.json:
        print_json({"deliveries": [as_json(d) for d in found]})
    elif found:
        print(table(("WHEN", "EVENT", "TYPE", "STATUS", "WHY", "DELIVERY"), (
            (timestamp(d.created_at), d.event_id, d.event_type, "Filtered", d.last_error_detail, d.id) for d in found)))
    else:
        print("No filtered events.")
    return 0


def _printable(text: str) -> str:
    """A receiver's text for a terminal: control characters (escape sequences) shown as \\xNN."""
    return "".join(c if c.isprintable() or c in "\n\t" else f"\\x{ord(c):02x}" for c in text)


def attempt_exchange_text(a: pb.Attempt) -> str:
    """What one attempt sent and what came back, for a terminal."""
    lines = [fields([("Attempt", a.id), ("Delivery", a.delivery_id), ("Event", f"{a.event_id} ({a.event_type})"),
                     ("When", timestamp(a.attempted_at)), ("URL", a.url), ("Attempt number", attempt_row(a)[3]),
                     ("Status", str(a.status_code) if a.status_code else "- (no HTTP answer)"),
                     ("Error", attempt_row(a)[6] or "-"), ("Duration", f"{a.duration_ms:.0f} ms")])]
    if not a.HasField("exchange"):
        lines.append("\nThe headers sent and the answer were not recorded for this attempt "
                     "(TRELLIS_WEBHOOKS_RECORD_ATTEMPT_DETAILS is off, or it was made before they were).")
        if a.response_body:
            lines.append(f"\nResponse body (first 2 KB)\n{_printable(a.response_body)}")
        return "\n".join(lines)
    e = a.exchange
    lines.append("\nRequest headers sent")
    lines.append(fields(((h.name + ":", _printable(h.value)) for h in e.request_headers), indent="  "))
    lines.append("\nResponse headers")
    lines.append(fields(((h.name + ":", _printable(h.value)) for h in e.response_headers), indent="  ")
                 if e.response_headers else "  none (no HTTP answer)")
    if e.headers_omitted:
        lines.append(f"  ({plural(e.headers_omitted, 'header')} left out: over the count or size bound)")
    cut = ", cut at 4 KiB" if e.response_body_truncated else ""
    lines.append(f"\nResponse body{cut}")
    lines.append(_printable(e.response_body) if e.response_body else "  (empty)")
    lines.append("\nSecrets (the signing secret, custom header values) are shown as [masked].")
    return "\n".join(lines)


def show_attempt(args: argparse.Namespace, session: Session) -> int:
    with connect(args, session) as hooks:
        a = hooks.GetAttempt(pb.GetAttemptRequest(attempt_id=args.attempt))
    if a.subscription_id != args.id:
        raise CliError(f"attempt {args.attempt} is not one of subscription {args.id}'s (it is {a.subscription_id}'s)")
    if args.json:
        print_json({"attempt": as_json(a)})
    else:
        print(attempt_exchange_text(a))
    return 0


def redeliver(args: argparse.Namespace, session: Session) -> int:
    with connect(args, session) as hooks:
        d = hooks.Redeliver(pb.RedeliverRequest(delivery_id=args.delivery_id))
    if args.json:
        print_json({"delivery": as_json(d)})
    else:
        print(f"Delivery {d.id} of event {d.event_id} is scheduled again (round {d.round}).")
    return 0


def publish(args: argparse.Namespace, session: Session) -> int:
    try:
        json.loads(args.data)
    except ValueError as exc:
        raise CliError(f"--data is not valid JSON: {exc}") from None
    with connect(args, session) as hooks:
        response = hooks.PublishActivity(pb.PublishActivityRequest(type=args.type, data_json=args.data, event_id=args.event_id))
    if args.json:
        print_json(as_json(response))
    elif response.duplicate:
        print(f"Activity {response.event_id} was already received; nothing more is sent.")
    else:
        filtered = f"; {response.filtered} filtered out" if response.filtered else ""
        print(f"Published {args.type} activity {response.event_id}: "
              f"{plural(response.deliveries, 'delivery', 'deliveries')} scheduled{filtered}.")
    return 0


def list_activities(args: argparse.Namespace, session: Session) -> int:
    with connect(args, session) as hooks:
        found = hooks.ListActivities(pb.ListActivitiesRequest(types=args.types, page_size=min(args.limit or 50, 500))).activities
    if args.json:
        print_json({"activities": [as_json(a) for a in found]})
    elif found:
        print(table(("WHEN", "EVENT", "TYPE", "SENDER", "DATA"), (
            (timestamp(a.occurred_at), a.event_id, a.type, f"{a.sender_type}:{a.sender_id}", a.data_json[:60]) for a in found)))
    else:
        print("No activities.")
    return 0


def activity_types(args: argparse.Namespace, session: Session) -> int:
    with connect(args, session) as hooks:
        found = hooks.ListActivityTypes(pb.ListActivityTypesRequest()).types
    if args.json:
        types = [as_json(t) for t in found]
        for shown, t in zip(types, found, strict=True):
            shown.pop("schema_json", None)
            if args.schema:
                shown["schema"] = json.loads(t.schema_json)
        print_json({"types": types})
    elif args.schema:
        for t in found:
            print(f"{t.id}  ({t.name}, {t.category})")
            print(json.dumps(json.loads(t.schema_json), indent=2))
            print()
    else:
        print(table(("TYPE", "NAME", "CATEGORY"), ((t.id, t.name, t.category) for t in found)))
        print("\n*  all current and future types; `--schema` shows the JSON Schema of each type's data")
    return 0


# --- recovery and retention -------------------------------------------------------------------------

RECOVERY_POLL_SECONDS = 0.5


def _recovery_line(r: pb.Recovery) -> str:
    return (f"Recovery {r.id} of {r.subscription_id}: {r.done:,} of {plural(r.queued, 'delivery', 'deliveries')} done "
            f"({r.succeeded:,} succeeded, {r.failed:,} failed again).")


def recover(args: argparse.Namespace, session: Session) -> int:
    with connect(args, session) as hooks:
        r = hooks.StartRecovery(pb.StartRecoveryRequest(subscription_id=args.id, since=timestamp_or_none(args.since),
                                                        until=timestamp_or_none(args.until)))
        if r.queued and not args.no_wait and not r.waiting_for:
            progress = Progress(sys.stderr, "deliveries")
            try:
                while r.done < r.queued and not r.waiting_for:
                    progress.update(r.done, r.queued)
                    time.sleep(RECOVERY_POLL_SECONDS)
                    r = hooks.GetRecovery(pb.GetRecoveryRequest(recovery_id=r.id))
                progress.update(r.done, r.queued)
            finally:
                progress.close()
    if args.json:
        print_json({"recovery": as_json(r)})
        return 0
    if r.queued == 0:
        print(f"Recovery {r.id}: no failed delivery of {r.subscription_id} in that range; nothing sent again.")
    elif args.no_wait and r.done < r.queued:
        print(f"Recovery {r.id}: {plural(r.queued, 'failed delivery', 'failed deliveries')} queued again. "
              f"Follow it with `trellis webhooks recovery {r.id}`.")
    else:
        print(_recovery_line(r))
    if r.waiting_for:
        print(f"They wait: {r.waiting_for}. Follow it with `trellis webhooks recovery {r.id}`.")
    return 0


def show_recovery(args: argparse.Namespace, session: Session) -> int:
    with connect(args, session) as hooks:
        r = hooks.GetRecovery(pb.GetRecoveryRequest(recovery_id=args.recovery_id))
    if args.json:
        print_json({"recovery": as_json(r)})
        return 0
    print(_recovery_line(r))
    print(fields([("Events that arrived", f"{timestamp(r.since)} .. {timestamp(r.until)}"),
                  ("Started", f"{timestamp(r.created_at)} by {r.created_by}")]))
    if r.waiting_for:
        print(f"\nThe rest wait: {r.waiting_for}.")
    return 0


def list_recoveries(args: argparse.Namespace, session: Session) -> int:
    with connect(args, session) as hooks:
        found = hooks.ListRecoveries(pb.ListRecoveriesRequest(subscription_id=args.id,
                                                              page_size=min(args.limit or 50, 500))).recoveries
    if args.json:
        print_json({"recoveries": [as_json(r) for r in found]})
    elif found:
        print(table(("STARTED", "RECOVERY", "SUBSCRIPTION", "EVENTS THAT ARRIVED", "QUEUED", "DONE", "SUCCEEDED",
                     "FAILED", "WAITING FOR"), (
            (timestamp(r.created_at), r.id, r.subscription_id, f"{timestamp(r.since)} .. {timestamp(r.until)}",
             f"{r.queued:,}", f"{r.done:,}", f"{r.succeeded:,}", f"{r.failed:,}", r.waiting_for or "-") for r in found)))
    else:
        print("No recoveries." if not args.id else f"No recoveries of {args.id}.")
    return 0


def _print_retention(args: argparse.Namespace, r: pb.Retention) -> None:
    if args.json:
        print_json({"retention": message_dict(r)})
    elif r.overridden:
        print(f"Deliveries, attempts and activities are kept {r.days} days (this organisation's setting; "
              f"the default is {r.default_days}).")
    else:
        print(f"Deliveries, attempts and activities are kept {r.days} days (the default).")


def show_retention(args: argparse.Namespace, session: Session) -> int:
    with connect(args, session) as hooks:
        _print_retention(args, hooks.GetRetention(pb.GetRetentionRequest()))
    return 0


def set_retention(args: argparse.Namespace, session: Session) -> int:
    with connect(args, session) as hooks:
        _print_retention(args, hooks.SetRetention(pb.SetRetentionRequest(days=args.days)))
    return 0
