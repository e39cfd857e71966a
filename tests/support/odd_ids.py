"""Ids that are not ours, as a fuzzer or a mistyped command sends them, and the check every
service must pass with each: a clean refusal (NOT_FOUND or INVALID_ARGUMENT), never a server
error (INTERNAL, UNKNOWN) nor a status gRPC itself made up because the answer could not be sent
(`Invalid metadata`, `received metadata size exceeds ...`)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
import pytest

# label -> the id, with `{p}` standing for the id's usual prefix (`int`, `whk`, `dlv`, ...).
ODD_IDS: dict[str, str] = {
    "non_ascii": "{p}_é",
    "only_non_ascii": "é",
    "emoji": "{p}_\U0001F600",
    "nul": "{p}_a\x00b",
    "space": "{p}_ with space",
    "line_break": "{p}_a\r\nb",
    "control": "{p}_\x1b[31m",
    "percent_encoded": "{p}_%C3%A9",
    "absurdly_long": "{p}_" + "x" * 100_000,
    "long_non_ascii": "{p}_" + "é" * 20_000,
}
CLEAN = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT})


def expected(odd: str) -> frozenset[grpc.StatusCode]:
    """NUL is refused as INVALID_ARGUMENT at the door (PostgreSQL cannot store it); an id longer
    than any of ours may be refused for its length; any other id that is not ours names nothing:
    NOT_FOUND."""
    if "\x00" in odd:
        return frozenset({grpc.StatusCode.INVALID_ARGUMENT})
    if len(odd) > 200:
        return CLEAN
    return frozenset({grpc.StatusCode.NOT_FOUND})


def odd_ids(prefix: str) -> dict[str, str]:
    """label -> odd id, with the id's usual prefix."""
    return {label: value.format(p=prefix) for label, value in ODD_IDS.items()}


async def refusal(call: Awaitable[Any], allowed: frozenset[grpc.StatusCode] = CLEAN, what: str = "") -> grpc.aio.AioRpcError:
    """The call's refusal, checked to be one of `allowed` with a message of sendable size."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    assert error.code() in allowed, (what, error.code(), (error.details() or "")[:300])
    assert len(error.details() or "") <= 2048, "a refusal's message stays short, whatever the id"
    return error


async def answered_or_refused(call: Awaitable[Any], allowed: frozenset[grpc.StatusCode] = CLEAN, what: str = "") -> Any:
    """The call's answer, or None when it was refused with one of `allowed` (and a short message)."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        assert error.code() in allowed, (what, error.code(), (error.details() or "")[:300])
        assert len(error.details() or "") <= 2048, "a refusal's message stays short, whatever the input"
        return None
