"""How long one CLI command takes, beside the interpreter's own start measured in the same run.

`trellis up` runs the whole suite in a temporary data directory (every service on a free port,
no example upstream), three integrations are requested through the CLI, one approved and
activated; then `python -c pass` and `trellis integrations list` (the installed console script,
as a user runs it) alternate, each as a new process, and every run of the command must exit 0
and list the three integrations. Prints the median, the fastest and the 90th percentile of
each, wall clock and CPU time (user + system, what the command itself costs whatever else the
machine runs), their ratios, and the command's budget (0.3 s on the recorded machine), and
where one run's import time goes. Bounded by count; the run takes about half a minute.

    .venv/bin/python -m bench.cli [--runs 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_ports

TRELLIS = Path(sys.executable).parent / "trellis"
READY_LINE = "Trellis is ready."  # services.cli.launcher.READY_LINE, not imported: it costs the launcher
READY_TIMEOUT_SECONDS = 90.0
COMMAND_TIMEOUT_SECONDS = 30.0
BUDGET_SECONDS = 0.3
INTEGRATIONS = 3


def environment(data_dir: Path) -> dict[str, str]:
    """The caller's environment without TRELLIS_*, OTEL_* or proxies; every service on a free port."""
    # PYTHONDONTWRITEBYTECODE would make every run compile Trellis's modules again; the warm-up
    # run leaves their bytecode, as any installation has.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TRELLIS_", "OTEL_")) and not k.lower().endswith("_proxy")
           and k != "PYTHONDONTWRITEBYTECODE"}
    identity, registry, webhooks, logs, nats, edge = free_ports(6)
    env.update({
        "TRELLIS_DATA_DIR": str(data_dir),
        "TRELLIS_IDENTITY_ADDR": f"127.0.0.1:{identity}", "TRELLIS_REGISTRY_ADDR": f"127.0.0.1:{registry}",
        "TRELLIS_WEBHOOKS_ADDR": f"127.0.0.1:{webhooks}", "TRELLIS_LOGS_ADDR": f"127.0.0.1:{logs}",
        "TRELLIS_NATS_URL": f"nats://127.0.0.1:{nats}", "TRELLIS_EDGE_ADDR": f"127.0.0.1:{edge}",
        "TRELLIS_EDGE_PUBLIC_URL": f"http://127.0.0.1:{edge}",
    })
    return env


@contextlib.contextmanager
def running_suite(root: Path, env: dict[str, str]) -> Iterator[None]:
    """`trellis up` until the block ends (SIGINT, as Ctrl-C; SIGKILL if it does not stop)."""
    out = root / "up.out"
    with open(out, "wb") as stdout, open(root / "up.err", "wb") as stderr:
        up = subprocess.Popen([str(TRELLIS), "up", "--no-example-upstream"], env=env, cwd=root,
                              stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while READY_LINE not in out.read_text(errors="replace"):
            if up.poll() is not None:
                raise RuntimeError(f"`trellis up` exited with {up.returncode}; see {root}/up.err")
            if time.monotonic() > deadline:
                raise TimeoutError(f"`trellis up` was not ready after {READY_TIMEOUT_SECONDS:.0f} s")
            time.sleep(0.1)
        yield
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()


def trellis(env: dict[str, str], *argv: str) -> str:
    done = subprocess.run([str(TRELLIS), *argv], env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS)
    if done.returncode != 0:
        raise RuntimeError(f"trellis {' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def seed(env: dict[str, str]) -> list[str]:
    """INTEGRATIONS integrations requested by alice; the first approved and activated by bob."""
    ids = []
    for n in range(INTEGRATIONS):
        out = trellis(env, "--actor", "alice", "integrations", "create", "--vendor", "sap", "--name", f"bench {n}",
                      "--description", "bench.cli", "--owner", "alice", "--scope", "inventory:read")
        ids.append(re.search(r"\bint_[0-9a-z]+", out).group(0))  # type: ignore[union-attr]
    trellis(env, "--actor", "bob", "integrations", "approve", ids[0])
    trellis(env, "--actor", "bob", "integrations", "activate", ids[0])
    return ids


@dataclass
class Runs:
    """Wall-clock and CPU (user + system) seconds of each run of one command."""

    label: str
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def run(self, argv: Sequence[str], env: dict[str, str], expect: Sequence[str] = ()) -> None:
        """One new process running `argv` to its exit, which must be 0 with `expect` in its output."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0 or not all(e in done.stdout for e in expect):
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode} without the expected output: {done.stderr.strip()}")
        self.wall.append(wall)
        self.cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)

    def line(self) -> str:
        def figures(values: list[float]) -> str:
            ordered = sorted(values)
            p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
            return f"{statistics.median(ordered) * 1000:8.0f} {ordered[0] * 1000:8.0f} {p90 * 1000:8.0f}"

        return f"{self.label:<28} {figures(self.wall)}   {figures(self.cpu)}"


def import_costs(env: dict[str, str], expect: Sequence[str]) -> list[tuple[str, float]]:
    """Milliseconds of import time (`python -X importtime`, self times summed) per top-level
    package in one run of the command, largest first."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "services.cli", "integrations", "list"],
                          env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS)
    if done.returncode != 0 or not all(e in done.stdout for e in expect):
        raise RuntimeError(f"the -X importtime run failed: {done.stderr[-500:]}")
    totals: dict[str, float] = {}
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s+(\S+)", line)
        if match:
            name = match.group(2)
            top = ".".join(name.split(".")[:2]) if name.startswith("services.") else name.split(".")[0]
            totals[top] = totals.get(top, 0.0) + int(match.group(1)) / 1000
    return sorted(totals.items(), key=lambda item: -item[1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cli", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each command (default 20)")
    args = parser.parse_args(argv)
    runs = max(3, min(args.runs, 200))
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        root = Path(tmp)
        env = environment(root / "data")
        with running_suite(root, env):
            ids = seed(env)
            baseline_argv, command_argv = [sys.executable, "-c", "pass"], [str(TRELLIS), "integrations", "list"]
            baseline, command = Runs("python -c pass"), Runs("trellis integrations list")
            Runs("warm-up").run(baseline_argv, env)
            Runs("warm-up").run(command_argv, env, ids)  # leaves bytecode; the services' first call
            for _ in range(runs):
                baseline.run(baseline_argv, env)
                command.run(command_argv, env, ids)
            imports = import_costs(env, ids)
    print(f"{runs} runs each, alternating, every one a new process (milliseconds)\n")
    print(f"{'':<28} {'wall clock':^26}   {'CPU (user + system)':^26}")
    print(f"{'':<28} {'median':>8} {'fastest':>8} {'p90':>8}   {'median':>8} {'fastest':>8} {'p90':>8}")
    print(baseline.line())
    print(command.line())
    wall, cpu = statistics.median(command.wall), statistics.median(command.cpu)
    print(f"\nratio of medians (command / interpreter start): wall {wall / statistics.median(baseline.wall):.1f}, "
          f"CPU {cpu / statistics.median(baseline.cpu):.1f}")
    print(f"budget {BUDGET_SECONDS * 1000:.0f} ms a command: median wall clock {'within' if wall < BUDGET_SECONDS else 'OVER'} it, "
          f"median CPU {'within' if cpu < BUDGET_SECONDS else 'OVER'} it (load average {os.getloadavg()[0]:.1f})")
    total = sum(ms for _, ms in imports)
    print(f"\nimports of one run (python -X importtime, self times by package): {total:.0f} ms")
    print("  " + ", ".join(f"{name} {ms:.0f}" for name, ms in imports[:10]) + f", other {sum(ms for _, ms in imports[10:]):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
