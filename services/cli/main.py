"""The `trellis` command line: administration of integrations, and `trellis up`.

Global options may come before or after the command (`trellis --json vendors` and
`trellis vendors --json` are the same). Errors print as one line, `error: …`, exit code 1; a bad
setting (a TRELLIS_* variable or an address option), one line per setting, exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from services.cli.client import CliError, CliSettings, Session
from services.cli.commands import catalog, integrations, operations, webhooks
from services.cli.commands import audit, logs, review
from services.kit.settingcheck import EXIT_BAD_SETTINGS, InvalidSettings, SettingError
from services.kit.settings import load_settings

DEFAULT_ACTOR = "admin"
DEFAULT_ORG = "org_default"

EPILOG = """\
examples:
  trellis up                                   start everything on this machine (.trellis/)
  trellis vendors
  trellis --actor alice integrations create --vendor sap --name "SAP Procurement Sync" \\
      --description "Purchase orders into SAP" --owner alice --scope inventory:read,orders:write
  trellis --actor bob integrations approve <id>
  trellis --actor bob integrations activate <id> --handoff partner-handoff.json

Settings come from TRELLIS_* environment variables (TRELLIS_REGISTRY_ADDR, TRELLIS_IDENTITY_ADDR,
TRELLIS_MODE, ...). In the embedded mode the CLI signs actor tokens with the data directory's
local key; otherwise it sends TRELLIS_ACTOR_TOKEN.
"""


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The options every command takes; `suppress` leaves them unset unless given (subcommands)."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("global options")
    group.add_argument("--data-dir", type=Path, default=default(None), metavar="DIR",
                        help="data directory of the embedded mode (default: TRELLIS_DATA_DIR or .trellis)")
    group.add_argument("--actor", default=default(os.environ.get("TRELLIS_ACTOR", DEFAULT_ACTOR)), metavar="USER",
                        help="user id the embedded mode acts as (default: TRELLIS_ACTOR or admin)")
    group.add_argument("--org", default=default(os.environ.get("TRELLIS_ORG", DEFAULT_ORG)), metavar="ORG",
                        help="organisation id the embedded mode acts in (default: TRELLIS_ORG or org_default)")
    group.add_argument("--json", action="store_true", default=default(False), help="machine-readable JSON output")
    group.add_argument("--registry-addr", default=default(None), metavar="HOST:PORT", help="default: TRELLIS_REGISTRY_ADDR")
    group.add_argument("--identity-addr", default=default(None), metavar="HOST:PORT", help="default: TRELLIS_IDENTITY_ADDR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trellis", description="Trellis: connect external systems to an organisation's data, safely.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, suppress=True)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    integrations.register(subparsers, common)
    catalog.register(subparsers, common)
    operations.register(subparsers, common)
    webhooks.register(subparsers, common)
    logs.register(subparsers, common)
    audit.register(subparsers, common)
    review.register(subparsers, common)
    return parser


# The options that override a setting, named so in a bad setting's line.
OPTION_NAMES = {"data_dir": "--data-dir", "registry_addr": "--registry-addr", "identity_addr": "--identity-addr"}


def settings_from(args: argparse.Namespace) -> CliSettings:
    """Settings from the environment, with the command line's overrides."""
    overrides = {
        key: value
        for key, value in (("data_dir", args.data_dir), ("registry_addr", args.registry_addr),
                           ("identity_addr", args.identity_addr))
        if value is not None
    }
    return load_settings(CliSettings, labels=OPTION_NAMES, **overrides)


def run(argv: Sequence[str] | None = None) -> int:
    """Parse, run one command, and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        settings = settings_from(args)
    except InvalidSettings as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    session = Session(settings, actor=args.actor, org=args.org)
    try:
        return int(handler(args, session) or 0)
    except SettingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`trellis … | head`): silence the flush at exit too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        session.close()


def main() -> None:
    sys.exit(run())
