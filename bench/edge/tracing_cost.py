"""Where the fixed cost of tracing goes: the edge untraced, with the SDK and its OTLP exporter
installed but nothing sampled (ratio 0), and at the default ratio, each at the same fixed rate,
py-spy sampling each while it serves. At a fixed rate the edges do the same work per second, so
the samples per request by cost centre, turned into microseconds, say what tracing adds and
where, beside each process's own CPU time per request (from /proc) in the same run.

    .venv/bin/pip install py-spy        # not a project dependency
    .venv/bin/python -m bench.edge.tracing_cost [--rate 1500] [--seconds 8] [--rounds 2]

The set-up is bench.edge's (bench/edge/stack.py): identity and registry as processes, 60
integrations whose credentials the load rotates over, every edge pinned to the server core, the
load (bench.edge.paced), the upstream, nats-server and the OTLP sink on the load core.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench.edge.__main__ import Target, edge_target, nats_server, otlp_sink, upstream
from bench.edge.load import LOAD_CPU, Result, Watch, paced
from bench.edge.profile import _short, spy, tally
from bench.edge.stack import check_all
from services.kit.settings import DEFAULT_SAMPLE_RATIO

SAMPLES_PER_SECOND = 200


def spied_round(target: Target, *, rate: float, seconds: float, rotate: Path, out: Path) -> tuple[float, Counter[str], int]:
    """One round at `rate`: the target's CPU µs per request (its whole process, /proc) and
    py-spy's samples by cost centre over the same requests (the load runs a second longer on
    each side of the profile, so every sample falls inside it)."""
    paced(target.url, rate=rate, seconds=1, rotate=rotate)  # warm-up: caches filled, connections open
    results: list[Result] = []
    watch = Watch(target.pid)

    def load() -> None:
        with watch:
            try:
                results.append(paced(target.url, rate=rate, seconds=seconds + 2, rotate=rotate))
            except subprocess.CalledProcessError as exc:
                print(f"the load failed: {exc.stderr.strip()[-800:]}", file=sys.stderr)

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(1.0)  # the profile starts one second into the load
    spied = spy(target.pid, seconds=seconds, out=out, rate=SAMPLES_PER_SECOND)
    loader.join()
    if spied.returncode != 0:
        sys.exit(f"py-spy failed ({spied.returncode}): {spied.stderr.strip()[-500:]}")
    if not results or not results[0].requests:
        sys.exit(f"{target.name} answered no request at {rate:g}/s")
    _, centres, _, _ = tally(out)
    centres.update(entries(out))
    return watch.own / results[0].requests * 1e6, centres, round(rate * seconds)


def entries(out: Path) -> Counter[str]:
    """The samples inside OpenTelemetry by where each entered it: the outermost OpenTelemetry
    frame of the stack and the frame that called it (`  otel: ...` keys, beside the cost centres)."""
    found: Counter[str] = Counter()
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";") if stack else []
        for n, frame in enumerate(frames):
            if "/opentelemetry/" in frame:
                caller = _short(frames[n - 1]).split(" (")[0] if n else "(no caller sampled)"
                found[f"  otel: {caller} -> {_short(frame)}"] += int(count)
                break
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1500.0, help="requests/s offered to each edge (100-5000)")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds profiled per round (3-30)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; medians are printed (1-5)")
    args = parser.parse_args()
    rate, seconds, rounds = min(max(args.rate, 100.0), 5000.0), min(max(args.seconds, 3.0), 30.0), min(max(args.rounds, 1), 5)
    with tempfile.TemporaryDirectory(prefix="trellis-bench-tracing-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        nats_url = stack.enter_context(nats_server(root))
        behind, _ = stack.enter_context(upstream(LOAD_CPU))
        sink = stack.enter_context(otlp_sink(root))
        otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_EXPORTER_OTLP_INSECURE": "true"}
        others = {"OTLP, ratio 0 (SDK installed, nothing sampled)": {**otlp, "TRELLIS_OTEL_SAMPLE_RATIO": "0"},
                  f"OTLP, ratio {DEFAULT_SAMPLE_RATIO:g} (default)": otlp}
        edges, credentials, _ = stack.enter_context(edge_target(behind, nats_url, root, others))
        names = ["untraced", "ratio 0", f"ratio {DEFAULT_SAMPLE_RATIO:g}"]
        rotate = root / "rotate.json"
        rotate.write_text(json.dumps(credentials))
        for target in edges:
            if set(check_all(target.url, credentials)) != {200}:
                sys.exit(f"{target.name} does not answer 200 to every integration")
        cpu: dict[str, list[float]] = {n: [] for n in names}
        per_request: dict[str, list[Counter[str]]] = {n: [] for n in names}
        for n in range(rounds):
            for name, target in zip(names, edges, strict=True):
                cpu_us, centres, requests = spied_round(target, rate=rate, seconds=seconds, rotate=rotate,
                                                        out=root / f"{name}-{n}.spy.txt")
                cpu[name].append(cpu_us)
                per_request[name].append(Counter({k: v / SAMPLES_PER_SECOND / requests * 1e6 for k, v in centres.items()}))
            print(f"round {n + 1}/{rounds}: " + ", ".join(f"{k} {cpu[k][-1]:.0f} µs/req" for k in names), flush=True)
    report(names, cpu, per_request, rate=rate, seconds=seconds, rounds=rounds)


def report(names: list[str], cpu: dict[str, list[float]], per_request: dict[str, list[Counter[str]]], *,
           rate: float, seconds: float, rounds: int) -> None:
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\nthe edge at {rate:,.0f} req/s, {rounds} round(s) of {seconds:g} s profiled at {SAMPLES_PER_SECOND} Hz; "
          f"medians; load average now {' '.join(load)}")
    def median(name: str, centre: str) -> float:
        return statistics.median(run.get(centre, 0.0) for run in per_request[name])

    # cost centres by the untraced edge's share, then the entries into OpenTelemetry by ratio 0's
    centres = sorted({c for runs in per_request.values() for run in runs for c in run},
                     key=lambda c: (c.startswith("  "), -median(names[1] if c.startswith("  ") else names[0], c)))
    width = max(len(c) for c in centres) if centres else 10
    print(f"{'µs per request':<{width}}  " + "  ".join(f"{n:>10}" for n in names) + f"  {'0 - untr.':>10}")

    for centre in centres:
        row = [median(n, centre) for n in names]
        if centre.startswith("  ") and max(row) < 1.0:
            continue  # an entry into OpenTelemetry worth under a microsecond anywhere
        print(f"{centre:<{width}}  " + "  ".join(f"{v:10.1f}" for v in row) + f"  {row[1] - row[0]:+10.1f}")
    sampled = [sum(median(n, c) for c in centres if not c.startswith("  ")) for n in names]
    print(f"{'in Python frames (py-spy)':<{width}}  " + "  ".join(f"{v:10.1f}" for v in sampled)
          + f"  {sampled[1] - sampled[0]:+10.1f}")
    own = [statistics.median(cpu[n]) for n in names]
    print(f"{'process CPU (/proc)':<{width}}  " + "  ".join(f"{v:10.1f}" for v in own) + f"  {own[1] - own[0]:+10.1f}")
    print("ratios to the untraced edge by CPU per request: "
          + ", ".join(f"{n} {own[0] / v:.2f}" for n, v in zip(names[1:], own[1:], strict=True)))


if __name__ == "__main__":
    main()
