"""What storing a delivery costs, step by step, in-process on SQLite: the service's own store
code (ActivityLog.ingest, WorkQueue.claim, WorkQueue.record) through SQLAlchemy on aiosqlite,
beside the same rows written with the standard library's sqlite3 module alone (no SQLAlchemy,
no aiosqlite thread: what SQLite itself and the row binding cost), at several batch sizes.

No network, no bus, no other process: CPU time of this process (every thread) per delivery,
pinned to one CPU, so the figures move little with the machine's load and two versions of the
store compare by them.

    .venv/bin/python -m bench.webhooks.store [--rounds 40] [--batches 16,64,256]

Per delivery, each step is what the service does once per batch: ingest (the activity row,
the subscriptions matched, one delivery row), claim (the subscriptions with due work, the due
rows with their bodies, the conditional lease) and record (the attempt row, the delivery's
outcome). The sqlite3 column writes the same rows and statements in the same transactions.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sqlite3
import tempfile
import time
from pathlib import Path

WARM_ROUNDS = 2


async def service_store(database: Path, batch: int, rounds: int) -> dict[str, float]:
    """CPU µs per delivery of each step through the service's store code."""
    from services.kit.db import create_engine, migrate_async, session_factory, utcnow
    from services.kit.ids import new_id
    from services.webhooks.adapters.queue import Completed, WorkQueue
    from services.webhooks.adapters.store import ActivityLog, SubscriptionRepository, row_id
    from services.webhooks.application.ports import attempt_row
    from services.webhooks.domain.model import AttemptError, DeliveryStatus, IncomingActivity, Subscription, delivery_body

    url = f"sqlite+aiosqlite:///{database}"
    await migrate_async("webhooks", url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    now = utcnow()
    async with sessions() as session, session.begin():
        await SubscriptionRepository(session).add(Subscription(
            id=new_id("whk"), org_id="org_bench", url="https://127.0.0.1:1/hook", activity_types=("*",), created_by="bench",
            created_at=now, updated_at=now, secret_created_at=now), b"sealed")
    queue = WorkQueue(owner="bench", skip_locked=False)
    spent = {"ingest": 0.0, "claim": 0.0, "record": 0.0}
    try:
        for round_ in range(rounds + WARM_ROUNDS):
            activities = [IncomingActivity(event_id=new_id("evt"), type="lot.created", org_id="org_bench", occurred_at=now,
                                           sender_type="integration", sender_id="int_bench",
                                           data={"lot_id": f"L-{n}", "weight_kg": 12.5, "room": "Flower 3"})
                          for n in range(batch)]
            bodies = [delivery_body(a) for a in activities]
            start = time.process_time()
            async with sessions() as session, session.begin():
                await ActivityLog(session).ingest(activities, bodies, utcnow())
            ingested = time.process_time()
            async with sessions() as session, session.begin():
                jobs, _, _ = await queue.claim(session, utcnow(), limit=batch, lease_until=utcnow() + dt.timedelta(minutes=1),
                                               exclude=(), room={}, default_room=batch)
            claimed = time.process_time()
            if len(jobs) != batch:
                raise RuntimeError(f"claimed {len(jobs)} of {batch}")
            started = utcnow()
            completed = [Completed(job=j, attempt_row=attempt_row(
                row_id("att"), org_id=j.org_id, delivery_id=j.delivery_id, subscription_id=j.subscription_id,
                event_id=j.event_id, event_type=j.event_type, round_=j.round, attempt=j.attempt, attempted_at=started,
                url=j.url, test=False, status_code=200, succeeded=True, error=AttemptError.NONE, error_detail="",
                response_body="ok", duration_ms=1.0, sent_by=queue.owner), status=DeliveryStatus.SUCCEEDED,
                next_attempt_at=None, exhausted=False) for j in jobs]
            built = time.process_time()
            async with sessions() as session, session.begin():
                await queue.record(session, completed, utcnow())
            recorded = time.process_time()
            if round_ >= WARM_ROUNDS:
                spent["ingest"] += ingested - start
                spent["claim"] += claimed - ingested
                spent["record"] += recorded - built
    finally:
        await engine.dispose()
    return {step: seconds / (batch * rounds) * 1e6 for step, seconds in spent.items()}


def plain_sqlite(database: Path, batch: int, rounds: int) -> dict[str, float]:
    """The same rows and statements with the sqlite3 module alone, in this thread."""
    from services.kit.db import migrate

    migrate("webhooks", f"sqlite+aiosqlite:///{database}")
    db = sqlite3.connect(database, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    stamp = "2026-12-04 01:02:03.123456"
    db.execute("insert into subscriptions (id, org_id, integration_id, url, activity_types, description, status, scheme, "
               "secret, secret_created_at, integration_suspended, created_by, created_at, updated_at, version, filter, "
               "custom_headers) values ('whk_plain', 'org_bench', '', 'https://127.0.0.1:1/hook', '[\"*\"]', '', 'active', "
               "'spec', x'00', ?, 0, 'bench', ?, ?, 1, '', '[]')", (stamp, stamp, stamp))
    spent = {"ingest": 0.0, "claim": 0.0, "record": 0.0}
    seq = 0
    for round_ in range(rounds + WARM_ROUNDS):
        events = [f"evt_{round_:04d}_{n:06d}_{os.urandom(6).hex()}" for n in range(batch)]
        start = time.process_time()
        db.execute("begin")
        activity_rows = []
        for event in events:
            seq += 1
            activity_rows.append(("org_bench", event, seq, "lot.created", stamp, stamp, "integration", "int_bench",
                                  b'{"id":"' + event.encode() + b'","type":"lot.created","data":{"lot_id":"L-1"}}', "{}"))
        # (The sqlite3 module's executemany returns no rows: the new events are these.)
        db.executemany(
            "insert into activities (org_id, event_id, seq, type, occurred_at, received_at, sender_type, sender_id, body, "
            "trace_headers) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) on conflict do nothing", activity_rows)
        db.execute("select id, org_id, activity_types, integration_id, filter from subscriptions where org_id in (?) "
                   "and deleted_at is null and status in ('active', 'failing')", ("org_bench",)).fetchall()
        db.executemany(
            "insert into deliveries (id, org_id, subscription_id, event_id, event_type, seq, status, round, attempts, "
            "next_attempt_at, lease_until, claimed_by, created_at, updated_at, last_status_code, last_error, "
            "last_error_detail, test) values (?, ?, 'whk_plain', ?, 'lot.created', ?, 'pending', 1, 0, ?, null, null, ?, "
            "?, 0, '', '', 0) on conflict do nothing",
            [(f"dlv_{row[1]}", row[0], row[1], row[2], stamp, stamp, stamp) for row in activity_rows])
        db.execute("commit")
        ingested = time.process_time()
        db.execute("begin")
        db.execute("select id from subscriptions where status = 'active' and integration_suspended = 0 and deleted_at "
                   "is null").fetchall()
        rows = db.execute(
            "select d.id, d.org_id, d.event_id, d.event_type, d.round, d.attempts, d.test, a.body, a.trace_headers, "
            "a.occurred_at from deliveries d join activities a on a.org_id = d.org_id and a.event_id = d.event_id "
            "where d.subscription_id = 'whk_plain' and d.status = 'pending' and d.next_attempt_at <= ? and "
            "(d.lease_until is null or d.lease_until < ?) order by d.next_attempt_at, d.seq limit ?",
            ("9999-12-31 23:59:59.999999", stamp, batch + 1)).fetchall()
        ids = [r[0] for r in rows]
        db.execute(f"update deliveries set lease_until = ?, claimed_by = 'bench' where id in ({', '.join('?' * len(ids))}) "
                   "and status = 'pending' returning id", [stamp, *ids]).fetchall()
        db.execute("commit")
        claimed = time.process_time()
        db.execute("begin")
        db.executemany(
            "insert into attempts (id, org_id, delivery_id, subscription_id, event_id, event_type, round, attempt, "
            "attempted_at, duration_ms, status_code, succeeded, error, error_detail, response_body, url, test, sent_by, "
            "exchange) values (?, ?, ?, 'whk_plain', ?, 'lot.created', 1, 1, ?, 1.0, 200, 1, '', '', 'ok', "
            "'https://127.0.0.1:1/hook', 0, 'bench', null)",
            [(f"att_{r[0]}", r[1], r[0], r[2], stamp) for r in rows])
        db.execute(f"update deliveries set status = 'succeeded', attempts = 1, next_attempt_at = null, lease_until = null, "
                   f"claimed_by = null, updated_at = ?, last_status_code = 200, last_error = '', last_error_detail = '' "
                   f"where id in ({', '.join('?' * len(ids))}) and claimed_by = 'bench' and status = 'pending'",
                   [stamp, *ids])
        db.execute("commit")
        recorded = time.process_time()
        if len(rows) != batch:
            raise RuntimeError(f"claimed {len(rows)} of {batch}")
        if round_ >= WARM_ROUNDS:
            spent["ingest"] += ingested - start
            spent["claim"] += claimed - ingested
            spent["record"] += recorded - claimed
    db.close()
    return {step: seconds / (batch * rounds) * 1e6 for step, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks.store")
    parser.add_argument("--rounds", type=int, default=40, help="batches per size (after two to warm up)")
    parser.add_argument("--batches", default="16,64,256", help="batch sizes, comma-separated")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    rounds = max(1, min(args.rounds, 1000))
    print("webhooks store, in-process on SQLite, one CPU: CPU µs per delivery (every thread of this process)")
    print(f"{'batch':>6} {'step':<8}{'service store (SQLAlchemy, aiosqlite)':>40}{'sqlite3 alone':>16}{'ratio':>8}")
    for batch in (int(b) for b in args.batches.split(",")):
        with tempfile.TemporaryDirectory(prefix="trellis-store-") as tmp:
            ours = asyncio.run(service_store(Path(tmp) / "service.db", batch, rounds))
            plain = plain_sqlite(Path(tmp) / "plain.db", batch, rounds)
        for step in ("ingest", "claim", "record"):
            print(f"{batch:>6} {step:<8}{ours[step]:>40,.1f}{plain[step]:>16,.1f}{ours[step] / plain[step]:>8.1f}")
        total, plain_total = sum(ours.values()), sum(plain.values())
        print(f"{batch:>6} {'all':<8}{total:>40,.1f}{plain_total:>16,.1f}{total / plain_total:>8.1f}")


if __name__ == "__main__":
    main()
