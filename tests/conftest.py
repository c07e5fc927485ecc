"""Shared fixtures: a throwaway PostgreSQL cluster per session, a migrated database per test, and
a gateway started as real processes (`dicom-gw scp`, `dicom-gw worker ingest`) on free ports."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dicom_gw.db.cluster import LocalCluster
from dicom_gw.db.migrate import upgrade
from dicom_gw.security.phi import create_phi_key
from dicom_gw.security.tokens import create_key_file
from tests.support import dicom_env, wait_for

TEMPLATE_DB = "dicom_gw_template"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[LocalCluster]:
    root = Path(tempfile.mkdtemp(prefix="dicomgw-pg-"))
    cluster = LocalCluster(root, port=free_port(), database=TEMPLATE_DB)
    cluster.init()
    cluster.start()
    upgrade(cluster.url())
    yield cluster
    cluster.stop()
    shutil.rmtree(root, ignore_errors=True)


_db_counter = itertools.count()


@pytest.fixture
def db_url(pg_cluster: LocalCluster) -> Iterator[str]:
    """A fresh migrated database per test, copied from the migrated template (fast)."""
    name = f"t_{os.getpid()}_{next(_db_counter)}"
    admin = pg_cluster.url("postgres").set(drivername="postgresql").render_as_string()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
    yield pg_cluster.url(name).render_as_string()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sql(db_url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    url = db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


@dataclass
class Gateway:
    """A gateway under test: its config, storage and processes."""

    root: Path
    db_url: str
    port: int
    ae_title: str = "DICOM_GW"
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "gateway.toml"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    def write_config(self) -> None:
        sections: dict[str, dict[str, Any]] = {
            "dicom": {
                "ae_title": self.ae_title,
                "bind_address": "127.0.0.1",
                "port": self.port,
                "processes": 2,
                "allowed_callers": [
                    {"ae_title": "STORESCU"},
                    {"ae_title": "ECHOSCU"},
                    {"ae_title": "TESTSCU"},
                ],
            },
            "storage": {"root": str(self.storage)},
            "database": {"url": self.db_url},
            # nice 0: on a loaded test machine a nice-10 worker can starve past a test's
            # deadline; test_run and Molecule check the shipped default.
            "ingest": {
                "poll_interval_seconds": 1,
                "lease_seconds": 3,
                "recovery_grace_seconds": 0,
                "nice": 0,
            },
            "forward": {"poll_interval_seconds": 0.5, "lease_seconds": 3},
            "dbpool": {"flush_interval_seconds": 0.2},
            "security": {"phi_key_file": str(self.root / "secrets" / "phi.key")},
            "auth": {"jwt_key_file": str(self.root / "secrets" / "jwt.key")},
            "logging": {"format": "text", "level": "INFO"},
        }
        for section, values in self.options.items():
            sections.setdefault(section, {}).update(values)
        self.config.write_text(_to_toml(sections))
        create_phi_key(self.root / "secrets" / "phi.key")
        create_key_file(self.root / "secrets" / "jwt.key")

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "dicom_gw", "--config", str(self.config), *args]

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("ab")
        process = subprocess.Popen(self.command(*args), stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def start_scp(self) -> None:
        self.start("scp", "scp")
        wait_for(self.echo_ok, timeout=30, what="the SCP answering C-ECHO")

    def start_ingest(self, name: str = "ingest") -> subprocess.Popen[bytes]:
        return self.start(name, "worker", "ingest")

    def start_forward(self, name: str = "forward") -> subprocess.Popen[bytes]:
        return self.start(name, "worker", "forward")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a `dicom-gw` admin command against this gateway, as an operator would."""
        return subprocess.run(self.command(*args), capture_output=True, text=True, check=False)

    def add_destination(self, name: str, ae_title: str, port: int, *options: str) -> None:
        result = self.cli(
            "destination",
            "add",
            name,
            "--ae-title",
            ae_title,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *options,
        )
        assert result.returncode == 0, result.stderr

    def add_rule(self, name: str, *options: str) -> None:
        result = self.cli("rule", "add", name, *options)
        assert result.returncode == 0, result.stderr

    def delivery_states(self) -> dict[str, int]:
        rows = self.sql("SELECT state::text, count(*) FROM deliveries GROUP BY state")
        return {state: count for state, count in rows}

    def echo_ok(self, calling: str = "ECHOSCU", called: str | None = None) -> bool:
        result = subprocess.run(
            [
                "echoscu",
                "-aet",
                calling,
                "-aec",
                called or self.ae_title,
                "127.0.0.1",
                str(self.port),
            ],
            env=dicom_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        return result.returncode == 0

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(name, None)
        if process and process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        return sql(self.db_url, query, params)

    def wait_indexed(self, count: int, timeout: float = 60) -> None:
        wait_for(
            lambda: (
                self.sql("SELECT count(*) FROM ingest_jobs WHERE state IN ('done','quarantined')")[
                    0
                ][0]
                >= count
            ),
            timeout=timeout,
            what=f"{count} ingest jobs finished",
        )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list) and all(isinstance(v, dict) for v in value) and value:
        raise TypeError("arrays of tables are written by _to_toml")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(type(value))


def _to_toml(sections: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        tables = {}
        for key, value in values.items():
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                tables[key] = value
            elif isinstance(value, dict):
                tables[key] = [value]
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, items in tables.items():
            for item in items:
                header = (
                    f"[[{section}.{key}]]"
                    if isinstance(values[key], list)
                    else f"[{section}.{key}]"
                )
                lines.append(header)
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in item.items())
    return "\n".join(lines) + "\n"


@pytest.fixture
def make_gateway(tmp_path: Path, db_url: str) -> Iterator[Callable[..., Gateway]]:
    gateways: list[Gateway] = []

    def factory(**options: dict[str, Any]) -> Gateway:
        gateway = Gateway(
            root=tmp_path / f"gw{len(gateways)}", db_url=db_url, port=free_port(), options=options
        )
        gateway.root.mkdir()
        gateway.write_config()
        gateways.append(gateway)
        return gateway

    yield factory
    for gateway in gateways:
        gateway.stop_all()


@pytest.fixture
def gateway(make_gateway: Callable[..., Gateway]) -> Gateway:
    """A running gateway: SCP and one ingest worker."""
    gw = make_gateway()
    gw.start_scp()
    gw.start_ingest()
    return gw
