"""What the dispatcher spends, per finished attempt, deciding what starts next, by how many
subscriptions have claimed deliveries waiting: the walk over every waiting subscription (what
each finished attempt did before, `_start_runnable`) against the freed slot's own subscription
(`_slot_freed`, now), in one run. Each waiting subscription is at its own concurrency limit, as
under a backlog, so the only job that can start is the next one of the subscription whose
attempt ended. The attempt itself is a no-op here: this prices the bookkeeping alone.

    .venv/bin/python -m bench.webhooks.dispatch [--finished 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time
from typing import Any

from services.webhooks.adapters.dispatcher import Dispatcher, Limits
from services.webhooks.adapters.queue import Job
from services.webhooks.domain.model import SignatureScheme

WAITING = (10, 100, 1_000, 10_000)


def _job(subscription: int, n: int) -> Job:
    return Job(delivery_id=f"dlv_{subscription}_{n}", org_id="org_1", subscription_id=f"sub_{subscription}",
               subscription_version=1, integration_id="", event_id=f"evt_{n}", event_type="lot.created", round=1,
               attempt=1, url="https://hooks.example.test/in", scheme=SignatureScheme.SPEC, sealed_secret=b"",
               body=b"{}", trace_headers="{}")


async def _attempt(_: Job) -> None:
    return None


def _dispatcher(waiting: int) -> Dispatcher:
    """A dispatcher whose every subscription runs one attempt (its limit) and has one waiting."""
    none: Any = None
    dispatcher = Dispatcher(none, none, none, none, none, Limits(per_subscription=1, total=waiting * 4,
                                                                 lease_seconds=60, poll_seconds=5), user_agent="bench")
    dispatcher._attempt = _attempt  # type: ignore[method-assign]  # the POST is not what is priced
    for s in range(waiting):
        dispatcher._waiting[f"sub_{s}"] = collections.deque([_job(s, 0)])
        dispatcher._running[f"sub_{s}"] = 1
    dispatcher._running_total = waiting
    return dispatcher


async def _finish(dispatcher: Dispatcher, finished: int, *, walk: bool) -> float:
    """µs per finished attempt of a subscription in the middle of the line, the rest unchanged."""
    middle = f"sub_{len(dispatcher._waiting) // 2}"
    elapsed = 0.0
    for n in range(finished):
        # The attempt ended: its slot is free and the subscription's next job waits.
        dispatcher._running[middle] -= 1
        dispatcher._running_total -= 1
        dispatcher._waiting.setdefault(middle, collections.deque()).append(_job(0, n))
        started = time.perf_counter()
        if walk:
            dispatcher._start_runnable()
        else:
            dispatcher._slot_freed(middle, total_was_full=False)
        elapsed += time.perf_counter() - started
        if n % 256 == 0:
            await asyncio.sleep(0)  # the no-op attempts run and end
    await asyncio.sleep(0)
    assert dispatcher._running[middle] == 1 and dispatcher._running_total == len(dispatcher._running)
    return elapsed / finished * 1e6


async def run(finished: int) -> None:
    print(f"per finished attempt, µs to decide what starts next ({finished:,} attempts each, one run)")
    print(f"{'subscriptions waiting':>22} {'walk (before)':>14} {'freed slot':>11} {'freed / walk':>13}")
    for waiting in WAITING:
        walk = await _finish(_dispatcher(waiting), max(200, finished // waiting), walk=True)
        freed = await _finish(_dispatcher(waiting), finished, walk=False)
        print(f"{waiting:>22,} {walk:>14.1f} {freed:>11.1f} {freed / walk:>13.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--finished", type=int, default=20_000, help="finished attempts per row (1,000-1,000,000)")
    args = parser.parse_args()
    asyncio.run(run(min(max(args.finished, 1000), 1_000_000)))


if __name__ == "__main__":
    main()
