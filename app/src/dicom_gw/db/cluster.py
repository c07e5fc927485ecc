"""A private PostgreSQL cluster for ``dicom-gw run`` and the test suite.

It listens on a Unix socket only (no TCP), with trust authentication limited to that socket, whose
directory only the cluster's owner (and root) can enter. PostgreSQL refuses to run as root, so when
we are root the cluster belongs to the ``postgres`` system user that Debian's package creates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL


class ClusterError(RuntimeError):
    pass


def postgres_bindir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for candidate in candidates:
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise ClusterError(
        "PostgreSQL server binaries not found: install Debian's postgresql package "
        "(make run and make test do this)"
    )


@dataclass
class LocalCluster:
    root: Path
    port: int = 5432
    database: str = "dicom_gw"
    superuser: str = "postgres"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_file(self) -> Path:
        return self.root / "postgresql.log"

    def url(self, database: str | None = None) -> URL:
        return URL.create(
            "postgresql+psycopg",
            username=self.superuser,
            database=database or self.database,
            query={"host": str(self.socket_dir), "port": str(self.port)},
        )

    def _owner(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError as exc:
            raise ClusterError("running as root needs the 'postgres' system user") from exc

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        owner = self._owner()
        command = [str(postgres_bindir() / args[0]), *args[1:]]
        if owner is not None:
            command = ["runuser", "-u", owner.pw_name, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ClusterError(
                f"{args[0]} failed: {result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def _check_reachable(self, owner: pwd.struct_passwd) -> None:
        """PostgreSQL runs as `postgres`: every directory above the cluster must let it through."""
        for directory in self.root.resolve().parents:
            info = directory.stat()
            if info.st_uid == owner.pw_uid or info.st_mode & stat.S_IXOTH:
                continue
            if info.st_gid == owner.pw_gid and info.st_mode & stat.S_IXGRP:
                continue
            raise ClusterError(
                f"the 'postgres' user cannot reach {self.root}: {directory} is closed to it. "
                "Set run.state_dir to a path under a world-traversable directory, or set "
                "database.url to an existing PostgreSQL."
            )

    def _prepare_dirs(self) -> None:
        owner = self._owner()
        if owner is not None:
            self._check_reachable(owner)
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        for path in (self.root, self.socket_dir):
            path.chmod(0o700)
            if owner is not None:
                os.chown(path, owner.pw_uid, owner.pw_gid)

    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        self._prepare_dirs()
        if self.initialised():
            return
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            self.superuser,
            "--auth-local=trust",
            "--auth-host=reject",
            "-E",
            "UTF8",
            "--no-instructions",
        )
        settings = (
            "\n# dicom-gw private cluster\n"
            "listen_addresses = ''\n"
            "unix_socket_permissions = 0700\n"
            "fsync = on\n"
            "synchronous_commit = on\n"
            "max_connections = 200\n"
            "shared_buffers = 128MB\n"
        )
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(settings)

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists() and (
            self.socket_dir / f".s.PGSQL.{self.port}"
        ).exists()

    def start(self) -> None:
        self._prepare_dirs()
        options = f"-k {self.socket_dir} -p {self.port}"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self._ensure_database()

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def _ensure_database(self) -> None:
        import psycopg

        admin = self.url("postgres").set(drivername="postgresql").render_as_string()
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')
