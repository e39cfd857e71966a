"""Operator commands: `trellis up`, `trellis migrate`, `trellis keys rotate`.

The launcher and the database code (SQLAlchemy, Alembic) are imported by the commands that
use them, so that every other command starts without them (docs/benchmarks.md, CLI start).
"""

from __future__ import annotations

import argparse

from services.cli.client import CliError, Session
from services.cli.commands.args import help_handler
from services.cli.output import print_json


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("up", parents=[common], help="run the whole suite on this machine (embedded mode)")
    p.add_argument("--replicas", type=int, default=1, metavar="N",
                   help="processes per service (replica k listens on the service's port + 100*k)")
    p.add_argument("--nats-port", type=int, default=None, metavar="PORT",
                   help="nats-server port (default: the port of TRELLIS_NATS_URL, 4222)")
    p.add_argument("--no-example-upstream", dest="example_upstream", action="store_false",
                   help="do not start the example upstream of the tour (examples/upstream, not part of Trellis)")
    p.set_defaults(handler=up)

    p = subparsers.add_parser("migrate", parents=[common], help="apply database migrations")
    p.add_argument("services", nargs="*", metavar="SERVICE",
                   help="default: every service that has migrations")
    p.set_defaults(handler=migrate_databases)

    keys = subparsers.add_parser("keys", help="signing keys of partner access tokens")
    commands = keys.add_subparsers(title="commands", metavar="COMMAND")
    keys.set_defaults(handler=help_handler(keys))
    p = commands.add_parser("rotate", parents=[common], help="make a new current signing key; the previous one stays in the JWKS")
    p.set_defaults(handler=rotate_keys)


def up(args: argparse.Namespace, session: Session) -> int:
    from services.cli import launcher

    if not 1 <= args.replicas <= 9:
        raise CliError("--replicas must be between 1 and 9")
    return launcher.Launcher(session.settings, replicas=args.replicas, nats_port=args.nats_port,
                             example_upstream=args.example_upstream).run()


def migrate_databases(args: argparse.Namespace, session: Session) -> int:
    from services.cli import launcher
    from services.kit.db import migrate

    known = launcher.services_with_migrations()
    unknown = [s for s in args.services if s not in known]
    if unknown:
        raise CliError(f"no migrations for {', '.join(unknown)}; services with migrations: {', '.join(known)}")
    for name in args.services or known:
        try:
            url = session.settings.database_url(name)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        try:
            migrate(name, url)
        except Exception as exc:  # noqa: BLE001 - one line for the operator, not a traceback
            raise CliError(f"{name}: migration failed on {launcher.describe_database(url)}: {exc}") from None
        print(f"{name}: migrated {launcher.describe_database(url)}")
    return 0


def rotate_keys(args: argparse.Namespace, session: Session) -> int:
    from services.contracts.trellis.identity.v1 import identity_pb2

    response = session.identity.RotateSigningKey(identity_pb2.RotateSigningKeyRequest())
    if args.json:
        print_json({"kid": response.kid, "previous_kid": response.previous_kid})
    else:
        print(f"New signing key {response.kid} now signs access tokens.")
        if response.previous_kid:
            print(f"The previous key {response.previous_kid} stays in the JWKS, so tokens it signed verify until they expire.")
    return 0
