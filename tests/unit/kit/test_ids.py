from services.kit.ids import new_id


def test_ids_are_prefixed_unique_and_time_ordered():
    ids = [new_id("int") for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(i.startswith("int_") and len(i) == 30 for i in ids)
    # The leading characters encode milliseconds, so a later id never sorts before an earlier one's time.
    assert ids[0][:14] <= ids[-1][:14]


def test_a_request_id_has_the_form_metadata_can_carry() -> None:
    from services.kit.ids import is_request_id

    assert all(is_request_id(v) for v in ("req_01abc", "3f2b9c1e-8f2a-4b7e-9d3c-1a2b3c4d5e6f", "edge:1.2", "x" * 128))
    assert not any(is_request_id(v) for v in ("", "é", "a b", "a\x00b", "a\r\nb", "x" * 129))


def test_peer_calls_forward_only_a_request_id_metadata_can_carry(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from services.kit.auth import Actor, ServiceTokenSource
    from services.kit.service import actor_metadata

    token_file = tmp_path / "token"
    token_file.write_text("eyJ.service.token")
    source = ServiceTokenSource(token_file=token_file)
    actor = Actor("alice", "org_a", token="eyJ.actor.token")
    for metadata in (actor_metadata, lambda _, request_id: source.metadata(request_id)):
        assert ("x-request-id", "req_1") in metadata(actor, "req_1")
        for odd in ("é", "a\r\nb", "x" * 129):
            assert [k for k, _ in metadata(actor, odd)] == ["authorization"]
