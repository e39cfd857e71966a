"""The error map's pure parts: one code per class and back, and text clipped to fit the wire."""

from __future__ import annotations

import inspect

import grpc
import pytest

from services.kit import errors
from services.kit.rpc_errors import CODES, ERRORS, MAX_FIELDS_BYTES, clip, error_info, status_code_for, to_rich_status


def test_every_error_class_has_one_code_and_each_code_one_class() -> None:
    classes = {cls for _, cls in inspect.getmembers(errors, inspect.isclass)
               if issubclass(cls, errors.TrellisError) and cls is not errors.TrellisError}
    assert set(CODES) == classes
    assert len(set(CODES.values())) == len(CODES)
    assert all(ERRORS[code] is cls for cls, code in CODES.items())
    assert ERRORS[grpc.StatusCode.ALREADY_EXISTS] is errors.AlreadyExists
    assert all(CODES[cls].name == cls.code_name for cls in CODES)


def test_a_subclass_takes_its_nearest_mapped_base_and_the_bare_base_is_unknown() -> None:
    class Gone(errors.NotFound):
        pass

    assert status_code_for(Gone("x")) is grpc.StatusCode.NOT_FOUND
    assert status_code_for(errors.TrellisError("x")) is grpc.StatusCode.UNKNOWN


@pytest.mark.parametrize("text", ["x" * 5000, "é" * 5000, "\U0001F600" * 5000, "a" + "é" * 3000 + " not found"])
def test_clipped_text_fits_its_bytes_keeps_both_ends_and_whole_characters(text: str) -> None:
    clipped = clip(text, 256)
    assert len(clipped.encode()) <= 256
    assert "…" in clipped and clipped[0] == text[0] and clipped[-1] == text[-1]
    assert "\ufffd" not in clipped


def test_short_text_is_untouched_and_a_lone_surrogate_cannot_break_the_answer() -> None:
    assert clip("int_é", 256) == "int_é"
    assert clip("a\ud800b", 256) == "a?b"
    assert to_rich_status(errors.NotFound("no \ud800", integration_id="\udcff")).SerializeToString()


def test_fields_past_the_budget_are_dropped_not_the_answer() -> None:
    info = error_info(errors.InvalidArgument("many", **{f"field_{n}": "v" * 300 for n in range(40)}))
    assert 0 < len(info.metadata) < 40
    assert sum(len(k) + len(v.encode()) for k, v in info.metadata.items()) <= MAX_FIELDS_BYTES
