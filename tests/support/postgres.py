"""A throwaway PostgreSQL server from Debian's `postgresql` package, run as the `postgres` user
in a temporary directory on a free port, for the test session."""

from __future__ import annotations

import asyncio
import concurrent.futures
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg

from tests.support.ports import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} not found: install Debian's postgresql package (scripts/ensure-postgres)")
    return path


class PostgresServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="trellis-pg-"))
        self.port = free_port()
        self.user = "postgres"
        self._as_root = os.geteuid() == 0
        self._counter = 0

    def _run(self, args: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
        if self._as_root:
            pw = pwd.getpwnam("postgres")

            def demote() -> None:
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)

            kw["preexec_fn"] = demote
        return subprocess.run(args, check=True, capture_output=True, **kw)  # type: ignore[call-overload]

    def start(self) -> "PostgresServer":
        if self._as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        data = self.dir / "data"
        self._run([_bin("initdb"), "-D", str(data), "-U", self.user, "-A", "trust", "--no-sync", "-E", "UTF8"])
        self._run([
            _bin("pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"), "-w", "-t", "60", "start",
            "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                  f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
        ])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("PostgreSQL did not start")

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its asyncpg SQLAlchemy URL."""
        self._counter += 1
        name = f"{prefix}_{os.getpid()}_{self._counter}"
        # Over a connection, not by running `createdb`: a child forked while gRPC's threads run
        # in this process can die in gRPC's fork handlers (SIGABRT) before it execs. The
        # statement runs on a loop of its own in a worker thread, as a test's loop may be running.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, self._create(name)).result(timeout=60)
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{name}"

    async def _create(self, name: str) -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user=self.user, database="postgres", timeout=30)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    def stop(self) -> None:
        try:
            self._run([_bin("pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop"])
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
