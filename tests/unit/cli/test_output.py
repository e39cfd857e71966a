import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp

from services.cli.output import (
    credentials_block, integration_details, message_dict, plural, status_label, status_value, table, timestamp,
)
from services.contracts.trellis.identity.v1 import identity_pb2
from services.contracts.trellis.registry.v1 import registry_pb2 as pb


def _ts(year: int = 2026) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt.datetime(year, 4, 1, 12, 30, 5, tzinfo=dt.timezone.utc))
    return ts


def test_table_aligns_columns_to_the_widest_cell() -> None:
    text = table(("ID", "NAME"), [("int_1", "SAP"), ("int_22", "A longer name")])
    lines = text.splitlines()
    assert lines == ["ID      NAME", "int_1   SAP", "int_22  A longer name"]


def test_table_with_no_rows_prints_the_header() -> None:
    assert table(("A", "B"), []) == "A  B"


def test_status_names_round_trip_in_the_specs_wording() -> None:
    assert status_label(pb.INTEGRATION_STATUS_ACTIVE) == "Active"
    assert status_label(pb.INTEGRATION_STATUS_UNSPECIFIED) == "-"
    assert status_value("Suspended") == pb.INTEGRATION_STATUS_SUSPENDED


def test_unknown_status_names_the_choices() -> None:
    try:
        status_value("paused")
    except ValueError as exc:
        assert "requested, approved, active, suspended, revoked" in str(exc)
    else:
        raise AssertionError("an unknown status was accepted")


def test_timestamps_print_as_utc_iso_and_unset_ones_as_empty() -> None:
    assert timestamp(_ts()) == "2026-04-01T12:30:05Z"
    assert timestamp(Timestamp()) == ""


def test_json_uses_proto_names_numbers_and_short_statuses() -> None:
    integration = pb.Integration(id="int_1", status=pb.INTEGRATION_STATUS_SUSPENDED, daily_quota=5000,
                                 version=3, scopes=["crm:read"], created_at=_ts())
    data = message_dict(integration)
    assert data["status"] == "suspended"
    assert data["daily_quota"] == 5000 and data["version"] == 3
    assert data["scopes"] == ["crm:read"] and data["ip_allowlist"] == []
    assert data["created_at"] == "2026-04-01T12:30:05Z"
    entry = message_dict(pb.HistoryEntry(from_status=pb.INTEGRATION_STATUS_ACTIVE, to_status=pb.INTEGRATION_STATUS_REVOKED))
    assert (entry["from_status"], entry["to_status"]) == ("active", "revoked")


def test_details_mark_sensitive_scopes_and_show_only_the_key_prefix() -> None:
    integration = pb.Integration(id="int_1", name="CRM sync", status=pb.INTEGRATION_STATUS_ACTIVE,
                                 scopes=["crm:read", "inventory:read"], sensitive_scopes=["crm:read"],
                                 api_key_prefix="grq_live_abcdefg", rate_limit_per_minute=60)
    text = integration_details(integration)
    assert "crm:read (sensitive), inventory:read" in text
    assert "grq_live_abcdefg" in text
    assert "all IPs allowed" in text


def test_credentials_block_lists_every_credential() -> None:
    creds = identity_pb2.Credentials(api_key="grq_live_SECRET", client_id="cid", client_secret="csecret",
                                     token_url="http://t/oauth/token", issuer="http://t", scopes=["a:read"])
    text = credentials_block(creds)
    for value in ("grq_live_SECRET", "cid", "csecret", "http://t/oauth/token", "a:read"):
        assert value in text


def test_counts_are_written_in_the_singular_for_one() -> None:
    assert plural(1, "integration") == "1 integration"
    assert plural(0, "integration") == "0 integrations"
    assert plural(1, "entry", "entries") == "1 entry" and plural(12_345, "entry", "entries") == "12,345 entries"
