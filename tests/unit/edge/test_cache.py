"""The edge's cache: expiry, drops by key and tag, one load for concurrent misses, and no
storing of a load that raced an invalidation."""

from __future__ import annotations

import asyncio

import pytest

from services.edge.adapters.cache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_the_ttl_or_their_own_deadline() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(30, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2, expires_at=clock.now + 5)
    clock.now += 6
    assert (cache.get("a"), cache.get("b")) == (1, None)
    clock.now += 25
    assert cache.get("a") is None


def test_drop_by_tag_leaves_the_rest() -> None:
    cache: TtlCache[str, int] = TtlCache(30)
    cache.put("k1", 1, tags=[("integration", "i1"), ("client", "c1")])
    cache.put("k2", 2, tags=[("integration", "i1")])
    cache.put("k3", 3, tags=[("integration", "i2")])
    assert cache.drop_tag(("integration", "i1")) == 2
    assert (cache.get("k1"), cache.get("k2"), cache.get("k3")) == (None, None, 3)
    assert cache.drop_tag(("client", "c1")) == 0


def test_the_oldest_entry_goes_when_full() -> None:
    cache: TtlCache[int, int] = TtlCache(30, max_entries=2)
    for n in range(3):
        cache.put(n, n)
    assert (cache.get(0), cache.get(1), cache.get(2), len(cache)) == (None, 1, 2, 2)


async def test_concurrent_misses_share_one_load() -> None:
    cache: TtlCache[str, int] = TtlCache(30)
    calls = 0
    release = asyncio.Event()

    async def load() -> tuple[int, tuple[()], None]:
        nonlocal calls
        calls += 1
        await release.wait()
        return 7, (), None

    waiting = [asyncio.create_task(cache.get_or_load("k", load)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == [7] * 5
    assert calls == 1 and cache.get("k") == 7


async def test_a_load_that_raced_an_invalidation_is_not_stored() -> None:
    cache: TtlCache[str, int] = TtlCache(30)
    started, release = asyncio.Event(), asyncio.Event()

    async def load() -> tuple[int, tuple[()], None]:
        started.set()
        await release.wait()
        return 1, (), None

    pending = asyncio.create_task(cache.get_or_load("k", load))
    await started.wait()
    cache.drop_tag(("integration", "i1"))  # any invalidation while the load was in flight
    release.set()
    assert await pending == 1  # the caller that asked still gets an answer
    assert cache.get("k") is None  # but it may predate the change, so it is not kept


async def test_a_failed_load_reaches_every_waiter_and_stores_nothing() -> None:
    cache: TtlCache[str, int] = TtlCache(30)

    async def load() -> tuple[int, tuple[()], None]:
        raise LookupError("down")

    with pytest.raises(LookupError):
        await cache.get_or_load("k", load)
    assert cache.get("k") is None


async def test_a_caller_that_goes_away_does_not_cancel_the_load_for_the_others() -> None:
    cache: TtlCache[str, int] = TtlCache(30)
    release = asyncio.Event()

    async def load() -> tuple[int, tuple[()], None]:
        await release.wait()
        return 3, (), None

    first = asyncio.create_task(cache.get_or_load("k", load))
    second = asyncio.create_task(cache.get_or_load("k", load))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == 3


class Loader:
    """A load function whose answers the test controls: each call takes the next value."""

    def __init__(self, *values: int | Exception) -> None:
        self.values = list(values)
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self) -> tuple[int, tuple[str, ...], float | None]:
        self.calls += 1
        await self.gate.wait()
        value = self.values.pop(0)
        if isinstance(value, Exception):
            raise value
        return value, (), None


async def _settle(cache: TtlCache[str, int]) -> None:
    while cache._loading:  # noqa: SLF001 - the background refresh, awaited by the test
        await asyncio.gather(*(task for task, _ in cache._loading.values()), return_exceptions=True)  # noqa: SLF001


async def test_an_entry_is_refreshed_in_the_background_before_it_expires() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(30, clock=clock)
    load = Loader(1, 2)
    assert await cache.get_or_load("k", load) == 1
    clock.now += 30 * 0.69  # before the earliest refresh point: a plain hit
    assert await cache.get_or_load("k", load) == 1
    assert load.calls == 1
    clock.now = 1000.0 + 30 * 0.91  # past the latest refresh point, not yet expired
    load.gate.clear()
    assert await cache.get_or_load("k", load) == 1  # served from the cache, not waiting for the load
    await asyncio.sleep(0)  # let the refresh task begin
    assert load.calls == 2 and cache.refreshes == 1
    assert await cache.get_or_load("k", load) == 1  # one refresh in flight, not one per request
    assert load.calls == 2
    load.gate.set()
    await _settle(cache)
    clock.now = 1000.0 + 31  # past the first entry's expiry: the refreshed one is served
    assert await cache.get_or_load("k", load) == 2
    assert load.calls == 2


async def test_a_failed_refresh_keeps_serving_the_entry_until_it_expires() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(30, clock=clock)
    load = Loader(1, RuntimeError("registry down"), 3)
    assert await cache.get_or_load("k", load) == 1
    clock.now += 30 * 0.95
    assert await cache.get_or_load("k", load) == 1
    await _settle(cache)
    assert cache.get("k") == 1
    clock.now += 30 * 0.06  # expired: the next request waits for a load again
    assert await cache.get_or_load("k", load) == 3


async def test_a_refresh_that_raced_an_invalidation_is_not_stored() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(30, clock=clock)
    load = Loader(1, 2, 3)
    await cache.get_or_load("k", load)
    clock.now += 30 * 0.95
    load.gate.clear()
    assert await cache.get_or_load("k", load) == 1
    await asyncio.sleep(0)  # the refresh has begun reading
    cache.drop("k")  # the change event arrives while the refresh reads the old state
    load.gate.set()
    await _settle(cache)
    assert cache.get("k") is None
    assert await cache.get_or_load("k", load) == 3


async def test_entries_with_their_own_earlier_expiry_are_not_refreshed() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(30, clock=clock)
    calls = 0

    async def load() -> tuple[int, tuple[str, ...], float | None]:
        nonlocal calls
        calls += 1
        return calls, (), clock.now + 10  # a token that expires before the TTL

    assert await cache.get_or_load("t", load) == 1
    clock.now += 9.5
    assert await cache.get_or_load("t", load) == 1
    assert calls == 1 and cache.refreshes == 0


async def test_entries_loaded_together_are_refreshed_at_spread_out_times() -> None:
    clock = Clock()
    cache: TtlCache[int, int] = TtlCache(30, clock=clock)
    for key in range(200):
        cache.put(key, key)
    points = sorted(cache._entries[key].refresh_at - clock.now for key in range(200))  # noqa: SLF001
    assert 30 * 0.7 <= points[0] and points[-1] <= 30 * 0.9
    assert points[-1] - points[0] > 30 * 0.1  # spread over most of the window, not one instant


async def test_a_request_after_an_invalidation_never_joins_a_load_that_began_before_it() -> None:
    clock = Clock()
    cache: TtlCache[str, str] = TtlCache(30, clock=clock)
    old_state_read = asyncio.Event()
    release_old = asyncio.Event()
    calls = 0

    async def load() -> tuple[str, tuple[str, ...], float | None]:
        nonlocal calls
        calls += 1
        if calls == 2:  # the refresh ahead: reads "active", then answers slowly
            old_state_read.set()
            await release_old.wait()
            return "active", (), None
        return ("active" if calls == 1 else "suspended"), (), None

    assert await cache.get_or_load("int_1", load) == "active"
    clock.now += 30 * 0.95
    assert await cache.get_or_load("int_1", load) == "active"  # starts the refresh ahead
    await old_state_read.wait()
    cache.drop("int_1")  # the suspension event arrives while the refresh is in flight
    assert await cache.get_or_load("int_1", load) == "suspended"  # a load of its own, not the stale one
    release_old.set()
    await _settle(cache)
    assert cache.get("int_1") == "suspended"  # and the stale refresh did not overwrite it
