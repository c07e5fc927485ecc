"""The `dicom-gw` command: every service and every admin task of the gateway."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Protocol

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
destination_app = typer.Typer(
    help="Destinations: where instances are forwarded.", no_args_is_help=True
)
app.add_typer(destination_app, name="destination")
rule_app = typer.Typer(
    help="Routing rules: which destinations an instance goes to.", no_args_is_help=True
)
app.add_typer(rule_app, name="rule")
user_app = typer.Typer(help="User accounts of the web UI and API.", no_args_is_help=True)
app.add_typer(user_app, name="user")
queue_app = typer.Typer(
    help="The delivery queue: list, retry, cancel, replay.", no_args_is_help=True
)
app.add_typer(queue_app, name="queue")

console = Console(stderr=True)


def _stdout() -> Console:
    """Tables for people; piped into a file or a script, wide enough not to wrap values."""
    return Console() if sys.stdout.isatty() else Console(width=240)


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
    from dicom_gw.db.migrate import current_revision

    settings = _settings()
    url = database_url(settings)
    _upgrade(settings)
    console.print(f"database at revision {current_revision(url)}")


def _upgrade(settings: Settings) -> None:
    """The schema to head, then the derived data a migration cannot write without the PHI key."""
    from dicom_gw.db.engine import connect, database_url
    from dicom_gw.db.migrate import upgrade
    from dicom_gw.security.phi import load_phi_key
    from dicom_gw.services.patients import backfill_name_grams, names_to_hash

    upgrade(database_url(settings))
    with connect(settings, autocommit=True) as conn:
        # The key is read only when there is something to hash: a new install has no rows.
        if names_to_hash(conn):
            filled = backfill_name_grams(conn, load_phi_key(settings.security.phi_key_file))
            log.info("patient name search index filled", extra={"patients": filled})


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
            # With the grace, as in the ingest workers: receivers on other hosts sharing this
            # storage keep running and may be between a file's rename and its record.
            recover_incoming(conn, storage, settings.ingest.recovery_grace_seconds)
    except Exception as exc:  # the ingest worker retries recovery; receiving must not wait
        log.error("start-up recovery skipped: %s", type(exc).__name__)
    count = settings.dicom.receiver_processes()
    children = [
        Child(f"scp.{i}", self_command(State.config, "scp", "--receiver-index", str(i)))
        for i in range(count)
    ]
    Supervisor(children).run()


class _Worker(Protocol):
    stop: threading.Event

    def run(self) -> None: ...


def _run_worker(service: str, build: Callable[[Settings], _Worker]) -> None:
    settings = _settings()
    _logging(settings, service)
    worker = build(settings)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())
    signal.signal(signal.SIGINT, lambda *_: worker.stop.set())
    worker.run()


@worker_app.command("ingest")
def worker_ingest() -> None:
    """Index received files: claim ingest jobs, parse headers, upsert the index, route."""
    from dicom_gw.workers.ingest import IngestWorker

    def build(settings: Settings) -> IngestWorker:
        _lower_priority(settings.ingest.nice)  # after logging is set up, so a refusal is logged
        return IngestWorker(settings)

    _run_worker("ingest", build)


def _lower_priority(nice: int) -> None:
    """Raise this process's nice value to ``nice``, unless its service manager already has.

    The systemd units set ``Nice=`` themselves: their system call filter refuses setpriority.
    """
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) < nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as exc:
        log.warning("could not lower the CPU priority to nice %d: %s", nice, exc.strerror)


@worker_app.command("forward")
def worker_forward() -> None:
    """Send deliveries to their destinations, with retries and dead-lettering."""
    from dicom_gw.workers.forward import Forwarder

    _run_worker("forward", Forwarder)


@worker_app.command("dbpool")
def worker_dbpool() -> None:
    """Load spooled ingest events and metrics into the database in batches."""
    from dicom_gw.workers.dbpool import DbPoolWorker

    _run_worker("dbpool", DbPoolWorker)


@worker_app.command("cleanup")
def worker_cleanup(
    once: Annotated[bool, typer.Option(help="One pass, then exit (for a systemd timer).")] = False,
) -> None:
    """Delete delivered files after retention; under disk pressure, oldest delivered first."""
    from dicom_gw.db.engine import connect
    from dicom_gw.workers.cleanup import CleanupWorker

    if once:
        settings = _settings()
        _logging(settings, "cleanup")
        with connect(settings, autocommit=True) as conn:
            deleted = CleanupWorker(settings).run_once(conn)
        console.print(f"deleted {deleted} file(s)")
        return
    _run_worker("cleanup", CleanupWorker)


@app.command()
def api() -> None:
    """Serve the REST API (and the built UI when api.ui_dir is set) with gunicorn."""
    from dicom_gw.api.server import ApiServer

    settings = _settings()
    _logging(settings, "api")
    ApiServer(settings).run()


@user_app.command("add")
def user_add(
    username: str,
    role: Annotated[list[str], typer.Option("--role", help="admin, operator, viewer, auditor")],
    password_file: Annotated[
        Path | None, typer.Option(help="Read the password from this file; default: generate one.")
    ] = None,
) -> None:
    """Create a user (the first admin, typically). A generated password is printed once."""
    import secrets

    from dicom_gw import audit
    from dicom_gw.services import ServiceError
    from dicom_gw.services.accounts import create_user

    settings = _settings()
    password = password_file.read_text().strip() if password_file else secrets.token_urlsafe(18)
    try:
        with _db() as conn:
            user = create_user(conn, settings.auth, username, password, role)
            audit.record(
                conn,
                audit.Actor(_operator(), [], None),
                "user.create",
                "success",
                f"user:{user.id}",
                {"username": username, "roles": user.roles, "via": "cli"},
            )
    except ServiceError as exc:
        _service_errors(exc)
    console.print(f"user {username} created with roles {', '.join(user.roles)}")
    if password_file is None:
        print(f"password: {password}")


# -- destinations --------------------------------------------------------------------------


def _db() -> Any:
    from dicom_gw.db.engine import connect

    return connect(_settings(), autocommit=True)


def _service_errors(exc: Exception) -> None:
    from pydantic import ValidationError

    from dicom_gw.services import ServiceError

    if isinstance(exc, ValidationError):
        for error in exc.errors():
            key = ".".join(str(p) for p in error["loc"]) or "(input)"
            console.print(f"[red]error[/red] {key}: {error['msg']}")
    elif isinstance(exc, ServiceError):
        console.print(f"[red]error[/red] {exc.field}: {exc.message}")
    else:
        raise exc
    raise typer.Exit(2)


@destination_app.command("add")
def destination_add(
    name: str,
    ae_title: Annotated[str, typer.Option("--ae-title", help="The destination's AE title.")],
    host: Annotated[str, typer.Option()],
    port: Annotated[int, typer.Option()],
    calling_ae_title: Annotated[str | None, typer.Option(help="Our AE title towards it.")] = None,
    mode: Annotated[str, typer.Option(help="instance, or study (send when quiet).")] = "instance",
    study_quiet_seconds: Annotated[float, typer.Option()] = 60,
    max_associations: Annotated[int, typer.Option()] = 1,
    batch_size: Annotated[int, typer.Option()] = 50,
    max_retries: Annotated[int, typer.Option()] = 10,
    backoff_base_seconds: Annotated[float, typer.Option()] = 5,
    backoff_cap_seconds: Annotated[float, typer.Option()] = 900,
    warning_is_success: Annotated[bool, typer.Option()] = True,
    tls: Annotated[bool, typer.Option(help="DICOM TLS (BCP 195).")] = False,
    tls_ca_file: Annotated[str | None, typer.Option()] = None,
    tls_cert_file: Annotated[str | None, typer.Option()] = None,
    tls_key_file: Annotated[str | None, typer.Option()] = None,
    disabled: Annotated[bool, typer.Option(help="Create it disabled.")] = False,
) -> None:
    """Add a destination."""
    from pydantic import ValidationError

    from dicom_gw.services import ServiceError
    from dicom_gw.services.destinations import DestinationSpec, create_destination

    settings = _settings()
    try:
        spec = DestinationSpec(
            name=name,
            ae_title=ae_title,
            host=host,
            port=port,
            calling_ae_title=calling_ae_title or settings.dicom.ae_title,
            mode=mode,
            study_quiet_seconds=study_quiet_seconds,
            max_associations=max_associations,
            batch_size=batch_size,
            max_retries=max_retries,
            backoff_base_seconds=backoff_base_seconds,
            backoff_cap_seconds=backoff_cap_seconds,
            warning_is_success=warning_is_success,
            tls_enabled=tls,
            tls_ca_file=tls_ca_file,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
            enabled=not disabled,
        )
        with _db() as conn:
            created = create_destination(conn, spec)
    except (ValidationError, ServiceError) as exc:
        _service_errors(exc)
    console.print(f"destination {created.name} added (id {created.id})")


@destination_app.command("list")
def destination_list() -> None:
    """List destinations."""
    from rich.table import Table

    from dicom_gw.services.destinations import list_destinations

    with _db() as conn:
        rows = list_destinations(conn)
    table = Table(
        "id",
        "name",
        "AE title",
        "address",
        "calling AE",
        "mode",
        "assoc",
        "batch",
        "retries",
        "enabled",
    )
    for d in rows:
        table.add_row(
            str(d.id),
            d.name,
            d.ae_title,
            f"{d.host}:{d.port}",
            d.calling_ae_title,
            d.mode,
            str(d.max_associations),
            str(d.batch_size),
            str(d.max_retries),
            "yes" if d.enabled else "no",
        )
    _stdout().print(table)


@destination_app.command("set")
def destination_set(
    name: str,
    changes: Annotated[list[str], typer.Argument(help="key=value, e.g. enabled=false port=104")],
) -> None:
    """Change settings of a destination (validated like add)."""
    import json

    from pydantic import ValidationError

    from dicom_gw.services import ServiceError
    from dicom_gw.services.destinations import update_destination

    parsed: dict[str, Any] = {}
    for change in changes:
        key, _, value = change.partition("=")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    try:
        with _db() as conn:
            updated = update_destination(conn, name, parsed)
    except (ValidationError, ServiceError) as exc:
        _service_errors(exc)
    console.print(f"destination {updated.name} updated")


@destination_app.command("remove")
def destination_remove(name: str) -> None:
    """Remove a destination that has no deliveries."""
    from dicom_gw.services import ServiceError
    from dicom_gw.services.destinations import delete_destination

    try:
        with _db() as conn:
            delete_destination(conn, name)
    except ServiceError as exc:
        _service_errors(exc)
    console.print(f"destination {name} removed")


@destination_app.command("echo")
def destination_echo(name: str) -> None:
    """C-ECHO a destination and print the outcome and round-trip time."""
    from dicom_gw.dicom.scu import Timeouts, echo
    from dicom_gw.services import ServiceError
    from dicom_gw.services.destinations import get_destination

    settings = _settings()
    try:
        with _db() as conn:
            destination = get_destination(conn, name)
    except ServiceError as exc:
        _service_errors(exc)
    forward = settings.forward
    result = echo(
        destination,
        Timeouts(
            forward.acse_timeout_seconds,
            forward.dimse_timeout_seconds,
            forward.network_timeout_seconds,
        ),
    )
    verdict = "[green]success[/green]" if result.ok else "[red]failed[/red]"
    console.print(f"C-ECHO {name}: {verdict} ({result.detail}) in {result.round_trip_ms:.1f} ms")
    if not result.ok:
        raise typer.Exit(1)


# -- routing rules -------------------------------------------------------------------------


def _parse_condition(text: str) -> dict[str, Any]:
    """FIELD:OP[:VALUE]: modality:equals:CT, StudyDescription:glob:*HEAD*, 0010,0010:present."""
    field, _, rest = text.partition(":")
    op, _, value = rest.partition(":")
    return {"field": field, "op": op, "value": value or None}


@rule_app.command("add")
def rule_add(
    name: str,
    destination: Annotated[list[str], typer.Option("--to", help="Destination name (repeatable).")],
    condition: Annotated[
        list[str] | None,
        typer.Option(
            "--when",
            help="FIELD:OP[:VALUE] (repeatable); OP is equals, glob, regex, "
            "present or absent; FIELD is calling_ae, called_ae, source_ip, modality, "
            "sop_class, a DICOM keyword or a tag.",
        ),
    ] = None,
    match: Annotated[str, typer.Option(help="all or any of the conditions.")] = "all",
    position: Annotated[int, typer.Option(help="Evaluation order (lower first).")] = 100,
    stop: Annotated[
        bool, typer.Option(help="Stop evaluating rules after this one matches.")
    ] = False,
    default: Annotated[bool, typer.Option(help="Apply only when no other rule matched.")] = False,
    disabled: Annotated[bool, typer.Option()] = False,
) -> None:
    """Add a routing rule. Invalid rules are refused with the field at fault."""
    from pydantic import ValidationError

    from dicom_gw.routing import RuleSpec
    from dicom_gw.services import ServiceError
    from dicom_gw.services.rules import save_rule

    try:
        spec = RuleSpec.model_validate(
            {
                "name": name,
                "destinations": destination,
                "match": match,
                "position": position,
                "stop_processing": stop,
                "is_default": default,
                "enabled": not disabled,
                "conditions": [_parse_condition(c) for c in condition or []],
            }
        )
        with _db() as conn:
            rule_id = save_rule(conn, spec)
    except (ValidationError, ServiceError) as exc:
        _service_errors(exc)
    console.print(f"rule {name} added (id {rule_id})")


@rule_app.command("list")
def rule_list() -> None:
    """List rules in evaluation order."""
    from rich.table import Table

    from dicom_gw.services.rules import list_rules

    with _db() as conn:
        rows = list_rules(conn)
    table = Table("pos", "name", "enabled", "match", "conditions", "to", "stop", "default")
    for r in rows:
        conditions = "; ".join(
            f"{c['field']} {c['op']} {c.get('value') or ''}".strip() for c in r["conditions"]
        )
        table.add_row(
            str(r["position"]),
            r["name"],
            "yes" if r["enabled"] else "no",
            r["match"],
            conditions or "(always)",
            ", ".join(r["destination_names"]),
            "yes" if r["stop_processing"] else "",
            "yes" if r["is_default"] else "",
        )
    _stdout().print(table)


@rule_app.command("remove")
def rule_remove(name: str) -> None:
    """Remove a rule."""
    from dicom_gw.services import ServiceError
    from dicom_gw.services.rules import delete_rule

    try:
        with _db() as conn:
            delete_rule(conn, name)
    except ServiceError as exc:
        _service_errors(exc)
    console.print(f"rule {name} removed")


@rule_app.command("enable")
def rule_enable(name: str, off: Annotated[bool, typer.Option("--off")] = False) -> None:
    """Enable a rule (or disable it with --off)."""
    from dicom_gw.services import ServiceError
    from dicom_gw.services.rules import set_rule_enabled

    try:
        with _db() as conn:
            set_rule_enabled(conn, name, not off)
    except ServiceError as exc:
        _service_errors(exc)
    console.print(f"rule {name} {'disabled' if off else 'enabled'}")


# -- the queue -----------------------------------------------------------------------------


def _operator() -> str:
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or "cli"


@queue_app.command("list")
def queue_list(
    state: Annotated[str | None, typer.Option(help="pending, held, retry, sent, dead, ...")] = None,
    destination: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 50,
) -> None:
    """Deliveries (newest first) with their last error, and counts per state."""
    from rich.table import Table

    from dicom_gw.queue import delivery_counts_by_destination, page_deliveries
    from dicom_gw.services.destinations import get_destination

    with _db() as conn:
        destination_id = get_destination(conn, destination).id if destination else None
        rows, _total = page_deliveries(conn, state, destination_id, 1, limit)
        counts = delivery_counts_by_destination(conn)
    table = Table("id", "destination", "state", "attempts", "status", "last error", "next attempt")
    for r in rows:
        status = f"0x{r['last_status']:04X}" if r["last_status"] is not None else ""
        table.add_row(
            str(r["id"]),
            r["destination"],
            r["state"],
            str(r["attempts"]),
            status,
            r["last_error"] or "",
            str(r["next_attempt_at"])[:19],
        )
    out = _stdout()
    out.print(table)
    summary = "  ".join(f"{c['destination']}/{c['state']}: {c['count']}" for c in counts)
    out.print(summary or "no deliveries")


@queue_app.command("history")
def queue_history(delivery_id: int) -> None:
    """Every state change of one delivery, with time and reason."""
    from dicom_gw.queue import delivery_history

    with _db() as conn:
        for at, old, new, attempts, reason in delivery_history(conn, delivery_id):
            console.print(
                f"{at:%Y-%m-%d %H:%M:%S}  {old or '-':>9} -> {new:<9} "
                f"attempts={attempts}  {reason or ''}"
            )


@queue_app.command("retry")
def queue_retry(
    ids: Annotated[list[int] | None, typer.Argument()] = None,
    destination: Annotated[
        str | None, typer.Option(help="All dead letters of a destination.")
    ] = None,
) -> None:
    """Retry dead-lettered deliveries: by id, or all of a destination's."""
    from dicom_gw.queue import retry_deliveries
    from dicom_gw.services.destinations import get_destination

    if not ids and not destination:
        console.print("[red]error[/red] ids: give delivery ids or --destination")
        raise typer.Exit(2)
    with _db() as conn:
        destination_id = get_destination(conn, destination).id if destination else None
        count = retry_deliveries(
            conn, f"retried by {_operator()} (cli)", ids or None, destination_id
        )
    console.print(f"{count} deliveries queued again")


@queue_app.command("cancel")
def queue_cancel(ids: list[int]) -> None:
    """Cancel deliveries that have not been sent."""
    from dicom_gw.queue import cancel_deliveries

    with _db() as conn:
        count = cancel_deliveries(conn, f"cancelled by {_operator()} (cli)", ids)
    console.print(f"{count} deliveries cancelled")


@queue_app.command("replay")
def queue_replay(
    study: Annotated[str, typer.Option(help="Study Instance UID.")],
    destination: Annotated[str, typer.Option()],
) -> None:
    """Send a whole study to a destination again."""
    from dicom_gw.queue import replay_study
    from dicom_gw.services import ServiceError
    from dicom_gw.services.destinations import get_destination

    try:
        with _db() as conn:
            target = get_destination(conn, destination)
            count = replay_study(conn, f"replayed by {_operator()} (cli)", study, target.id)
    except ServiceError as exc:
        _service_errors(exc)
    if count == 0:
        console.print("[red]error[/red] study: no stored instances of that study")
        raise typer.Exit(1)
    console.print(f"{count} instances queued for {destination}")


@app.command()
def run() -> None:
    """Every service in one supervised process tree, for a first look on one machine.

    With no database.url configured, a private PostgreSQL cluster is created under
    run.state_dir and stopped again on exit.
    """
    import shutil

    from dicom_gw.db.cluster import LocalCluster
    from dicom_gw.security.phi import create_phi_key
    from dicom_gw.security.tokens import create_key_file
    from dicom_gw.supervisor import Child, Supervisor, self_command

    settings = _settings()
    _logging(settings, "run")
    state_dir = settings.run.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    create_phi_key(settings.security.phi_key_file)
    create_key_file(settings.auth.jwt_key_file)
    # prometheus-client's multiprocess mode: every child writes its metrics here; start empty.
    metrics_dir = state_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

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
        _upgrade(settings)
        _first_admin(settings, state_dir)
        children = [Child("scp", self_command(State.config, "scp"), env)]
        children.append(Child("api", self_command(State.config, "api"), env))
        children += [
            Child(f"ingest.{i}", self_command(State.config, "worker", "ingest"), env)
            for i in range(settings.ingest.workers)
        ]
        children += [
            Child(f"forward.{i}", self_command(State.config, "worker", "forward"), env)
            for i in range(settings.forward.workers)
        ]
        children.append(Child("dbpool", self_command(State.config, "worker", "dbpool"), env))
        if settings.cleanup.enabled:
            children.append(Child("cleanup", self_command(State.config, "worker", "cleanup"), env))
        console.print(
            f"[green]dicom-gw running[/green]: DICOM AE {settings.dicom.ae_title} on port "
            f"{settings.dicom.port}; web UI and API on http://{settings.api.bind_address}:"
            f"{settings.api.port}/; storage {settings.storage.root}. Ctrl-C stops everything."
        )
        Supervisor(children).run()
    finally:
        if cluster is not None:
            cluster.stop()


def _first_admin(settings: Settings, state_dir: Path) -> None:
    """With no user yet, create `admin` and print its password once (also kept root-only)."""
    import secrets

    from dicom_gw import audit
    from dicom_gw.db.engine import connect
    from dicom_gw.services.accounts import create_user

    with connect(settings, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM users").fetchone()
        if row and row[0]:
            return
        password = secrets.token_urlsafe(18)
        create_user(conn, settings.auth, "admin", password, ["admin"])
        audit.record(
            conn,
            audit.SYSTEM,
            "user.create",
            "success",
            "user:admin",
            {"username": "admin", "roles": ["admin"], "via": "first run"},
        )
    secret = state_dir / "secrets" / "admin-password"
    secret.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret.touch(mode=0o600)
    secret.write_text(password + "\n")
    console.print(
        f"[bold]first run[/bold]: user [bold]admin[/bold], password [bold]{password}[/bold]"
        f" (shown once; also in {secret})"
    )


def main() -> None:
    app()
