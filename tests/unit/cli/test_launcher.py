from pathlib import Path

from services.cli.embedded import ensure_secrets
from services.cli.launcher import SERVICES, Launcher, describe_database, implemented_services, services_with_migrations
from services.kit.natsproc import NatsServer
from services.kit.settings import Settings


def test_replicas_listen_on_the_service_port_plus_100_per_replica(tmp_path: Path) -> None:
    launcher = Launcher(Settings(data_dir=tmp_path, registry_addr="127.0.0.1:6002"), replicas=3)
    assert [launcher.address("registry", k) for k in range(3)] == ["127.0.0.1:6002", "127.0.0.1:6102", "127.0.0.1:6202"]
    assert launcher.address("identity") == "127.0.0.1:50051"


def test_nats_port_comes_from_the_nats_url_unless_given(tmp_path: Path) -> None:
    assert Launcher(Settings(data_dir=tmp_path, nats_url="nats://127.0.0.1:4999")).nats_port == 4999
    assert Launcher(Settings(data_dir=tmp_path), nats_port=5111).nats_port == 5111


def test_launcher_is_embedded_whatever_the_environment_says(tmp_path: Path) -> None:
    from services.cli.client import CliSettings

    launcher = Launcher(CliSettings(mode="production", data_dir=tmp_path))
    assert launcher.settings.mode.value == "embedded"
    assert launcher.settings.database_url("registry").endswith(f"{tmp_path.resolve()}/registry.db")


def test_children_get_the_data_dir_nats_secrets_and_their_own_address(tmp_path: Path) -> None:
    launcher = Launcher(Settings(data_dir=tmp_path / "d", registry_addr="127.0.0.1:6002"), replicas=2)
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


def test_services_start_in_dependency_order_and_only_when_implemented() -> None:
    names = [s.name for s in SERVICES]
    assert names.index("identity") < names.index("registry")
    root = Path(__file__).resolve().parents[3] / "services"
    assert [s.name for s in implemented_services()] == [n for n in names if (root / n / "main.py").is_file()]
    assert set(services_with_migrations()) <= set(names)


def test_database_descriptions_never_show_a_password() -> None:
    assert describe_database("sqlite+aiosqlite:////data/registry.db") == "/data/registry.db"
    shown = describe_database("postgresql+asyncpg://trellis:hunter2@db:5432/registry")
    assert "hunter2" not in shown and "db:5432/registry" in shown
