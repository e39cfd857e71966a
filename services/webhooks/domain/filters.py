"""A subscription's filter: a JMESPath expression (https://jmespath.org, the `jmespath` package)
over the delivery's JSON document (`id`, `type`, `created_at`, `organisation_id`, `sender`,
`data`); an event is delivered when the result is true by JMESPath's rule: anything but
`false`, `null`, `""`, `[]` and `{}` (so `0` is true).

Why an evaluation takes a bounded time. JMESPath has no loops, recursion or user functions:
every node of the expression is evaluated once per value its parent hands it, and the values a
projection hands on are parts of the document, so without copying constructs the work is at
most (nodes of the expression) x (size of the document). Two things bound those factors:

- the expression is at most MAX_FILTER_LENGTH characters, so it has at most that many nodes;
- the only constructs that make a value larger than their input are multi-selects
  (`[a, b]`, `{x: a, y: b}`) and the functions over them, and chaining them through pipes or
  projections multiplies their sizes (`[@, @] | [@, @] | …` doubles each time). `growth` is an
  upper bound, computed from the expression alone, on how much larger than the document any
  value it builds can be; a filter whose bound exceeds MAX_GROWTH is refused when saved.

The document is bounded by the transport it came on (one NATS message, or one gRPC request).
So a filter's time is linear in the event's size with a constant fixed when it is saved.
An expression that fails on an event (a function given the wrong type, say) does not pass it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

from services.kit.errors import InvalidArgument

MAX_FILTER_LENGTH = 1024
MAX_GROWTH = 16
MAX_DETAIL = 300  # of a failed evaluation's message, which may quote the event

# Node types whose value is a part of their input (or a scalar), whatever their children build.
_SCALAR = frozenset({"comparator", "not_expression", "literal", "current", "identity", "field", "index", "slice"})


def growth(node: Mapping[str, Any]) -> float:
    """An upper bound on (size of the value the node builds) / (size of its input)."""
    kind = node.get("type")
    children: list[Mapping[str, Any]] = [c for c in node.get("children", ()) if isinstance(c, Mapping)]
    sizes = [growth(c) for c in children]
    if kind in _SCALAR:
        return 1.0
    if kind in ("multi_select_list", "multi_select_dict", "function_expression"):
        # A new value holding each child's: their sizes add up. An expression reference (map,
        # sort_by, …) is applied per element, so it multiplies what the others hand it.
        direct = [g for c, g in zip(children, sizes, strict=True) if c.get("type") != "expref"]
        per_element = [g for c, g in zip(children, sizes, strict=True) if c.get("type") == "expref"]
        return max(1.0, sum(direct)) * math.prod(per_element)
    if kind in ("or_expression", "and_expression"):
        return max(sizes, default=1.0)
    # subexpression, pipe, index_expression, projections, flatten, key_val_pair, expref and
    # anything newer: the right side works on what the left built, per element: sizes multiply.
    return max(1.0, math.prod(sizes))


@functools.lru_cache(maxsize=4096)
def compiled(expression: str) -> ParsedResult:
    """The parsed expression (cached: every subscription with this filter shares it)."""
    return jmespath.compile(expression)


def check_filter(expression: str) -> str:
    """A filter as saved ("" for none): it compiles, and is within the length and growth bounds."""
    expression = expression.strip()
    if not expression:
        return ""
    if len(expression) > MAX_FILTER_LENGTH:
        raise InvalidArgument(f"the filter is longer than {MAX_FILTER_LENGTH} characters", field="filter")
    try:
        parsed = compiled(expression)
    except JMESPathError as exc:
        detail = " ".join(str(exc).split())
        raise InvalidArgument(f"the filter is not a valid JMESPath expression: {detail}", field="filter") from exc
    bound = growth(parsed.parsed)
    if bound > MAX_GROWTH:
        raise InvalidArgument(
            f"the filter builds values up to {bound:g} times the size of an event (at most {MAX_GROWTH}): "
            "select fewer fields in its multi-selects, or chain fewer of them", field="filter",
        )
    return expression


def is_true(value: object) -> bool:
    """JMESPath's truthiness: false, null, "", [] and {} are false; everything else (0 too) is true."""
    return not (value is None or value is False or value == "" or value == [] or value == {})


def verdict(expression: str, document: object) -> tuple[bool, str]:
    """(passes, why not) for one event; a saved filter always compiles."""
    try:
        result = compiled(expression).search(document)
    except JMESPathError as exc:
        detail = " ".join(str(exc).split())
        return False, f"the filter failed on this event: {detail[:MAX_DETAIL]}"
    if is_true(result):
        return True, ""
    return False, "the event did not pass the subscription's filter"
