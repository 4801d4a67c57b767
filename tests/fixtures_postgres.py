"""A real PostgreSQL server (Debian's postgresql package) for the tests of the shared history store.

``initdb`` into a temporary folder, ``postgres`` on a private Unix socket folder and a free port with
no TCP listener (``listen_addresses=''``), one database per test session; stopped by its PID (SIGINT =
fast shutdown, then SIGKILL after a deadline). As root the server runs as the ``postgres`` user (it
refuses root), which is given the temporary folder.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures_fleet import free_port

START_DEADLINE = 60.0


def pg_bin(name: str) -> str:
    """Path of a PostgreSQL server program (newest Debian version installed)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"{name} not found under /usr/lib/postgresql/*/bin: install Debian's postgresql "
                           "package (scripts/system-deps.sh)")
    return found[-1]


@dataclass
class PostgresServer:
    root: str
    socket_dir: str
    port: int
    proc: subprocess.Popen

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def start_postgres() -> PostgresServer:
    """initdb + postgres on a private socket; returns when it accepts connections."""
    import psycopg

    root = tempfile.mkdtemp(prefix="eb-pg-")
    run_as: dict = {}
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        os.chmod(root, 0o700)
        run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    data, sockets = os.path.join(root, "data"), os.path.join(root, "sock")
    log = os.path.join(root, "server.log")
    subprocess.run([pg_bin("initdb"), "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"],
                   check=True, capture_output=True, timeout=120, cwd=root, **run_as)
    subprocess.run(["mkdir", "-m", "0700", sockets], check=True, timeout=10, **run_as)
    port = free_port()
    with open(log, "ab") as fh:
        proc = subprocess.Popen([pg_bin("postgres"), "-D", data, "-k", sockets, "-p", str(port),
                                 "-c", "listen_addresses=", "-c", "fsync=off", "-c", "max_connections=40"],
                                stdout=fh, stderr=subprocess.STDOUT, cwd=root, **run_as)
    server = PostgresServer(root, sockets, port, proc)
    deadline = time.monotonic() + START_DEADLINE
    while True:
        try:
            with psycopg.connect(host=sockets, port=port, user="postgres", dbname="postgres", connect_timeout=5):
                return server
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                text = Path(log).read_text(errors="replace")[-2000:]
                shutil.rmtree(root, ignore_errors=True)
                raise RuntimeError(f"postgres did not start: {text}") from None
            time.sleep(0.2)


@pytest.fixture(scope="session")
def postgres():
    """A running PostgreSQL server (see module docstring); removed after the session."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def pg_database(postgres, request) -> str:
    """A fresh database on the session's server; returns its URL."""
    import psycopg

    name = "eb_" + request.node.name.lower().replace("[", "_").replace("]", "").replace("-", "_")[:50]
    with psycopg.connect(host=postgres.socket_dir, port=postgres.port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres.url(name)
