"""A real PostgreSQL server for tests: a fresh cluster (initdb) in a temporary folder, on 127.0.0.1.

The Debian package provides the binaries (`apt-get install postgresql`; .ci/run installs it when
missing). PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user the
package creates. Trust authentication on loopback, fsync off (a test cluster, thrown away after).

    with PostgresServer() as server:
        server.create_database("thinkmill")
        spec = server.catalog_spec("thinkmill")   # 'postgres:dbname=thinkmill host=127.0.0.1 port=... user=postgres'
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def postgres_bin() -> Path | None:
    """The folder of initdb/pg_ctl/psql: PATH first, then Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


class PostgresServer:
    def __init__(self):
        self.bin = postgres_bin()
        if self.bin is None:
            pytest.fail("PostgreSQL is not installed: `apt-get install -y postgresql` (.ci/run does it on a fresh machine)")
        self.as_root = os.geteuid() == 0
        self.user = "postgres"
        self.folder = Path(tempfile.mkdtemp(prefix="thinkmill-pg-"))
        self.port = _free_port()

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = ["runuser", "-u", self.user, "--", *args] if self.as_root else list(args)
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> "PostgresServer":
        if self.as_root:
            shutil.chown(self.folder, self.user)
        data = self.folder / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", self.user, "-A", "trust", "--no-sync")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        result = self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.folder / "server.log"),
                           "-w", "-t", "60", "start", check=False)
        if result.returncode != 0:
            log = (self.folder / "server.log").read_text() if (self.folder / "server.log").exists() else ""
            raise RuntimeError(f"PostgreSQL did not start on port {self.port}: {result.stderr}\n{log[-2000:]}")
        return self

    def create_database(self, name: str) -> None:
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name)

    def catalog_spec(self, database: str) -> str:
        return f"postgres:dbname={database} host=127.0.0.1 port={self.port} user={self.user}"

    def psql(self, database: str, sql: str) -> str:
        return self._run(str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-At",
                         "-d", database, "-c", sql).stdout

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres():
    with PostgresServer() as server:
        yield server
