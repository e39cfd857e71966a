"""`trellis up`: the whole suite on one machine, in the embedded mode.

Starts a nats-server with JetStream (store under `<data dir>/nats`), migrates each service's
SQLite database under the data directory, then runs every implemented service as its own
process and waits for each to be ready (the gRPC health check; the edge's and the console's
`/readyz`). The web console comes last, with its local sign-in minting actor tokens with the
launcher's key, at the URL the summary prints (`console_url`). From a checkout it also runs the
example upstream of the five-minute tour (examples/upstream, not part of Trellis) where
examples/routes.toml, the edge's route table there, sends partners' calls.
SIGINT or SIGTERM stops the processes (newest first), then nats-server, and exits 0. A process
that exits on its own once everything is up is started again, after a pause that doubles with
each of its recent exits (`RestartPolicy`), with a line saying so and another when it serves
again; one that keeps exiting (RESTART_LIMIT times within RESTART_WINDOW_SECONDS) stops the rest
and `trellis up` exits 1. One that fails while starting stops everything at once. Everything
lives in the data directory, so a restart keeps all data.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

import services
from services.cli.embedded import EmbeddedSecrets, ensure_secrets
from services.cli.output import table
from services.kit.db import is_sqlite, migrate
from services.kit.natsproc import NatsServer
from services.cli.settings import CliSettings
from services.kit.settings import DEFAULT_PORTS, Mode, public_url_of

READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
PROBE_INTERVAL_SECONDS = 0.1
SUPERVISE_INTERVAL_SECONDS = 0.25
LOG_TAIL_LINES = 20
REPLICA_PORT_STEP = 100
READY_LINE = "Trellis is ready."
# A process that exits unexpectedly is restarted after 1 s, then 2, 4, 8 … (at most 30 s), its
# exits counted over the last RESTART_WINDOW_SECONDS; the RESTART_LIMIT-th there ends the run.
RESTART_LIMIT = 5
RESTART_WINDOW_SECONDS = 120.0
RESTART_FIRST_DELAY_SECONDS = 1.0
RESTART_MAX_DELAY_SECONDS = 30.0
PUBLIC_URL_SETTINGS = ("edge_public_url", "token_issuer", "token_url", "api_docs_url")
RUN_HEADER = "=== trellis up: starting"


@dataclass(frozen=True)
class ServiceSpec:
    """One service the launcher can run, in start order; `probe` says how readiness is seen."""

    name: str
    # "grpc": grpc.health.v1 answers SERVING; "http": GET /readyz answers 200; "tcp": the port accepts
    probe: str = "grpc"


# Start order: a service's peers start before it. Later issues add theirs here.
SERVICES = (
    ServiceSpec("identity"),
    ServiceSpec("registry"),
    ServiceSpec("webhooks"),
    ServiceSpec("logs"),
    ServiceSpec("edge", probe="http"),
    # The web console calls the four gRPC services (its /readyz: registry and NATS), not the edge.
    ServiceSpec("console", probe="http"),
)
CONSOLE = "console"

_PACKAGE_ROOT = Path(services.__file__).parent
# A checkout's examples (absent from an installed wheel): the embedded mode's route table and
# the upstream it sends the tour's routes to, on the address those routes name.
EXAMPLES_DIR = _PACKAGE_ROOT.parent / "examples"
EXAMPLE_ROUTES = EXAMPLES_DIR / "routes.toml"
EXAMPLE_UPSTREAM_ADDRESS = "127.0.0.1:8090"
EXAMPLE_UPSTREAM_LABEL = "example upstream (examples/, not part of Trellis)"


def implemented_services() -> list[ServiceSpec]:
    """The services `python -m services.<name>` runs (their package has a `__main__.py`)."""
    return [s for s in SERVICES if (_PACKAGE_ROOT / s.name / "__main__.py").is_file()]


def services_with_migrations() -> list[str]:
    return [s.name for s in SERVICES if (_PACKAGE_ROOT / s.name / "migrations" / "env.py").is_file()]


def example_upstream_available() -> bool:
    """Whether this is a checkout with the example upstream (`python -m examples.upstream`)."""
    return (EXAMPLES_DIR / "upstream" / "__main__.py").is_file()


def describe_database(url: str) -> str:
    """A database for people: the file of a SQLite URL, else the URL without its password."""
    if is_sqlite(url):
        return url.split("///", 1)[-1]
    return make_url(url).render_as_string(hide_password=True)


class LaunchError(Exception):
    """Trellis could not start or kept running; the message says what to look at."""


class Stopped(Exception):
    """A stop signal arrived while starting."""


@dataclass
class RestartPolicy:
    """When a process that exited unexpectedly starts again: `first_delay` after its first exit
    within `window` seconds, twice as long after each further one (at most `max_delay`); at the
    `limit`-th exit within the window, never: the launcher gives up."""

    limit: int = RESTART_LIMIT
    window: float = RESTART_WINDOW_SECONDS
    first_delay: float = RESTART_FIRST_DELAY_SECONDS
    max_delay: float = RESTART_MAX_DELAY_SECONDS
    exits: list[float] = field(default_factory=list)

    def record_exit(self, now: float) -> float | None:
        """The delay before the next start, or None to give up; `now` is time.monotonic()."""
        self.exits = [t for t in self.exits if now - t < self.window] + [now]
        if len(self.exits) >= self.limit:
            return None
        delay: float = min(self.max_delay, self.first_delay * 2 ** (len(self.exits) - 1))
        return delay

    @property
    def recent(self) -> int:
        return len(self.exits)


@dataclass
class Child:
    name: str
    replica: int
    address: str
    log_file: Path
    database: str
    process: subprocess.Popen[bytes]
    title: str = ""  # shown instead of the name (the example upstream says what it is)
    # How to start it again, and how its readiness shows (see ServiceSpec.probe).
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    cwd: Path | None = None
    probe: str = "tcp"
    restarts: RestartPolicy = field(default_factory=RestartPolicy)
    restart_at: float | None = None   # time.monotonic() of a restart that is due
    coming_back: bool = False         # restarted, not yet ready

    @property
    def label(self) -> str:
        if self.title:
            return self.title
        return self.name if self.replica == 0 else f"{self.name}-{self.replica}"


class Launcher:
    """Runs nats-server and the services until a signal; `run()` returns the exit code."""

    def __init__(self, settings: CliSettings, *, replicas: int = 1, nats_port: int | None = None,
                 example_upstream: bool = True, out: TextIO | None = None) -> None:
        self.data_dir = settings.data_dir.resolve()
        # The launcher is the embedded mode by definition, whatever TRELLIS_MODE says.
        self.settings = settings.model_copy(update={"mode": Mode.EMBEDDED, "data_dir": self.data_dir})
        self.replicas = replicas
        self.example_upstream = example_upstream and example_upstream_available()
        nats = urlsplit(self.settings.nats_url)
        self.nats_host = nats.hostname or "127.0.0.1"
        self.nats_port = nats_port if nats_port is not None else (nats.port or 4222)
        self.out = out or sys.stdout
        self.logs_dir = self.data_dir / "logs"
        self.nats: NatsServer | None = None
        self.children: list[Child] = []
        self.secrets: EmbeddedSecrets | None = None
        self.nats_restarts = RestartPolicy()
        self._stop = threading.Event()

    # --- the whole run ----------------------------------------------------------------------

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            with self._exclusive_data_dir():
                try:
                    self._start_all()
                    self._print_summary()
                    return self._supervise()
                except Stopped:
                    return 0
                except LaunchError as exc:
                    _report(exc)
                    return 1
                finally:
                    # Still holding the data directory: no second launcher starts meanwhile.
                    self._stop_all()
        except LaunchError as exc:  # the data directory is taken
            _report(exc)
            return 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stop.set()

    def _start_all(self) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.secrets = ensure_secrets(self.data_dir)
        if self.example_upstream and not _port_free(EXAMPLE_UPSTREAM_ADDRESS):
            raise LaunchError(f"{EXAMPLE_UPSTREAM_ADDRESS}, where examples/routes.toml sends the tour's calls, is in use: "
                              "stop what listens there, or run `trellis up --no-example-upstream`")
        self._start_nats()
        specs = implemented_services()
        for name in services_with_migrations():
            self._migrate(name)
        if self.example_upstream:
            # Before the edge, which calls it, as each service starts after the peers it calls.
            self._wait_ready(self._start_example_upstream(), "tcp")
        for spec in specs:
            for replica in range(self.replicas):
                child = self._start_service(spec, replica)
                self._wait_ready(child, spec.probe)

    def _supervise(self) -> int:
        """Until a stop signal (0): restart what exits, unless it keeps exiting (1)."""
        while not self._stop.wait(SUPERVISE_INTERVAL_SECONDS):
            if not self._watch_nats():
                return 1
            for child in self.children:
                if not self._watch(child):
                    return 1
        self._say("Stopping Trellis…")
        return 0

    def _watch(self, child: Child) -> bool:
        """One look at a child: restart it when due, say when it serves again; False: give up."""
        if child.restart_at is not None:
            if time.monotonic() >= child.restart_at:
                child.restart_at = None
                self._respawn(child)
            return True
        if child.process.poll() is not None:
            delay = self._exited(child.label, child.process, child.restarts, child.log_file)
            if delay is None:
                return False
            child.restart_at, child.coming_back = time.monotonic() + delay, False
            return True
        if child.coming_back and _probe(child.probe, child.address):
            child.coming_back = False
            self._say(f"{child.label} is back on {child.address} (pid {child.process.pid}).")
        return True

    def _watch_nats(self) -> bool:
        """nats-server, restarted in place (every service waits for it, and reconnects by itself)."""
        nats = self.nats
        if nats is None or nats.process is None or nats.process.poll() is None:
            return True
        log_file = self.logs_dir / "nats.log"
        delay = self._exited("nats-server", nats.process, self.nats_restarts, log_file)
        while delay is not None:
            if self._stop.wait(delay):
                return True  # stopping anyway
            try:
                nats.start()
            except (RuntimeError, TimeoutError):
                delay = self._exited("nats-server", nats.process, self.nats_restarts, log_file)
                continue
            assert nats.process is not None
            self._say(f"nats-server is back on {nats.host}:{nats.port} (pid {nats.process.pid}).")
            return True
        return False

    def _exited(self, label: str, process: subprocess.Popen[bytes] | None, restarts: RestartPolicy,
                log_file: Path) -> float | None:
        """An unexpected exit, said on stderr: the delay before the restart, or None to give up."""
        pid = process.pid if process is not None else "?"
        code = process.poll() if process is not None else None
        status = _exit_status(code) if code is not None else "exited"
        delay = restarts.record_exit(time.monotonic())
        if delay is None:
            print(f"error: {label} (pid {pid}) {status}, its {_ordinal(restarts.recent)} unexpected exit within "
                  f"{restarts.window:g}s; stopping the rest.\n{_tail(log_file)}", file=sys.stderr, flush=True)
            return None
        print(f"warning: {label} (pid {pid}) {status}; restarting it in {delay:g}s (exit {restarts.recent} within "
              f"{restarts.window:g}s; at {restarts.limit} Trellis stops). Its log: {log_file}", file=sys.stderr, flush=True)
        return delay

    # --- steps ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive_data_dir(self) -> Iterator[None]:
        if not self.data_dir.exists():
            # The databases hold key hashes and encrypted signing keys: owner only. An existing
            # directory (the user's choice) keeps its mode.
            self.data_dir.mkdir(parents=True)
            os.chmod(self.data_dir, 0o700)
        with open(self.data_dir / "trellis.lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LaunchError(f"another `trellis up` is already running on {self.data_dir}") from None
            lock.seek(0)
            lock.truncate()
            lock.write(f"{os.getpid()}\n")
            lock.flush()
            yield

    def _start_nats(self) -> None:
        self._say(f"Starting nats-server (JetStream) on {self.nats_host}:{self.nats_port}…")
        self.nats = NatsServer(self.data_dir / "nats", port=self.nats_port, host=self.nats_host,
                               log_file=self.logs_dir / "nats.log")
        try:
            self.nats.start()
        except (RuntimeError, TimeoutError, FileNotFoundError) as exc:
            raise LaunchError(f"nats-server did not start: {exc}\n{_tail(self.logs_dir / 'nats.log')}") from None

    def _migrate(self, name: str) -> None:
        url = self.settings.database_url(name)
        self._say(f"Migrating {name} ({describe_database(url)})…")
        try:
            migrate(name, url)
        except Exception as exc:  # noqa: BLE001 - one line for the operator, then stop cleanly
            raise LaunchError(f"migrating {name} failed: {exc}") from None

    def _start_service(self, spec: ServiceSpec, replica: int) -> Child:
        address = self.address(spec.name, replica)
        self._say(f"Starting {spec.name}{f' replica {replica}' if replica else ''} on {address}…")
        database = describe_database(self.settings.database_url(spec.name)) if spec.name in services_with_migrations() else "-"
        return self._spawn(spec.name, replica, address, database, [sys.executable, "-m", f"services.{spec.name}"],
                           self.child_environment(spec.name, replica), probe=spec.probe)

    def _start_example_upstream(self) -> Child:
        self._say(f"Starting the {EXAMPLE_UPSTREAM_LABEL} on {EXAMPLE_UPSTREAM_ADDRESS}…")
        host, _, port = EXAMPLE_UPSTREAM_ADDRESS.rpartition(":")
        # Not a Trellis service: none of Trellis's settings or secrets. It runs from the
        # checkout, where `examples` is importable.
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")} | {"PYTHONUNBUFFERED": "1"}
        return self._spawn("example-upstream", 0, EXAMPLE_UPSTREAM_ADDRESS, "- (made-up data, in memory)",
                           [sys.executable, "-m", "examples.upstream", "--host", host, "--port", port], env,
                           cwd=EXAMPLES_DIR.parent, title=EXAMPLE_UPSTREAM_LABEL, probe="tcp")

    def _spawn(self, name: str, replica: int, address: str, database: str, argv: list[str], env: dict[str, str],
               *, cwd: Path | None = None, title: str = "", probe: str = "grpc") -> Child:
        """Start one child process writing to its log file; the launcher stops it with the rest."""
        log_file = self.logs_dir / (f"{name}.log" if replica == 0 else f"{name}-{replica}.log")
        process = _popen(name, argv, env, cwd, log_file)
        child = Child(name, replica, address, log_file, database, process, title, argv=argv, env=env, cwd=cwd, probe=probe)
        self.children.append(child)
        return child

    def _respawn(self, child: Child) -> None:
        child.process = _popen(child.name, child.argv, child.env, child.cwd, child.log_file)
        child.coming_back = True
        self._say(f"Restarted {child.label} (pid {child.process.pid}); waiting for it to serve on {child.address}…")

    def _wait_ready(self, child: Child, probe: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._stop.is_set():
                raise Stopped()
            if child.process.poll() is not None:
                raise LaunchError(f"{child.label} {_exit_status(child.process.returncode)} while starting\n{_tail(child.log_file)}")
            if _probe(probe, child.address):
                return
            self._stop.wait(PROBE_INTERVAL_SECONDS)
        raise LaunchError(f"{child.label} did not become ready on {child.address} within {READY_TIMEOUT_SECONDS:.0f}s\n{_tail(child.log_file)}")

    def _stop_all(self) -> None:
        # Newest first: a service stops before the peers it calls, and NATS goes last.
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
                try:
                    child.process.wait(STOP_TIMEOUT_SECONDS)
                except subprocess.TimeoutExpired:
                    print(f"warning: {child.label} did not stop within {STOP_TIMEOUT_SECONDS:.0f}s; killing it", file=sys.stderr)
                    child.process.kill()
                    child.process.wait()
        self.children.clear()
        if self.nats is not None:
            self.nats.stop()
            self.nats = None
            self._say("Trellis stopped.")

    # --- wiring -----------------------------------------------------------------------------

    def address(self, name: str, replica: int = 0) -> str:
        """Where one replica of a service listens: replica k uses the service's port + 100*k."""
        configured = getattr(self.settings, f"{name}_addr", None) or f"127.0.0.1:{DEFAULT_PORTS[name]}"
        host, _, port = configured.rpartition(":")
        return f"{host}:{int(port) + REPLICA_PORT_STEP * replica}"

    def console_url(self, replica: int = 0) -> str:
        """Where a browser reaches one console process: TRELLIS_CONSOLE_PUBLIC_URL when it is set
        (a proxy in front of every replica), else http:// and that replica's address."""
        if "console_public_url" in self.settings.model_fields_set:
            return self.settings.console_public_url.rstrip("/")
        return public_url_of(self.address(CONSOLE, replica))

    def child_environment(self, name: str, replica: int) -> dict[str, str]:
        """The settings of one service process: this data directory, NATS, secrets, addresses."""
        assert self.secrets is not None and self.nats is not None
        env = dict(os.environ)
        env.update({
            "TRELLIS_MODE": "embedded",
            "TRELLIS_DATA_DIR": str(self.data_dir),
            "TRELLIS_NATS_URL": self.nats.url,
            "TRELLIS_NATS_STREAM_REPLICAS": "1",  # one embedded nats-server
            "TRELLIS_ACTOR_PUBLIC_KEY_FILE": str(self.secrets.public_key_file),
            "TRELLIS_ACTOR_ISSUER": self.settings.actor_issuer,
            "TRELLIS_ACTOR_AUDIENCE": self.settings.actor_audience,
            "TRELLIS_KEK": self.secrets.kek,
            "TRELLIS_AUDIT_HMAC_KEY": self.secrets.audit_hmac_key,
            "PYTHONUNBUFFERED": "1",
        })
        for spec in SERVICES:
            if hasattr(self.settings, f"{spec.name}_addr"):
                env[f"TRELLIS_{spec.name.upper()}_ADDR"] = self.address(spec.name)
        for service in services_with_migrations():
            env[f"TRELLIS_{service.upper()}_DATABASE_URL"] = self.settings.database_url(service)
        # What partners are told, derived once from the edge's address here: an edge replica
        # listens elsewhere, yet identity signs and every edge verifies the same issuer.
        for setting in PUBLIC_URL_SETTINGS:
            env[f"TRELLIS_{setting.upper()}"] = getattr(self.settings, setting)
        env[f"TRELLIS_{name.upper()}_ADDR"] = self.address(name, replica)
        if name == CONSOLE:
            # The local sign-in mints actor tokens with the key the services verify, as the CLI
            # does; the browser's address follows the console's unless TRELLIS_CONSOLE_PUBLIC_URL is set.
            env["TRELLIS_ACTOR_PRIVATE_KEY_FILE"] = str(self.secrets.private_key_file)
            env["TRELLIS_CONSOLE_PUBLIC_URL"] = self.console_url(replica)
        if name == "edge":
            # Its service identity towards identity and registry is minted with the local key
            # the services verify with; its route table is the checkout's example unless configured
            # (TRELLIS_EDGE_ROUTES_FILE, the edge's own setting, which it inherits with the rest).
            env["TRELLIS_ACTOR_PRIVATE_KEY_FILE"] = str(self.secrets.private_key_file)
            routes = env.get("TRELLIS_EDGE_ROUTES_FILE") or (str(EXAMPLE_ROUTES) if EXAMPLE_ROUTES.is_file() else "")
            if routes:
                env["TRELLIS_EDGE_ROUTES_FILE"] = routes
        return env

    # --- output -----------------------------------------------------------------------------

    def console_summary(self) -> list[str]:
        """The summary's lines about the console: its URL and where to sign in (none without it)."""
        if CONSOLE not in {s.name for s in implemented_services()}:
            return []
        urls = list(dict.fromkeys(self.console_url(k) for k in range(self.replicas)))
        also = f" (its replicas: {', '.join(urls[1:])}; they share sign-in sessions)" if urls[1:] else ""
        return [f"Administrators use the console at {urls[0]}{also} (docs/console.md).",
                f"Sign in at {urls[0]}/signin (local development sign-in): type alice, or bob to approve what "
                "alice requests, in the organisation org_default, the CLI's."]

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _print_summary(self) -> None:
        assert self.nats is not None and self.nats.process is not None and self.secrets is not None
        rows = [("nats", f"{self.nats.host}:{self.nats.port}", str(self.nats.process.pid),
                 str(self.logs_dir / "nats.log"), f"{self.data_dir / 'nats'} (JetStream store)")]
        # Trellis first; the example upstream, which is not part of it, last.
        children = sorted(self.children, key=lambda c: bool(c.title))
        rows += [(c.label, c.address, str(c.process.pid), str(c.log_file), c.database) for c in children]
        cli = "trellis" if self.data_dir == (Path.cwd() / ".trellis").resolve() else f"trellis --data-dir {self.data_dir}"
        self._say("")
        self._say("Trellis is running in embedded mode.\n")
        self._say(table(("SERVICE", "ADDRESS", "PID", "LOG", "DATABASE"), rows))
        self._say(f"\nData directory: {self.data_dir}")
        self._say(f"Secrets (actor signing key, key-encryption key, audit key): {self.secrets.directory} (0700)")
        self._say("A restart with the same data directory keeps all data.\n")
        self._say("Use the CLI from another terminal (with the same TRELLIS_* environment):")
        for example in (
            "vendors",
            "scopes",
            '--actor alice integrations create --vendor sap --name "SAP Procurement Sync" '
            '--description "Purchase orders into SAP" --owner alice --scope inventory:read,orders:write',
            "--actor bob integrations approve <id>",
            "--actor bob integrations activate <id> --handoff",
            "integrations list",
            "integrations show <id>",
            "logs query --status error --since 24h",
            "audit verify",
            "review --format markdown",
        ):
            self._say(f"  {cli} {example}")
        self._say("")
        for line in self.console_summary():
            self._say(line)
        edge = next((c for c in self.children if c.name == "edge"), None)
        if edge is not None:
            self._say(f"\nPartners call the edge at {self.settings.edge_public_url} (token: POST {self.settings.token_url}; "
                      "docs/partners.md).")
        self._say("\nPress Ctrl-C to stop.")
        self._say(READY_LINE)


def _popen(name: str, argv: list[str], env: dict[str, str], cwd: Path | None, log_file: Path) -> subprocess.Popen[bytes]:
    with open(log_file, "ab") as log:
        log.write(f"{RUN_HEADER} {name} at {dt.datetime.now(dt.timezone.utc).isoformat()} ===\n".encode())
        log.flush()
        return subprocess.Popen(
            argv, env=env, cwd=cwd,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            # Its own session: Ctrl-C reaches only the launcher, which stops children in order.
            start_new_session=True,
        )


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _report(exc: LaunchError) -> None:
    print(f"error: {exc}", file=sys.stderr, flush=True)


def _probe(kind: str, address: str) -> bool:
    if kind == "http":
        # Straight to the address: a configured HTTP proxy must not answer for a local process.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{address}/readyz", timeout=1.0) as response:
                ready: bool = response.status == 200
                return ready
        except (urllib.error.URLError, http.client.HTTPException, OSError):
            return False
    if kind == "grpc":
        with grpc.insecure_channel(address) as channel:
            try:
                response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            except grpc.RpcError:
                return False
        serving: bool = response.status == health_pb2.HealthCheckResponse.SERVING
        return serving
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def _port_free(address: str) -> bool:
    """Whether nothing listens on `address` (bound as a server would, reusing TIME_WAIT ports)."""
    host, _, port = address.rpartition(":")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines this run wrote to a log (earlier runs appended above the run's header)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    starts = [i for i, line in enumerate(text) if line.startswith(RUN_HEADER)]
    text = text[starts[-1] + 1:] if starts else text
    if not text:
        return f"(nothing in {path} from this run)"
    return f"last lines of {path}:\n" + "\n".join(f"  | {line}" for line in text[-lines:])


def _exit_status(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"
