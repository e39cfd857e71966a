"""`trellis vendors` and `trellis scopes`: the registry's catalogues."""

from __future__ import annotations

import argparse

from services.cli.client import Session
from services.cli.output import message_dict, print_json, table
from services.contracts.trellis.registry.v1 import registry_pb2 as pb


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("vendors", parents=[common], help="vendors an integration can be created for")
    p.set_defaults(handler=vendors)
    p = subparsers.add_parser("scopes", parents=[common], help="scope categories, their actions and sensitivity")
    p.set_defaults(handler=scopes)


def vendors(args: argparse.Namespace, session: Session) -> int:
    found = session.registry.ListVendors(pb.ListVendorsRequest()).vendors
    if args.json:
        print_json({"vendors": [message_dict(v) for v in found]})
    else:
        print(table(("ID", "VENDOR", "CATEGORY"), ((v.id, v.name, v.category) for v in found)))
    return 0


def scopes(args: argparse.Namespace, session: Session) -> int:
    categories = session.registry.ListScopes(pb.ListScopesRequest()).categories
    if args.json:
        print_json({"categories": [message_dict(c) for c in categories]})
        return 0
    rows = (
        (c.name, " ".join(f"{c.id}:{action}" for action in c.actions), c.sensitivity, c.grants)
        for c in categories
    )
    print(table(("CATEGORY", "SCOPES", "SENSITIVITY", "GRANTS"), rows))
    return 0
