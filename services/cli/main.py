"""The `trellis` command line: administration of integrations, and `trellis up`.

Global options may come before or after the command (`trellis --json vendors` and
`trellis vendors --json` are the same). Errors print as one line, `error: …`, exit code 1; a bad
setting (a TRELLIS_* variable or an address option), one line per setting, exit code 2.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

# What a command needs is imported by run(), after main() has paused the garbage collector.
if TYPE_CHECKING:
    from services.cli.settings import CliSettings

DEFAULT_ACTOR = "admin"
DEFAULT_ORG = "org_default"

EPILOG = """\
examples:
  trellis up                                   start everything on this machine (.trellis/)
  trellis vendors
  trellis --actor alice integrations create --vendor sap --name "SAP Procurement Sync" \\
      --description "Purchase orders into SAP" --owner alice --scope inventory:read,orders:write
  trellis --actor bob integrations approve <id>
  trellis --actor bob integrations activate <id> --handoff
  trellis setup-requests create --prebuilt shopify --field shop_domain=acme.myshopify.com \
      --secret admin_api_access_token

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


# Each command and the module of services.cli.commands that registers it, in the order of
# `trellis --help`. A command line that names one builds only that module's parsers: building
# all of them takes longer than the command itself (docs/benchmarks.md, "CLI").
COMMANDS = {
    "integrations": "integrations", "vendors": "catalog", "scopes": "catalog",
    "up": "operations", "migrate": "operations", "keys": "operations",
    "setup-requests": "setup_requests",
    "webhooks": "webhooks", "activities": "webhooks", "logs": "logs", "audit": "audit", "review": "review",
}


def named_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str | None:
    """The command `argv` names, or None when it asks for help, names none, or uses an option
    this scan does not know exactly (an abbreviation, say): then every command is built."""
    flags: set[str] = set()
    with_value: set[str] = set()
    for action in parser._actions:  # noqa: SLF001 - argparse offers no public list of its options
        (with_value if action.nargs != 0 else flags).update(action.option_strings)
    skip_value = False
    for token in argv:
        if skip_value:
            skip_value = False
        elif token in ("-h", "--help"):
            return None
        elif token in with_value:
            skip_value = True
        elif token.startswith("-"):
            if token not in flags and token.split("=", 1)[0] not in with_value:
                return None
        else:
            return token if token in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; given `argv`, only the command it names (see COMMANDS)."""
    parser = argparse.ArgumentParser(
        prog="trellis", description="Trellis: connect external systems to an organisation's data, safely.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, suppress=True)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    named = named_command(parser, argv) if argv is not None else None
    modules = [COMMANDS[named]] if named else list(dict.fromkeys(COMMANDS.values()))
    for module in modules:
        importlib.import_module(f"services.cli.commands.{module}").register(subparsers, common)
    return parser


# The options that override a setting, named so in a bad setting's line.
OPTION_NAMES = {"data_dir": "--data-dir", "registry_addr": "--registry-addr", "identity_addr": "--identity-addr"}


def settings_from(args: argparse.Namespace) -> CliSettings:
    """Settings from the environment, with the command line's overrides."""
    from services.cli.settings import CliSettings
    from services.kit.settings import load_settings

    overrides = {
        key: value
        for key, value in (("data_dir", args.data_dir), ("registry_addr", args.registry_addr),
                           ("identity_addr", args.identity_addr))
        if value is not None
    }
    return load_settings(CliSettings, labels=OPTION_NAMES, **overrides)


def run(argv: Sequence[str] | None = None, *, loaded: Callable[[], None] = lambda: None) -> int:
    """Parse, run one command, and return its exit code; `loaded()` is called once the command
    is loaded, before it runs."""
    from services.cli.client import CliError, Session
    from services.kit.settingcheck import EXIT_BAD_SETTINGS, InvalidSettings, SettingError

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
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
    loaded()
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
    """The `trellis` console script."""
    # A command's start is mostly imports (docs/benchmarks.md, "CLI"), and the cyclic garbage
    # collector would walk the objects they create again and again, and once more at exit. So it
    # is paused while the command loads; what was loaded is then frozen (gc.freeze: left out of
    # every later collection, as it lives as long as the process anyway) and the collector runs
    # again for the command itself, `trellis up` included.
    gc.disable()
    sys.exit(run(loaded=_collect_again))


def _collect_again() -> None:
    gc.freeze()
    gc.enable()
