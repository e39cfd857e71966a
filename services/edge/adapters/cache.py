"""A small in-process cache for the edge: entries expire (a short TTL as the safety bound, or
sooner when the value says so), can be dropped by key or by tag (an integration id, a client
id), and concurrent misses for one key share a single load.

A load that was in flight while anything was dropped is used by the requests that waited for
it but is not stored: it may have read the state from before the change that caused the drop.

Refresh ahead: an entry whose lifetime is the TTL is loaded again in the background once it is
between 70 % and 90 % through it (a random point per entry, so entries loaded together do not
expire together), while requests keep getting the cached value. Without it every cached key
and integration expired on the request path every TTL, and the requests that found it expired
waited for identity or registry (docs/benchmarks.md, "## Edge": 30 s stalls in the p99). It only
ever makes a value fresher: invalidation events still drop entries at once, and the TTL still
bounds how old a served value can be. Entries that end earlier by their own expiry (a token's
`exp`) are not refreshed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

# Where in its TTL an entry is loaded again in the background (uniformly between the two).
REFRESH_FROM, REFRESH_TO = 0.7, 0.9

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    expires_at: float
    tags: tuple[Hashable, ...]
    refresh_at: float  # inf: never refreshed ahead


class TtlCache(Generic[K, V]):
    """Entries by key with expiry and tags; at most `max_entries` (oldest evicted first)."""

    def __init__(self, ttl: float, *, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[K, _Entry[V]] = {}
        self._by_tag: dict[Hashable, set[K]] = {}
        self._loading: dict[K, tuple[asyncio.Task[V], int]] = {}  # the load in flight, and the epoch it began in
        self._epoch = 0
        self.hits = 0
        self.misses = 0
        self.refreshes = 0  # loads started ahead of expiry

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            self._remove(key)
            return None
        return entry.value

    def put(self, key: K, value: V, *, tags: Iterable[Hashable] = (), expires_at: float | None = None) -> None:
        """Store `value` until now + ttl, or `expires_at` (monotonic clock) when that is sooner."""
        self._remove(key)
        if len(self._entries) >= self.max_entries:
            self._remove(next(iter(self._entries)))
        now = self._clock()
        deadline = now + self.ttl
        if expires_at is not None and expires_at < deadline:
            entry = _Entry(value, expires_at, tuple(tags), float("inf"))
        else:
            entry = _Entry(value, deadline, tuple(tags), now + self.ttl * random.uniform(REFRESH_FROM, REFRESH_TO))
        self._entries[key] = entry
        for tag in entry.tags:
            self._by_tag.setdefault(tag, set()).add(key)

    def drop(self, key: K) -> None:
        """Forget `key` (an invalidation: a load in flight is not stored)."""
        self._epoch += 1
        self._remove(key)

    def drop_tag(self, tag: Hashable) -> int:
        """Forget every entry carrying `tag`; returns how many."""
        self._epoch += 1
        keys = self._by_tag.pop(tag, set())
        for key in keys:
            self._remove(key)
        return len(keys)

    def clear(self) -> None:
        self._epoch += 1
        self._entries.clear()
        self._by_tag.clear()

    def _remove(self, key: K) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        for tag in entry.tags:
            keys = self._by_tag.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_tag[tag]

    async def get_or_load(self, key: K, load: Callable[[], Awaitable[tuple[V, Iterable[Hashable], float | None]]]) -> V:
        """The cached value, or the result of `load()` -> (value, tags, expires_at or None),
        shared by every caller that misses on `key` meanwhile. `load`'s exceptions propagate
        to each of them and nothing is stored. The load runs as its own task, so a caller that
        goes away does not cancel it for the others."""
        entry = self._entries.get(key)
        if entry is not None:
            now = self._clock()
            if entry.expires_at > now:
                self.hits += 1
                if entry.refresh_at <= now and key not in self._loading:
                    self.refreshes += 1
                    self._start_load(key, load)
                return entry.value
            self._remove(key)
        self.misses += 1
        loading = self._loading.get(key)
        # A load that began before the latest drop may have read the state the drop was about:
        # a miss after a drop never joins it, it starts a load of its own.
        task = loading[0] if loading is not None and loading[1] == self._epoch else self._start_load(key, load)
        return await asyncio.shield(task)

    def _start_load(self, key: K, load: Callable[[], Awaitable[tuple[V, Iterable[Hashable], float | None]]]) -> asyncio.Task[V]:
        epoch = self._epoch
        task = asyncio.get_running_loop().create_task(self._load(key, load, epoch))
        # Retrieved here so an error nobody waited for any more (a failed refresh ahead, whose
        # entry is still served until it expires) is not reported as lost.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._loading[key] = (task, epoch)
        return task

    async def _load(self, key: K, load: Callable[[], Awaitable[tuple[V, Iterable[Hashable], float | None]]],
                    epoch: int) -> V:
        try:
            value, tags, expires_at = await load()
        finally:
            loading = self._loading.get(key)
            if loading is not None and loading[1] == epoch and loading[0] is asyncio.current_task():
                del self._loading[key]
        if epoch == self._epoch:
            self.put(key, value, tags=tags, expires_at=expires_at)
        return value
