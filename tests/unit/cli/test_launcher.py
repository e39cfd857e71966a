import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.cli import launcher as launcher_module
from services.cli.embedded import ensure_secrets
from services.cli.launcher import (EXAMPLE_ROUTES, SERVICES, Launcher, RestartPolicy, describe_database,
                                   example_upstream_available, implemented_services, services_with_migrations)
from services.cli.main import build_parser
from services.kit.natsproc import NatsServer
from services.cli.settings import CliSettings


def test_replicas_listen_on_the_service_port_plus_100_per_replica(tmp_path: Path) -> None:
    launcher = Launcher(CliSettings(data_dir=tmp_path, registry_addr="127.0.0.1:6002"), replicas=3)
    assert [launcher.address("registry", k) for k in range(3)] == ["127.0.0.1:6002", "127.0.0.1:6102", "127.0.0.1:6202"]
    assert launcher.address("identity") == "127.0.0.1:50051"


def test_nats_port_comes_from_the_nats_url_unless_given(tmp_path: Path) -> None:
    assert Launcher(CliSettings(data_dir=tmp_path, nats_url="nats://127.0.0.1:4999")).nats_port == 4999
    assert Launcher(CliSettings(data_dir=tmp_path), nats_port=5111).nats_port == 5111


def test_launcher_is_embedded_whatever_the_environment_says(tmp_path: Path) -> None:
    launcher = Launcher(CliSettings(mode="production", data_dir=tmp_path))
    assert launcher.settings.mode.value == "embedded"
    assert launcher.settings.database_url("registry").endswith(f"{tmp_path.resolve()}/registry.db")


def test_children_get_the_data_dir_nats_secrets_and_their_own_address(tmp_path: Path) -> None:
    launcher = Launcher(CliSettings(data_dir=tmp_path / "d", registry_addr="127.0.0.1:6002"), replicas=2)
    launcher.secrets = ensure_secrets(launcher.data_dir)
    launcher.nats = NatsServer(tmp_path / "nats", port=4555)
    launcher.nats.port = 4555
    env = launcher.child_environment("registry", 1)
    assert env["TRELLIS_MODE"] == "embedded"
    assert env["TRELLIS_DATA_DIR"] == str((tmp_path / "d").resolve())
    assert env["TRELLIS_NATS_URL"] == "nats://127.0.0.1:4555"
    assert env["TRELLIS_KEK"] == launcher.secrets.kek
    assert env["TRELLIS_ACTOR_PUBLIC_KEY_FILE"] == str(launcher.secrets.public_key_file)
    assert env["TRELLIS_REGISTRY_ADDR"] == "127.0.0.1:6102"
    # Peers are found at replica 0 of each service.
    assert launcher.child_environment("identity", 0)["TRELLIS_REGISTRY_ADDR"] == "127.0.0.1:6002"


def test_every_child_is_told_the_public_urls_derived_from_the_edges_base_address(tmp_path: Path) -> None:
    launcher = Launcher(CliSettings(data_dir=tmp_path / "d", edge_addr="127.0.0.1:9181"), replicas=2)
    launcher.secrets = ensure_secrets(launcher.data_dir)
    launcher.nats = NatsServer(tmp_path / "nats", port=4555)
    base = "http://127.0.0.1:9181"
    expected = {"TRELLIS_EDGE_PUBLIC_URL": base, "TRELLIS_TOKEN_ISSUER": base,
                "TRELLIS_TOKEN_URL": f"{base}/oauth/token", "TRELLIS_API_DOCS_URL": f"{base}/docs"}
    for name, replica in (("identity", 0), ("edge", 0), ("edge", 1)):
        env = launcher.child_environment(name, replica)
        assert {k: env[k] for k in expected} == expected, (name, replica)
    # The second edge listens 100 ports up, and still verifies the issuer identity signs with.
    assert launcher.child_environment("edge", 1)["TRELLIS_EDGE_ADDR"] == "127.0.0.1:9281"


def test_services_start_in_dependency_order_and_only_when_implemented() -> None:
    names = [s.name for s in SERVICES]
    assert names.index("identity") < names.index("registry")
    root = Path(__file__).resolve().parents[3] / "services"
    # Implemented: `python -m services.<name>` runs it (main.py moves to entrypoints/ in the new shape).
    assert [s.name for s in implemented_services()] == [n for n in names if (root / n / "__main__.py").is_file()]
    assert {"identity", "registry", "webhooks", "logs", "edge"} <= {s.name for s in implemented_services()}
    assert set(services_with_migrations()) <= set(names)


def test_database_descriptions_never_show_a_password() -> None:
    assert describe_database("sqlite+aiosqlite:////data/registry.db") == "/data/registry.db"
    shown = describe_database("postgresql+asyncpg://trellis:hunter2@db:5432/registry")
    assert "hunter2" not in shown and "db:5432/registry" in shown


def _launcher_with_secrets(tmp_path: Path, settings: CliSettings | None = None) -> Launcher:
    launcher = Launcher(settings or CliSettings(data_dir=tmp_path / "d"))
    launcher.secrets = ensure_secrets(launcher.data_dir)
    launcher.nats = NatsServer(tmp_path / "nats", port=4555)
    return launcher


def test_the_edge_mints_its_identity_with_the_local_key_and_routes_by_the_checkouts_examples(tmp_path: Path) -> None:
    launcher = _launcher_with_secrets(tmp_path)
    assert launcher.secrets is not None
    env = launcher.child_environment("edge", 0)
    assert env["TRELLIS_ACTOR_PRIVATE_KEY_FILE"] == str(launcher.secrets.private_key_file)
    assert env["TRELLIS_EDGE_ROUTES_FILE"] == str(EXAMPLE_ROUTES) and EXAMPLE_ROUTES.is_file()


def test_a_configured_route_table_wins_over_the_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRELLIS_EDGE_ROUTES_FILE", "/etc/trellis/routes.toml")  # the edge's setting, in its environment
    launcher = _launcher_with_secrets(tmp_path, CliSettings(data_dir=tmp_path / "d"))
    assert launcher.child_environment("edge", 0)["TRELLIS_EDGE_ROUTES_FILE"] == "/etc/trellis/routes.toml"


def test_the_example_upstream_runs_from_a_checkout_unless_declined(tmp_path: Path) -> None:
    assert example_upstream_available()  # this is a checkout
    assert Launcher(CliSettings(data_dir=tmp_path)).example_upstream
    assert not Launcher(CliSettings(data_dir=tmp_path), example_upstream=False).example_upstream
    assert build_parser().parse_args(["up"]).example_upstream
    assert not build_parser().parse_args(["up", "--no-example-upstream"]).example_upstream


class _Readyz(BaseHTTPRequestHandler):
    status = 503

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def readyz() -> Iterator[tuple[str, type[_Readyz]]]:
    handler = type("Readyz", (_Readyz,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_the_edge_is_ready_only_when_readyz_answers_200(readyz: tuple[str, type[_Readyz]]) -> None:
    address, handler = readyz
    assert not launcher_module._probe("http", address)
    handler.status = 200
    assert launcher_module._probe("http", address)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        assert not launcher_module._probe("http", f"127.0.0.1:{closed.getsockname()[1]}")


def test_a_port_something_listens_on_is_not_free() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        listening.listen()
        assert not launcher_module._port_free(address)
    assert launcher_module._port_free(address)


def test_restarts_wait_twice_as_long_after_each_recent_exit_and_stop_at_the_limit() -> None:
    policy = RestartPolicy(limit=5, window=120, first_delay=1, max_delay=30)
    assert [policy.record_exit(t) for t in (0, 10, 20, 30)] == [1, 2, 4, 8]
    assert policy.record_exit(40) is None  # the 5th exit within 120 s: give up


def test_exits_older_than_the_window_are_forgotten() -> None:
    policy = RestartPolicy(limit=3, window=60, first_delay=1, max_delay=30)
    assert [policy.record_exit(t) for t in (0, 30)] == [1, 2]
    assert policy.record_exit(100) == 1  # the exits at 0 and 30 are more than 60 s ago
    assert policy.recent == 1


def test_the_pause_before_a_restart_is_bounded() -> None:
    policy = RestartPolicy(limit=100, window=1000, first_delay=1, max_delay=30)
    assert [policy.record_exit(t) for t in range(7)] == [1, 2, 4, 8, 16, 30, 30]


def test_the_console_starts_last_once_the_services_it_calls_serve_and_is_ready_on_readyz() -> None:
    names = [s.name for s in SERVICES]
    assert "console" in [s.name for s in implemented_services()]
    assert names[-1] == "console"
    assert {s.name: s.probe for s in SERVICES}["console"] == "http"


def test_the_console_signs_in_locally_with_the_launchers_key_at_the_address_it_listens_on(tmp_path: Path) -> None:
    launcher = _launcher_with_secrets(tmp_path)
    launcher.replicas = 2
    assert launcher.secrets is not None
    env = launcher.child_environment("console", 0)
    assert env["TRELLIS_ACTOR_PRIVATE_KEY_FILE"] == str(launcher.secrets.private_key_file)
    assert env["TRELLIS_ACTOR_PUBLIC_KEY_FILE"] == str(launcher.secrets.public_key_file)
    assert (env["TRELLIS_CONSOLE_ADDR"], env["TRELLIS_CONSOLE_PUBLIC_URL"]) == ("127.0.0.1:8081", "http://127.0.0.1:8081")
    # A second console listens 100 ports up and is reached there; both find replica 0 of registry.
    env = launcher.child_environment("console", 1)
    assert (env["TRELLIS_CONSOLE_ADDR"], env["TRELLIS_CONSOLE_PUBLIC_URL"]) == ("127.0.0.1:8181", "http://127.0.0.1:8181")
    assert env["TRELLIS_REGISTRY_ADDR"] == "127.0.0.1:50052"
    # Only the processes that mint tokens hold the private key.
    assert "TRELLIS_ACTOR_PRIVATE_KEY_FILE" not in launcher.child_environment("registry", 0)


def test_the_consoles_url_follows_its_address_unless_a_public_url_is_set(tmp_path: Path) -> None:
    launcher = _launcher_with_secrets(tmp_path, CliSettings(data_dir=tmp_path / "d", console_addr="127.0.0.1:9181"))
    assert launcher.console_url() == "http://127.0.0.1:9181"
    assert launcher.child_environment("console", 0)["TRELLIS_CONSOLE_PUBLIC_URL"] == "http://127.0.0.1:9181"
    proxied = _launcher_with_secrets(tmp_path, CliSettings(data_dir=tmp_path / "d", console_public_url="https://console.test/"))
    assert proxied.child_environment("console", 0)["TRELLIS_CONSOLE_PUBLIC_URL"] == "https://console.test"


def test_the_summary_says_where_the_console_is_and_where_to_sign_in(tmp_path: Path) -> None:
    (where, sign_in) = Launcher(CliSettings(data_dir=tmp_path, console_addr="127.0.0.1:9181")).console_summary()
    assert where.startswith("Administrators use the console at http://127.0.0.1:9181 ")
    assert "http://127.0.0.1:9181/signin" in sign_in and "alice" in sign_in and "bob" in sign_in
    (where, _) = Launcher(CliSettings(data_dir=tmp_path), replicas=2).console_summary()
    assert "http://127.0.0.1:8081" in where and "http://127.0.0.1:8181" in where
