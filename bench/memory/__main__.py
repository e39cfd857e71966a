"""Memory (RSS) of every process of the suite idle, under the benchmark load and after it, against
the target of 150 MB a service under load.

`trellis up --no-example-upstream` runs the suite in a temporary data directory (nats-server and
every service as its own process, SQLite, the embedded default; bench/memory/suite.py). Each
process's RSS, PSS, USS (/proc/<pid>/smaps_rollup) and peak RSS (VmHWM) are read every second
(bench/memory/footprint.py) through four phases: idle for `--idle` seconds after start-up;
provisioning (30 Active integrations, a webhook subscription, a console session); `--seconds` of
the whole load at once, each part as fast as it goes (bench/memory/load.py: partner requests
through the edge, activity events delivered by webhooks to an HTTPS receiver, audited registry
updates, console pages); and `--after` seconds after the load stops. Prints, per process, the
median RSS idle, the highest RSS sampled under load and VmHWM, the median RSS after, and PASS
or FAIL against the target; the rates the load reached; and the load average before and after.
Every phase is bounded in time; the run takes about two and a half minutes.

    .venv/bin/python -m bench.memory [--seconds 60] [--idle 10] [--after 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

from bench.memory.footprint import Sampler, last_hwm, median_rss, median_uss, peak_rss
from bench.memory.harness import harness
from bench.memory.load import Rates, apply
from bench.memory.suite import SERVICES

TARGET_MB = 150.0
ORDER = ("nats-server", "launcher", *SERVICES)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def table(sampler: Sampler) -> tuple[str, bool]:
    idle, load, after = sampler.of("idle"), sampler.of("load"), sampler.of("after")
    lines = [f"{'process':<14}{'idle RSS':>10}{'idle USS':>10}{'load peak':>11}{'VmHWM':>9}{'after RSS':>11}"
             f"{'after USS':>11}  verdict (services: load peak <= {TARGET_MB:.0f} MB)"]
    ok = True
    for name in ORDER:
        peak = max(peak_rss(load, name), last_hwm(load, name))
        verdict = "-"
        if name in SERVICES:
            verdict = "PASS" if peak <= TARGET_MB else "FAIL"
            ok &= verdict == "PASS"
        lines.append(f"{name:<14}{median_rss(idle, name):>10.1f}{median_uss(idle, name):>10.1f}"
                     f"{peak_rss(load, name):>11.1f}{last_hwm(load, name):>9.1f}{median_rss(after, name):>11.1f}"
                     f"{median_uss(after, name):>11.1f}  {verdict}")
    return "\n".join(lines), ok


async def run(args: argparse.Namespace, root: Path) -> int:
    async with harness(root) as (suite, ready):
        with Sampler(suite.pids, interval=1.0) as sampler:
            sampler.phase = "idle"
            before = loadavg()
            await asyncio.sleep(args.idle)
            sampler.phase = "provision"
            loaded = await ready.provision()
            sampler.phase = "load"
            achieved = await apply(suite, loaded.provisioned, loaded.receiver, loaded.rotate, Rates(), args.seconds)
            sampler.phase = "after"
            during = loadavg()
            await asyncio.sleep(args.after)
            sampler.phase = "stop"
        text, ok = table(sampler)
    print(f"memory: the suite under `trellis up` (SQLite, embedded), {os.cpu_count()} CPUs shared by the suite and "
          f"the load; MB = MiB; idle {args.idle:g} s, load {args.seconds:g} s, after {args.after:g} s")
    print(text)
    print(f"load reached: {achieved.describe()}")
    print(f"load average: {before} before, {during} at the end of the load, {loadavg()} after")
    print(f"verdict: {'PASS' if ok else 'FAIL'}: every service at or under {TARGET_MB:.0f} MB RSS under load")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of load (at most 600)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds measured idle after start-up (at most 120)")
    parser.add_argument("--after", type=float, default=15.0, help="seconds measured after the load (at most 120)")
    args = parser.parse_args()
    args.seconds = min(max(args.seconds, 5.0), 600.0)
    args.idle = min(max(args.idle, 2.0), 120.0)
    args.after = min(max(args.after, 2.0), 120.0)
    with tempfile.TemporaryDirectory(prefix="trellis-bench-memory-") as tmp:
        raise SystemExit(asyncio.run(run(args, Path(tmp))))


if __name__ == "__main__":
    main()
