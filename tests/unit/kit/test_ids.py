from services.kit.ids import new_id


def test_ids_are_prefixed_unique_and_time_ordered():
    ids = [new_id("int") for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(i.startswith("int_") and len(i) == 30 for i in ids)
    # The leading characters encode milliseconds, so a later id never sorts before an earlier one's time.
    assert ids[0][:14] <= ids[-1][:14]
