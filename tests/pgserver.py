"""A real PostgreSQL server for the tests, from Debian's `postgresql` package: its own
cluster in a temporary folder, on a free loopback port, its socket in that folder.

    with PgServer() as pg:           # initdb + pg_ctl start
        url = pg.new_database()      # postgresql://postgres:PASS@127.0.0.1:PORT/fota_N
        pg.restart()                 # a PostgreSQL restart (clients must reconnect)
    # stopped, folder removed

Run as root (CI, this machine) the server runs as the `postgres` user (`runuser -u
postgres --`); otherwise as the current user. Password logins over TCP (scram), so a
wrong password is refused as it would be in production.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

MISSING = "PostgreSQL's initdb not found: install postgresql (.ci/run does)"


def pg_bin() -> Path:
    """The newest /usr/lib/postgresql/*/bin (Debian), else the folder of `initdb` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    if which:
        return Path(which).parent
    raise RuntimeError(MISSING)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One throw-away PostgreSQL cluster (see the module's docstring)."""

    def __init__(self) -> None:
        self.bin = pg_bin()
        self.password = secrets.token_hex(12)
        self.user = "postgres"
        self.port = 0
        self.root = Path(tempfile.mkdtemp(prefix="fota-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._names = itertools.count(1)
        self._as_root = os.geteuid() == 0
        if self._as_root:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              cwd=self.root)
        if proc.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}): "
                               f"{proc.stderr.strip()}\n{tail}")
        return proc

    def init(self) -> PgServer:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as_root:
            shutil.chown(pwfile, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync")
        pwfile.unlink()
        return self

    def start(self) -> PgServer:
        """Start (again, on the same port once it has one). The first start tries a few
        free ports: another test's process may take the one picked before the server
        binds it."""
        for attempt in range(1 if self.port else 3):
            port = self.port or free_port()
            opts = (f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1 "
                    "-c fsync=off -c full_page_writes=off -c max_connections=200")
            try:
                self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.log),
                          "-w", "-t", "60", "start")
            except RuntimeError:
                if self.port or attempt == 2:
                    raise
                continue
            self.port = port
            return self
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: clients are disconnected; `immediate`: a crash)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def url(self, database: str = "postgres", password: str | None = None,
            user: str | None = None) -> str:
        pw = self.password if password is None else password
        return f"postgresql://{user or self.user}:{pw}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database: its URL."""
        import psycopg

        name = f"fota_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def close(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgServer:
        try:
            return self.init().start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.close()
