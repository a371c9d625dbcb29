"""A throw-away PostgreSQL server for the tests: initdb in a temporary folder, 127.0.0.1, a free port.

Run as root (CI, containers), the server runs as the `postgres` user, since PostgreSQL refuses
to run as root. Tests that use it are skipped, with the reason, when the binaries are absent
(install them with scripts/setup.sh --test, i.e. Debian's `postgresql` package).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest


def find_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, or Debian's /usr/lib/postgresql/<ver>/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """initdb + pg_ctl on a private data folder; `url(db)` gives a SQLAlchemy URL."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="gentune-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            try:
                pw = pwd.getpwnam("postgres")  # created by Debian's postgresql package
            except KeyError:
                pytest.skip(
                    "running as root, PostgreSQL needs a 'postgres' user to run as; "
                    "install Debian's postgresql package (scripts/setup.sh --test)"
                )
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.as_user, str(self.bin_dir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def init(self) -> PostgresServer:
        # trust auth on a private loopback port; no fsync: a test server need not survive a crash
        self._run("initdb", "-D", str(self.data), "-U", "gentune", "-A", "trust", "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> None:
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        result = self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"postgres did not start: {result.stderr}\n{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def log_tail(self) -> str:
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return ""

    def url(self, db: str = "postgres", driver: str = "postgresql") -> str:
        return f"{driver}://gentune@127.0.0.1:{self.port}/{db}"

    def create_database(self) -> str:
        """A fresh database for one test; returns its plain postgresql:// URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=gentune dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres():
    """A running PostgreSQL server for the module's tests, stopped and deleted at the end."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL binaries (initdb, pg_ctl) are not installed; "
            "install them with scripts/setup.sh --test (Debian package postgresql)"
        )
    pytest.importorskip("psycopg", reason="psycopg (a gentune dependency) is not installed")
    server = PostgresServer(bin_dir).init()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def wait_until(condition, timeout: float, what: str, every: float = 0.1):
    """Poll `condition()` until it returns something truthy; fail the test naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # noqa: BLE001 - the study may not exist yet, or the server restarts
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
