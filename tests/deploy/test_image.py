"""The Dockerfile, read statically (there is no container engine here): multi-stage, a slim
final stage without compilers, a numeric non-root user, an entrypoint that runs any service;
the entrypoint script itself, run with stand-ins for python and trellis; and the package the
image installs (non-editable), which must carry every service's migrations."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.manifests import OVERLAYS, REPO, SERVICE_PORTS, WORKLOAD_KINDS, containers, of_kind, pod_spec, render

DOCKERFILE = REPO / "Dockerfile"
ENTRYPOINT = REPO / "deploy" / "docker" / "entrypoint.sh"
COMPILERS = ("gcc", "g++", "build-essential", "clang", "make", "cc ", "libc6-dev", "python3-dev")


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            lines.append(current)
            current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(base, name))
        elif not stages:
            if keyword == "ARG":
                key, _, default = rest.partition("=")
                args[key.strip()] = default.strip()
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())[1]


def test_the_image_is_built_in_stages_and_the_final_one_is_slim_python(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    final = stages[-1]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?(@sha256:[0-9a-f]{64})?", final.base), final.base
    copies = final.all("COPY")
    assert any(f"--from={stages[0].name}" in c and "/opt/venv" in c for c in copies), "the venv comes from the builder"


def test_the_final_stage_has_no_compilers_and_installs_nothing(stages: list[Stage]) -> None:
    final = stages[-1]
    for command in final.all("RUN"):
        lowered = command.lower() + " "
        assert not any(tool in lowered for tool in COMPILERS), command
        assert "apt-get install" not in lowered and "pip install" not in lowered, command


def test_the_final_stage_runs_as_a_numeric_non_root_user(stages: list[Stage]) -> None:
    users = stages[-1].all("USER")
    assert users, "USER in the final stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) > 0)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_runs_the_image_as_its_own_user(stages: list[Stage], overlay: str) -> None:
    uid = int(stages[-1].all("USER")[-1].partition(":")[0])
    for workload in of_kind(render(overlay), *WORKLOAD_KINDS):
        for container in containers(workload):
            if "trellis" in container["image"].rsplit("/", 1)[-1]:
                assert container["securityContext"]["runAsUser"] == uid
                assert pod_spec(workload)["securityContext"]["runAsUser"] == uid


def test_the_entrypoint_is_the_dispatch_script(stages: list[Stage]) -> None:
    (entrypoint,) = stages[-1].all("ENTRYPOINT")
    assert entrypoint.startswith("["), "exec form, so signals reach the service"
    target = shlex.split(entrypoint.strip("[]").replace(",", " "))[0]
    copied = [c for c in stages[-1].all("COPY") if c.split()[-1] == target]
    assert copied and "deploy/docker/entrypoint.sh" in copied[0]
    assert os.access(ENTRYPOINT, os.X_OK)


def dockerignored(path: str) -> bool:
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").lstrip("/").removeprefix("**/")
        parts = path.split("/")
        hit = any(fnmatch.fnmatch("/".join(parts[i:j]), pattern) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)
                  if i == 0 or not pattern.count("/"))
        if hit:
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_build_copies_and_drops_the_rest(stages: list[Stage]) -> None:
    sources = []
    for stage in stages:
        for copy in stage.all("COPY"):
            parts = [p for p in copy.split() if not p.startswith("--")]
            if "--from=" not in copy:
                sources += parts[:-1]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert not dockerignored(source.rstrip("/")), f"{source} is copied but .dockerignore drops it"
    for unwanted in (".venv", ".git", "tests", ".trellis", "services/identity/__pycache__", "deploy/k8s", "examples", "sap-handoff.json"):
        assert dockerignored(unwanted), unwanted


@pytest.fixture
def stand_ins(tmp_path: Path) -> dict[str, str]:
    """PATH with `python` and `trellis` that print what they were asked to run."""
    for name in ("python", "trellis"):
        script = tmp_path / name
        script.write_text(f'#!/bin/sh\necho "{name} $*"\n')
        script.chmod(0o755)
    return {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}


def run_entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env=env, timeout=10)


@pytest.mark.parametrize("service", sorted(SERVICE_PORTS))
def test_the_entrypoint_runs_each_service_by_name(stand_ins: dict[str, str], service: str) -> None:
    result = run_entrypoint(stand_ins, service)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"python -m services.{service}"


def test_the_entrypoint_runs_migrations_and_the_cli(stand_ins: dict[str, str]) -> None:
    assert run_entrypoint(stand_ins, "migrate", "registry").stdout.strip() == "trellis migrate registry"
    assert run_entrypoint(stand_ins, "migrate").stdout.strip() == "trellis migrate"
    assert run_entrypoint(stand_ins, "trellis", "keys", "rotate").stdout.strip() == "trellis keys rotate"


def test_the_entrypoint_refuses_unknown_commands(stand_ins: dict[str, str]) -> None:
    result = run_entrypoint(stand_ins, "bash")
    assert result.returncode == 64
    assert "unknown command" in result.stderr and not result.stdout
    assert run_entrypoint(stand_ins, "help").returncode == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_command_is_one_the_entrypoint_knows(stand_ins: dict[str, str], overlay: str) -> None:
    for workload in of_kind(render(overlay), *WORKLOAD_KINDS):
        for container in containers(workload):
            if "trellis" in container["image"].rsplit("/", 1)[-1]:
                assert "command" not in container, "the image's entrypoint must stay"
                assert run_entrypoint(stand_ins, *container["args"]).returncode == 0, container["args"]


def test_the_installed_package_carries_every_services_migrations_and_the_consoles_pages(tmp_path: Path) -> None:
    """The image installs the project non-editable: migrations, and the console's templates and
    static files (htmx, its style sheet and script), must be package data."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "services", source / "services", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(p.relative_to(REPO)) for p in (REPO / "services").glob("*/migrations/**/*")
                if p.is_file() and "__pycache__" not in p.parts}
    assert expected, "no migrations found"
    assert expected <= names, sorted(expected - names)
    pages = {str(p.relative_to(REPO)) for folder in ("templates", "static")
             for p in (REPO / "services" / "console" / folder).rglob("*") if p.is_file()}
    assert any(p.endswith(".html") for p in pages) and any("htmx" in p for p in pages), sorted(pages)
    assert pages <= names, sorted(pages - names)
