"""The memory soak: the suite of bench.memory under half the load the benchmark reaches, for
`--minutes` (10 by default), printing every process's RSS every 30 s, one line a sample, and at
the end each process's growth with a verdict.

The suite, the load and the readings are bench.memory's (bench/memory/): `trellis up` in a
temporary data directory, 30 Active integrations, a webhook subscription to an HTTPS receiver,
a console session. Unless every rate is given, a calibration of `--calibrate` seconds first runs
the whole load as fast as it goes (as bench.memory does) and the soak then paces each part at
half the rate it reached there. RSS is sampled every 5 s; the first `--warm-up` seconds of the
soak are left out of the growth, and the rest cut in thirds: growth is the median of the last
third minus the median of the first, beside the slope of a least-squares line through every
sample after the warm-up (MB a minute). A process is flat when its growth is at most
`GROWTH_LIMIT_MB`. Bounded in time: calibration, soak, and a minute of start-up and stop.

    .venv/bin/python -m bench.soak [--minutes 10] [--calibrate 30] [--warm-up 60]
                                   [--edge-rate R --events-rate R --update-rate R --page-rate R]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench.memory.__main__ import ORDER, loadavg
from bench.memory.footprint import MB, Sample, Sampler
from bench.memory.harness import harness
from bench.memory.suite import SERVICES
from bench.memory.load import Achieved, Rates, apply
from bench.memory.tracing import Inside, describe, difference, enable

PRINT_EVERY_SECONDS = 30.0
SAMPLE_EVERY_SECONDS = 5.0
GROWTH_LIMIT_MB = 2.0


def line(t: float, sample: Sample, achieved: Achieved) -> str:
    cells = " ".join(f"{name} {sample.footprints[name].rss / MB:6.1f}" for name in ORDER if name in sample.footprints)
    return (f"t={t:5.0f}s  {cells}  | deliveries {achieved.events_received:,} updates {achieved.updates:,} "
            f"pages {achieved.pages:,}  load {loadavg()}")


def slope_mb_per_minute(samples: list[Sample], name: str) -> float:
    points = [(s.t / 60, s.footprints[name].rss / MB) for s in samples if name in s.footprints]
    if len(points) < 3:
        return float("nan")
    return statistics.linear_regression([p[0] for p in points], [p[1] for p in points]).slope


def growth(samples: list[Sample], name: str) -> tuple[float, float, float]:
    """(median of the first third, median of the last third, their difference), MB."""
    values = [s.footprints[name].rss / MB for s in samples if name in s.footprints]
    third = max(len(values) // 3, 1)
    first, last = statistics.median(values[:third]), statistics.median(values[-third:])
    return first, last, last - first


async def report_every(sampler: Sampler, achieved: Achieved, start: float, until: float,
                       inside: Inside | None) -> None:
    """A line every PRINT_EVERY_SECONDS; with `inside`, that process's own figures (MB) after it."""
    next_at = start + PRINT_EVERY_SECONDS
    while next_at <= until + 1:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        text = line(time.monotonic() - start, sampler.take(), achieved)
        if inside is not None:
            text += f"\n          inside: {describe(await asyncio.to_thread(inside.stats))}"
        print(text, flush=True)
        next_at += PRINT_EVERY_SECONDS


async def first_snapshot(args: argparse.Namespace, traced: Inside | None, start: float) -> tracemalloc.Snapshot | None:
    """Tracing starts when the warm-up ends; the first snapshot is a third of the rest later."""
    if traced is None:
        return None
    await asyncio.sleep(max(0.0, start + args.warm_up - time.monotonic()))
    await asyncio.to_thread(traced.stats)
    await asyncio.sleep(max(0.0, start + args.warm_up + (args.minutes * 60 - args.warm_up) / 3 - time.monotonic()))
    return await asyncio.to_thread(traced.snapshot)


async def run(args: argparse.Namespace, root: Path) -> int:
    given = Rates(args.edge_rate or 0.0, args.events_rate or 0.0, args.update_rate or 0.0, args.page_rate or 0.0)
    async with harness(root) as (suite, ready):
        with Sampler(suite.pids, interval=SAMPLE_EVERY_SECONDS) as sampler:
            loaded = await ready.provision()
            before = loadavg()
            if all((given.edge, given.events, given.audit, given.console)):
                rates, calibration = given, None
            else:
                sampler.phase = "calibration"
                calibration = await apply(suite, loaded.provisioned, loaded.receiver, loaded.rotate, Rates(),
                                          args.calibrate)
                half = calibration.rates().half()
                rates = Rates(given.edge or half.edge, given.events or half.events, given.audit or half.audit,
                              given.console or half.console)
                print(f"calibration ({args.calibrate:g} s, everything as fast as it goes): {calibration.describe()}")
            print(f"soak: {args.minutes:g} min at {rates.describe()}; RSS in MB (MiB) every "
                  f"{PRINT_EVERY_SECONDS:g} s; load average {before} before", flush=True)
            sampler.phase = "soak"
            seconds = args.minutes * 60
            achieved = Achieved(seconds=seconds)
            start = time.monotonic()
            looked = args.tracemalloc or args.inside
            inside = Inside(suite.pids[looked], root / "inside") if looked else None
            traced = inside if args.tracemalloc else None
            reporter = asyncio.create_task(report_every(sampler, achieved, start, start + seconds,
                                                        None if traced else inside))
            first_traced = asyncio.create_task(first_snapshot(args, traced, start))
            try:
                achieved = await apply(suite, loaded.provisioned, loaded.receiver, loaded.rotate, rates, seconds,
                                       achieved=achieved)
            finally:
                reporter.cancel()
            sampler.phase = "stop"
            if traced is not None:
                began = await first_traced
                end = await asyncio.to_thread(traced.snapshot)
                assert began is not None
                print(f"tracemalloc in {args.tracemalloc}, from a third of the way after the warm-up to the end:\n"
                      + difference(began, end), flush=True)
        soaked = [s for s in sampler.of("soak") if s.t - start >= args.warm_up]
    print(f"soak reached: {achieved.describe()}")
    print(f"growth after the first {args.warm_up:g} s ({len(soaked)} samples, every {SAMPLE_EVERY_SECONDS:g} s): "
          f"median RSS of the first third -> the last third, and the least-squares slope")
    print(f"{'process':<14}{'first MB':>10}{'last MB':>10}{'growth MB':>11}{'MB/min':>9}  verdict (a service is flat "
          f"when it grows by at most {GROWTH_LIMIT_MB:g} MB)")
    flat = True
    for name in ORDER:
        first, last, grown = growth(soaked, name)
        verdict = "-"
        if name in SERVICES:
            verdict = "flat" if grown <= GROWTH_LIMIT_MB else "GROWS"
            flat &= verdict == "flat"
        print(f"{name:<14}{first:>10.1f}{last:>10.1f}{grown:>+11.1f}{slope_mb_per_minute(soaked, name):>+9.2f}  {verdict}")
    print(f"load average: {before} before, {loadavg()} at the end")
    print(f"verdict: {'PASS: no service grows' if flat else 'FAIL: a service grows'}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of soak (at most 120)")
    parser.add_argument("--calibrate", type=float, default=30.0, help="seconds of the full load first (at most 300)")
    parser.add_argument("--warm-up", type=float, default=60.0, help="seconds of the soak left out of the growth")
    parser.add_argument("--edge-rate", type=float, help="partner requests/s (default: half the calibration's)")
    parser.add_argument("--events-rate", type=float, help="activity events/s (default: half the deliveries/s reached)")
    parser.add_argument("--update-rate", type=float, help="audited registry updates/s (default: half the calibration's)")
    parser.add_argument("--page-rate", type=float, help="console pages/s (default: half the calibration's)")
    parser.add_argument("--inside", metavar="SERVICE", choices=SERVICES,
                        help="print SERVICE's own figures with each line (SQLite's and malloc's bytes, threads)")
    parser.add_argument("--tracemalloc", metavar="SERVICE", choices=SERVICES,
                        help="trace SERVICE's Python allocations and print what grew during the soak (slows it)")
    args = parser.parse_args()
    args.minutes = min(max(args.minutes, 1.0), 120.0)
    args.calibrate = min(max(args.calibrate, 5.0), 300.0)
    args.warm_up = min(max(args.warm_up, 0.0), args.minutes * 60 / 2)
    with tempfile.TemporaryDirectory(prefix="trellis-bench-soak-") as tmp:
        if args.tracemalloc or args.inside:
            enable(args.tracemalloc or args.inside, Path(tmp) / "inside", trace=bool(args.tracemalloc))
        raise SystemExit(asyncio.run(run(args, Path(tmp))))


if __name__ == "__main__":
    main()
