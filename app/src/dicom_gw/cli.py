"""The `dicom-gw` command: every service and every admin task of the gateway."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dicom_gw.config import ConfigInvalid, Settings, config_path, load_settings

app = typer.Typer(
    name="dicom-gw",
    help="DICOM gateway: byte-preserving C-STORE receiver, PostgreSQL index, routed forwarding.",
    no_args_is_help=True,
    add_completion=False,
    # Rich tracebacks print local variables, which may hold PHI or secrets.
    pretty_exceptions_enable=False,
)
worker_app = typer.Typer(help="Background workers.", no_args_is_help=True)
app.add_typer(worker_app, name="worker")

console = Console(stderr=True)
log = logging.getLogger("dicom_gw.cli")


class State:
    config: Path | None = None


def _settings() -> Settings:
    try:
        return load_settings(State.config)
    except ConfigInvalid as exc:
        console.print(f"[red]invalid configuration[/red] {exc.path}:")
        for error in exc.errors:
            console.print(f"  {error}")
        raise typer.Exit(2) from exc


def _logging(settings: Settings, service: str) -> None:
    from dicom_gw.log import setup_logging

    setup_logging(service, settings.logging.level, settings.logging.format)


@app.callback()
def _global(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="TOML file (default /etc/dicom-gw/gateway.toml).",
            envvar="DICOM_GW_CONFIG",
        ),
    ] = None,
) -> None:
    State.config = config


@app.command("check-config")
def check_config() -> None:
    """Validate the configuration and print every error with its key."""
    settings = _settings()
    path = config_path(State.config)
    source = str(path) if path.exists() else "built-in defaults (no file)"
    console.print(f"[green]configuration is valid[/green]: {source}")
    if not settings.database.url:
        console.print("note: database.url is empty; only `dicom-gw run` can start without one")
    referenced = {
        "database.password_file": settings.database.password_file,
        "security.phi_key_file": settings.security.phi_key_file,
        "dicom.tls.certificate": settings.dicom.tls.certificate,
        "dicom.tls.private_key": settings.dicom.tls.private_key,
        "dicom.tls.ca_certificate": settings.dicom.tls.ca_certificate,
    }
    for key, file in referenced.items():
        if file is not None and not file.exists():
            console.print(f"warning: {key}: {file} does not exist (yet)")


@app.command()
def migrate() -> None:
    """Bring the database schema to the newest revision."""
    from dicom_gw.db.engine import database_url
    from dicom_gw.db.migrate import current_revision, upgrade

    settings = _settings()
    url = database_url(settings)
    upgrade(url)
    console.print(f"database at revision {current_revision(url)}")


@app.command()
def scp(
    receiver_index: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run the C-STORE SCP: recover orphaned files, then supervise the receiver processes."""
    settings = _settings()
    if receiver_index is not None:
        from dicom_gw.dicom.scp import serve

        serve(settings, receiver_index)
        return

    from dicom_gw.db.engine import connect
    from dicom_gw.dicom.storage import Storage
    from dicom_gw.recovery import recover_incoming
    from dicom_gw.supervisor import Child, Supervisor, self_command

    _logging(settings, "scp")
    storage = Storage(settings.storage.root, fsync=settings.storage.fsync)
    storage.prepare()
    storage.tmp_dir.mkdir(parents=True, exist_ok=True)
    swept = storage.sweep_tmp()
    if swept:
        log.warning("removed %d partial receipt(s) left by an earlier run", swept)
    try:
        with connect(settings, autocommit=True) as conn:
            recover_incoming(conn, storage)
    except Exception as exc:  # the ingest worker retries recovery; receiving must not wait
        log.error("start-up recovery skipped: %s", type(exc).__name__)
    count = settings.dicom.receiver_processes()
    children = [
        Child(f"scp.{i}", self_command(State.config, "scp", "--receiver-index", str(i)))
        for i in range(count)
    ]
    Supervisor(children).run()


@worker_app.command("ingest")
def worker_ingest() -> None:
    """Index received files: claim ingest jobs, parse headers, upsert the index."""
    import signal

    from dicom_gw.workers.ingest import IngestWorker

    settings = _settings()
    _logging(settings, "ingest")
    worker = IngestWorker(settings)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())
    signal.signal(signal.SIGINT, lambda *_: worker.stop.set())
    worker.run()


@app.command()
def run() -> None:
    """Every service in one supervised process tree, for a first look on one machine.

    With no database.url configured, a private PostgreSQL cluster is created under
    run.state_dir and stopped again on exit.
    """
    from dicom_gw.db.cluster import LocalCluster
    from dicom_gw.db.migrate import upgrade
    from dicom_gw.security.phi import create_phi_key
    from dicom_gw.supervisor import Child, Supervisor, self_command

    settings = _settings()
    _logging(settings, "run")
    state_dir = settings.run.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    create_phi_key(settings.security.phi_key_file)

    cluster: LocalCluster | None = None
    env: dict[str, str] = {}
    if not settings.database.url:
        cluster = LocalCluster(state_dir / "postgres")
        cluster.init()
        cluster.start()
        env["DICOM_GW_DATABASE__URL"] = cluster.url().render_as_string()
        os.environ.update(env)
        settings = _settings()
        log.info("private PostgreSQL cluster started", extra={"socket": str(cluster.socket_dir)})
    try:
        from dicom_gw.db.engine import database_url

        upgrade(database_url(settings))
        children = [Child("scp", self_command(State.config, "scp"), env)]
        children += [
            Child(f"ingest.{i}", self_command(State.config, "worker", "ingest"), env)
            for i in range(settings.ingest.workers)
        ]
        console.print(
            f"[green]dicom-gw running[/green]: DICOM AE {settings.dicom.ae_title} on port "
            f"{settings.dicom.port}; storage {settings.storage.root}. Ctrl-C stops everything."
        )
        Supervisor(children).run()
    finally:
        if cluster is not None:
            cluster.stop()


def main() -> None:
    app()
