"""A throwaway PostgreSQL server for the tests, from the machine's own PostgreSQL binaries.

Debian's `postgresql` package puts them in /usr/lib/postgresql/<version>/bin; `pg_ctl` on the
PATH works too. The server listens on 127.0.0.1 at a free port, trusts local connections and
lives in a temporary folder that is deleted afterwards. PostgreSQL refuses to run as root, so
under root (containers, CI) it runs as `nobody`.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

INSTALL_HINT = (
    "the PostgreSQL tests need PostgreSQL's server binaries (initdb, pg_ctl): "
    "`apt install postgresql` (Debian/Ubuntu) or `brew install postgresql`"
)


def find_binaries() -> Path | None:
    """The folder with initdb, pg_ctl and createdb (pg_ctl on the PATH may be a lone link)."""
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += [
        Path(found).parent
        for found in sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version)[::-1]
    ]
    for folder in candidates:
        if all((folder / program).exists() for program in ("initdb", "pg_ctl", "createdb")):
            return folder
    return None


def _version(path: str) -> float:
    try:
        return float(Path(path).parent.parent.name)
    except ValueError:
        return 0.0


class PostgresServer:
    def __init__(self, binaries: Path, durable: bool = False):
        """`durable`: fsync on, as in production (benchmarks); tests run without it."""
        self.binaries = binaries
        self.durable = durable
        self.folder = Path(tempfile.mkdtemp(prefix="hashtag-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        as_root = hasattr(os, "geteuid") and os.geteuid() == 0
        self._user = {"user": "nobody"} if as_root else {}
        if as_root:
            shutil.chown(self.folder, "nobody")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w",
            "start",
        )  # fmt: skip

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """A fresh, empty database on this server; returns its URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run(
            [str(self.binaries / program), *args], capture_output=True, text=True, **self._user
        )
        if result.returncode != 0:
            log = self.folder / "log"
            server_log = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{program} failed: {result.stderr}{result.stdout}{server_log}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
