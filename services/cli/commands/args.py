"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


class ExtendList(argparse.Action):
    """Collects values given repeatedly, space separated or as comma lists, in order, once each:
    `--scope a:read,b:read --scope c:write` and `--scope a:read b:read c:write` are the same."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("nargs", "+")
        kwargs.setdefault("default", [])
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        current = list(getattr(namespace, self.dest, None) or [])
        for value in values if isinstance(values, list) else [values]:
            for item in str(value).split(","):
                item = item.strip()
                if item and item not in current:
                    current.append(item)
        setattr(namespace, self.dest, current)


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return value


def help_handler(parser: argparse.ArgumentParser) -> Any:
    """The handler of a command group given no command: print the group's help, exit 2."""

    def handler(args: argparse.Namespace, session: object) -> int:
        parser.print_help()
        return 2

    return handler
