"""The one set of protobuf time helpers: aware UTC datetimes, unset as None or "", and a time no
datetime holds refused as a caller's mistake."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.kit import errors
from services.kit.prototime import (
    InvalidTime,
    field_datetime,
    is_unset,
    now_timestamp,
    rfc3339,
    timestamp,
    timestamp_or_none,
    to_datetime,
)

WHEN = dt.datetime(2025, 1, 31, 12, 30, 15, 123456, tzinfo=dt.timezone.utc)


def test_a_datetime_round_trips_aware_in_utc_and_naive_counts_as_utc() -> None:
    assert to_datetime(timestamp(WHEN)) == WHEN
    assert to_datetime(timestamp(WHEN.replace(tzinfo=None))) == WHEN
    paris = WHEN.astimezone(dt.timezone(dt.timedelta(hours=1)))
    assert to_datetime(timestamp(paris)) == WHEN and to_datetime(timestamp(paris)).tzinfo is dt.timezone.utc


def test_no_time_is_an_unset_field_and_empty_text() -> None:
    assert timestamp_or_none(None) is None
    assert field_datetime(pb.PublishActivityRequest(), "occurred_at") is None
    assert field_datetime(pb.PublishActivityRequest(occurred_at=timestamp(WHEN)), "occurred_at") == WHEN
    assert is_unset(Timestamp()) and not is_unset(now_timestamp())
    assert rfc3339(Timestamp()) == ""


def test_text_is_rfc3339_in_utc_with_z() -> None:
    assert rfc3339(timestamp(WHEN)) == "2025-01-31T12:30:15Z"
    assert rfc3339(timestamp(WHEN), "milliseconds") == "2025-01-31T12:30:15.123Z"


@pytest.mark.parametrize("ts", [Timestamp(seconds=10**15), Timestamp(seconds=-10**15), Timestamp(seconds=1, nanos=-1)])
def test_a_time_no_datetime_holds_is_invalid_argument_and_a_value_error(ts: Timestamp) -> None:
    with pytest.raises(InvalidTime) as refused:
        field_datetime(pb.PublishActivityRequest(occurred_at=ts), "occurred_at")
    assert isinstance(refused.value, errors.InvalidArgument) and isinstance(refused.value, ValueError)
    assert refused.value.fields == {"field": "occurred_at"}
