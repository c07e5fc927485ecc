"""The audit trail: append-only, hash-chained, searchable, exportable, forwarded as syslog.

The database enforces the properties (see migration 0003): a trigger links each entry to the
previous one's hash and refuses UPDATE, DELETE and TRUNCATE. ``verify`` recomputes the chain
with the same SQL function and names the first entry that does not match, which is what an
auditor needs after someone with superuser rights disabled the trigger and edited a row.

Entries never carry PHI: targets are identifiers such as ``study:42``, not patient names.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from dicom_gw.config import AuditSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Actor:
    username: str | None
    roles: list[str] = field(default_factory=list)
    source_ip: str | None = None


SYSTEM = Actor("system", [], None)


def record(
    conn: psycopg.Connection[Any],
    actor: Actor,
    action: str,
    outcome: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
    syslog: AuditSettings | None = None,
) -> int:
    row = conn.execute(
        "INSERT INTO audit_log (actor, roles, source_ip, action, target, outcome, detail)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id, created_at, hash",
        (
            actor.username,
            actor.roles,
            actor.source_ip,
            action,
            target,
            outcome,
            json.dumps(detail or {}),
        ),
    ).fetchone()
    assert row is not None
    if syslog is not None and syslog.syslog_host:
        _forward(syslog, int(row[0]), row[1], actor, action, outcome, target, str(row[2]))
    return int(row[0])


def _forward(
    settings: AuditSettings,
    entry_id: int,
    created_at: dt.datetime,
    actor: Actor,
    action: str,
    outcome: str,
    target: str | None,
    entry_hash: str,
) -> None:
    """RFC 5424 message (facility 13, log audit); failures to forward never block the action."""
    severity = 6 if outcome == "success" else 4

    def sd(value: object) -> str:
        return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")

    structured = (
        f'[audit@32473 id="{entry_id}" actor="{sd(actor.username or "-")}" '
        f'action="{sd(action)}" outcome="{sd(outcome)}" target="{sd(target or "-")}" '
        f'src="{sd(actor.source_ip or "-")}" hash="{entry_hash}"]'
    )
    message = (
        f"<{13 * 8 + severity}>1 {created_at.astimezone(dt.UTC).isoformat()} "
        f"{socket.gethostname()} dicom-gw - audit {structured} {action} {outcome}"
    ).encode()
    try:
        if settings.syslog_protocol == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(message, (settings.syslog_host or "", settings.syslog_port))
        else:
            with socket.create_connection(
                (settings.syslog_host or "", settings.syslog_port), 2
            ) as s:
                s.sendall(str(len(message)).encode() + b" " + message)  # RFC 6587 octet counting
    except OSError as exc:
        log.warning("audit syslog forwarding failed: %s", exc.strerror or exc)


@dataclass(frozen=True)
class AuditFilters:
    q: str | None = None
    actor: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses = ["TRUE"]
        params: dict[str, Any] = {}
        if self.q:
            clauses.append("search @@ plainto_tsquery('simple', %(q)s)")
            params["q"] = self.q
        for name in ("actor", "action", "outcome"):
            value = getattr(self, name)
            if value:
                clauses.append(f"{name} = %({name})s")
                params[name] = value
        if self.since:
            clauses.append("created_at >= %(since)s")
            params["since"] = self.since
        if self.until:
            clauses.append("created_at <= %(until)s")
            params["until"] = self.until
        return " AND ".join(clauses), params


_COLUMNS = (
    "id, created_at, actor, roles, host(source_ip) AS source_ip, action, target, outcome, detail"
)


def search(
    conn: psycopg.Connection[Any], filters: AuditFilters, page: int, page_size: int
) -> tuple[list[dict[str, Any]], int]:
    where, params = filters.where()
    with conn.cursor(row_factory=dict_row) as cur:
        total = cur.execute(f"SELECT count(*) AS n FROM audit_log WHERE {where}", params).fetchone()
        rows = cur.execute(
            f"SELECT {_COLUMNS} FROM audit_log WHERE {where} ORDER BY id DESC"
            " LIMIT %(limit)s OFFSET %(offset)s",
            params | {"limit": page_size, "offset": (page - 1) * page_size},
        ).fetchall()
    return rows, int(total["n"]) if total else 0


def export_csv(conn: psycopg.Connection[Any], filters: AuditFilters) -> Iterator[str]:
    where, params = filters.where()
    header = [
        "id",
        "created_at",
        "actor",
        "roles",
        "source_ip",
        "action",
        "target",
        "outcome",
        "detail",
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    yield buffer.getvalue()
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM audit_log WHERE {where} ORDER BY id", params)
        for row in cur:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow(
                [
                    row["id"],
                    row["created_at"].isoformat(),
                    row["actor"] or "",
                    " ".join(row["roles"] or []),
                    row["source_ip"] or "",
                    row["action"],
                    row["target"] or "",
                    row["outcome"],
                    json.dumps(row["detail"], sort_keys=True),
                ]
            )
            yield buffer.getvalue()


@dataclass(frozen=True)
class ChainVerdict:
    ok: bool
    checked: int
    first_broken_id: int | None
    detail: str


def verify(conn: psycopg.Connection[Any]) -> ChainVerdict:
    row = conn.execute(
        """
        WITH chain AS (
            SELECT a.id, a.hash, a.prev_hash,
                   lag(a.hash) OVER (ORDER BY a.id) AS previous,
                   audit_entry_hash(lag(a.hash) OVER (ORDER BY a.id), a) AS expected
              FROM audit_log a)
        SELECT (SELECT count(*) FROM chain),
               (SELECT id FROM chain
                 WHERE hash <> expected OR prev_hash IS DISTINCT FROM previous
                 ORDER BY id LIMIT 1)
        """
    ).fetchone()
    assert row is not None
    checked, broken = int(row[0]), row[1]
    if broken is None:
        return ChainVerdict(True, checked, None, f"all {checked} entries chain correctly")
    return ChainVerdict(
        False, checked, int(broken), f"entry {broken} does not match its recorded hash or link"
    )
