"""The work queues on PostgreSQL: claim with SKIP LOCKED, lease, retry, give up, NOTIFY.

Two queues: ingest jobs (files to index) and deliveries (one row per instance and destination,
the forward queue). A queue row is also the record operators look at and act on, so no external
broker stands between the two and no state can drift between a queue and a table.

Leases instead of locks held across work: a claim stamps ``lease_expires_at``; a worker killed
mid-batch simply lets the lease lapse and the row is claimable again. Every claim increments
``attempts``, so a file that kills its worker each time is quarantined after ``max_attempts``
instead of being retried forever.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

INGEST_CHANNEL = "ingest_jobs"


@dataclass(frozen=True)
class ReceivedFile:
    """What the SCP knows about a durable file when it records it."""

    storage_path: str
    sha256: str
    size_bytes: int
    sop_instance_uid: str | None
    sop_class_uid: str | None
    transfer_syntax_uid: str | None
    calling_ae: str | None
    called_ae: str | None
    peer_address: str | None
    source: str = "scp"


_ENQUEUE = """
INSERT INTO ingest_jobs (storage_path, sha256, size_bytes, sop_instance_uid, sop_class_uid,
                         transfer_syntax_uid, calling_ae, called_ae, peer_address, source)
VALUES (%(storage_path)s, %(sha256)s, %(size_bytes)s, %(sop_instance_uid)s, %(sop_class_uid)s,
        %(transfer_syntax_uid)s, %(calling_ae)s, %(called_ae)s, %(peer_address)s, %(source)s)
ON CONFLICT (storage_path) DO NOTHING
"""


def enqueue_received(conn: psycopg.Connection[Any], received: ReceivedFile) -> None:
    """Record a received file as an ingest job. One statement, so one round trip in autocommit.

    ON CONFLICT makes recovery and the SCP safe to race on the same file.
    """
    conn.execute(_ENQUEUE, received.__dict__, prepare=True)


@dataclass(frozen=True)
class IngestJobRow:
    id: int
    storage_path: str
    sha256: str
    size_bytes: int
    transfer_syntax_uid: str | None
    calling_ae: str | None
    called_ae: str | None
    peer_address: str | None
    received_at: dt.datetime
    attempts: int


_CLAIM = """
UPDATE ingest_jobs AS j
   SET state = 'claimed', claimed_by = %(worker)s, attempts = j.attempts + 1,
       lease_expires_at = now() + make_interval(secs => %(lease)s)
 WHERE j.id IN (
        SELECT id FROM ingest_jobs
         WHERE (state = 'pending' AND attempts < %(max)s)
            OR (state = 'claimed' AND lease_expires_at < now() AND attempts < %(max)s)
         ORDER BY id
         LIMIT %(limit)s
         FOR UPDATE SKIP LOCKED)
RETURNING j.id, j.storage_path, j.sha256, j.size_bytes, j.transfer_syntax_uid, j.calling_ae,
          j.called_ae, host(j.peer_address) AS peer_address, j.received_at, j.attempts
"""


def claim_ingest_jobs(
    conn: psycopg.Connection[Any],
    worker: str,
    limit: int,
    lease_seconds: float,
    max_attempts: int,
) -> list[IngestJobRow]:
    params = {"worker": worker, "limit": limit, "lease": lease_seconds, "max": max_attempts}
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_CLAIM, params)
        rows = [IngestJobRow(**row) for row in cur.fetchall()]
    return sorted(rows, key=lambda row: row.id)


def finish_ingest_jobs(cur: psycopg.Cursor[Any], job_ids: list[int], worker: str) -> int:
    """Mark done the jobs this worker still holds (a lease may have been taken over); how many."""
    cur.execute(
        "UPDATE ingest_jobs SET state = 'done', finished_at = now(), lease_expires_at = NULL"
        " WHERE id = ANY(%s) AND claimed_by = %s AND state = 'claimed'",
        (job_ids, worker),
    )
    return cur.rowcount


def quarantine_ingest_job(
    cur: psycopg.Cursor[Any], job_id: int, new_path: str | None, reason: str
) -> None:
    cur.execute(
        "UPDATE ingest_jobs SET state = 'quarantined', finished_at = now(), last_error = %s,"
        " lease_expires_at = NULL, storage_path = COALESCE(%s, storage_path) WHERE id = %s",
        (reason, new_path, job_id),
    )


def release_ingest_job(conn: psycopg.Connection[Any], job_id: int, reason: str) -> None:
    """Give a job back for a later attempt after a transient failure (e.g. a database error)."""
    conn.execute(
        "UPDATE ingest_jobs SET state = 'pending', last_error = %s, lease_expires_at = NULL,"
        " claimed_by = NULL WHERE id = %s AND state = 'claimed'",
        (reason, job_id),
    )


def exhausted_ingest_jobs(
    conn: psycopg.Connection[Any], max_attempts: int
) -> list[tuple[int, str]]:
    """Jobs whose lease lapsed after their last allowed attempt: they must not be claimed again."""
    rows = conn.execute(
        "SELECT id, storage_path FROM ingest_jobs WHERE attempts >= %s AND (state = 'pending'"
        " OR (state = 'claimed' AND lease_expires_at < now()))",
        (max_attempts,),
    ).fetchall()
    return [(int(row[0]), str(row[1])) for row in rows]


def unrecorded_paths(conn: psycopg.Connection[Any], paths: Iterable[str]) -> list[str]:
    """The storage paths no ingest job knows: durable files whose record was lost."""
    batch = list(paths)
    if not batch:
        return []
    rows = conn.execute(
        "SELECT p FROM unnest(%s::text[]) AS p"
        " WHERE NOT EXISTS (SELECT 1 FROM ingest_jobs j WHERE j.storage_path = p)",
        (batch,),
    ).fetchall()
    return [str(row[0]) for row in rows]


def ingest_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT state::text, count(*) FROM ingest_jobs GROUP BY state").fetchall()
    return {str(state): int(count) for state, count in rows}


# -- deliveries: the forward queue -----------------------------------------------------------

DELIVERY_CHANNEL = "deliveries"
FINAL_STATES = ("sent", "dead", "cancelled")


def backoff_seconds(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(attempt-1))].

    Full jitter spreads the retries of many deliveries that failed together (a destination that
    went down) so they do not return as one burst.
    """
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    return rng.uniform(0, ceiling)


def create_deliveries_many(
    cur: psycopg.Cursor[Any],
    chosen: list[tuple[int, int | None, dict[int, int]]],
    study_mode: set[int],
) -> None:
    """One delivery per (instance, chosen destination); study-mode destinations start held.

    ``chosen`` holds (instance id, study id, {destination id: rule id}). One pipelined statement
    per delivery: a batch of instances costs one round trip.
    """
    rows = [
        (instance_id, destination_id, study_id, rule_id,
         "held" if destination_id in study_mode else "pending")
        for instance_id, study_id, destinations in chosen
        for destination_id, rule_id in destinations.items()
    ]  # fmt: skip
    if rows:
        cur.executemany(
            "INSERT INTO deliveries (instance_id, destination_id, study_id, rule_id, state)"
            " VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (instance_id, destination_id)"
            " WHERE state NOT IN ('sent', 'dead', 'cancelled') DO NOTHING",
            rows,
        )


@dataclass(frozen=True)
class DeliveryTask:
    id: int
    attempts: int
    instance_id: int
    storage_path: str
    sha256: str
    size_bytes: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    study_id: int | None


_CLAIM_DELIVERIES = """
WITH picked AS (
    SELECT id FROM deliveries
     WHERE destination_id = %(destination)s
       AND ((state IN ('pending', 'retry') AND next_attempt_at <= now())
            OR (state = 'claimed' AND lease_expires_at < now()))
     ORDER BY next_attempt_at, id
     LIMIT %(limit)s
     FOR UPDATE SKIP LOCKED),
claimed AS (
    UPDATE deliveries d
       SET state = 'claimed', claimed_by = %(worker)s, updated_at = now(),
           lease_expires_at = now() + make_interval(secs => %(lease)s)
      FROM picked WHERE d.id = picked.id
    RETURNING d.id, d.attempts, d.instance_id, d.study_id)
SELECT c.id, c.attempts, c.instance_id, i.storage_path, i.sha256, i.size_bytes, i.sop_class_uid,
       i.sop_instance_uid, i.transfer_syntax_uid, c.study_id
  FROM claimed c JOIN instances i ON i.id = c.instance_id
 ORDER BY c.study_id NULLS LAST, c.id
"""


def claim_deliveries(
    conn: psycopg.Connection[Any], destination_id: int, worker: str, limit: int, lease: float
) -> list[DeliveryTask]:
    params = {"destination": destination_id, "worker": worker, "limit": limit, "lease": lease}
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_CLAIM_DELIVERIES, params)
        return [DeliveryTask(**row) for row in cur.fetchall()]


def extend_delivery_leases(
    conn: psycopg.Connection[Any], ids: list[int], worker: str, lease: float
) -> None:
    conn.execute(
        "UPDATE deliveries SET lease_expires_at = now() + make_interval(secs => %s)"
        " WHERE id = ANY(%s) AND claimed_by = %s AND state = 'claimed'",
        (lease, ids, worker),
    )


@dataclass(frozen=True)
class DeliveryOutcome:
    """The result of one send attempt. ``retry_in`` None with ``dead`` False means sent."""

    delivery_id: int
    status: int | None
    sent: bool
    reason: str | None = None
    retry_in: float | None = None
    dead: bool = False
    counted: bool = True  # False: never attempted (worker stopping); no retry is spent


def record_outcomes(
    conn: psycopg.Connection[Any], outcomes: list[DeliveryOutcome], worker: str
) -> None:
    """Write a batch's outcomes in one transaction; only rows this worker still holds."""
    if not outcomes:
        return
    sent = [o.delivery_id for o in outcomes if o.sent]
    statuses = [o.status for o in outcomes if o.sent]
    with conn.transaction(), conn.cursor() as cur:
        # One event per batch for live views (the API's SSE stream); they re-read what changed.
        cur.execute(
            "SELECT pg_notify('gw_events', %s)",
            (
                json.dumps(
                    {"type": "delivery", "sent": len(sent), "other": len(outcomes) - len(sent)}
                ),
            ),
        )
        if sent:
            cur.execute(
                "UPDATE deliveries d SET state = 'sent', sent_at = now(), updated_at = now(),"
                " attempts = d.attempts + 1, last_status = s.status, last_error = NULL,"
                " lease_expires_at = NULL"
                " FROM unnest(%s::bigint[], %s::int[]) AS s(id, status)"
                " WHERE d.id = s.id AND d.claimed_by = %s AND d.state = 'claimed'",
                (sent, statuses, worker),
            )
        unattempted = [o.delivery_id for o in outcomes if not o.sent and not o.counted]
        if unattempted:
            cur.execute(
                "UPDATE deliveries SET state = 'pending', lease_expires_at = NULL,"
                " updated_at = now() WHERE id = ANY(%s) AND claimed_by = %s AND state = 'claimed'",
                (unattempted, worker),
            )
        for outcome in (o for o in outcomes if not o.sent and o.counted):
            cur.execute(
                "UPDATE deliveries SET state = %s, attempts = attempts + 1, updated_at = now(),"
                " last_status = %s, last_error = %s, lease_expires_at = NULL,"
                " next_attempt_at = now() + make_interval(secs => %s)"
                " WHERE id = %s AND claimed_by = %s AND state = 'claimed'",
                (
                    "dead" if outcome.dead else "retry",
                    outcome.status,
                    outcome.reason,
                    outcome.retry_in or 0,
                    outcome.delivery_id,
                    worker,
                ),
            )


def release_quiet_studies(conn: psycopg.Connection[Any]) -> int:
    """Study mode: release held deliveries of studies quiet for their destination's period.

    Any new instance moves the study's ``last_received_at``, which restarts the timer.
    """
    cur = conn.execute(
        "UPDATE deliveries d SET state = 'pending', next_attempt_at = now(), updated_at = now()"
        "  FROM destinations dest, studies st"
        " WHERE d.state = 'held' AND dest.id = d.destination_id AND st.id = d.study_id"
        "   AND st.last_received_at"
        "       < now() - make_interval(secs => dest.study_quiet_seconds)"
    )
    return cur.rowcount


def seconds_until_due(conn: psycopg.Connection[Any], destination_id: int) -> float | None:
    row = conn.execute(
        "SELECT EXTRACT(EPOCH FROM min(next_attempt_at) - now()) FROM deliveries"
        " WHERE destination_id = %s AND state IN ('pending', 'retry')",
        (destination_id,),
    ).fetchone()
    return None if row is None or row[0] is None else max(float(row[0]), 0.0)


# -- operator actions (CLI and API) ----------------------------------------------------------


def _set_reason(cur: psycopg.Cursor[Any], reason: str) -> None:
    cur.execute("SELECT set_config('dicomgw.reason', %s, true)", (reason,))


def retry_deliveries(
    conn: psycopg.Connection[Any],
    reason: str,
    ids: list[int] | None = None,
    destination_id: int | None = None,
) -> int:
    """Send dead-lettered (or failed) deliveries again, with a fresh retry budget."""
    with conn.transaction(), conn.cursor() as cur:
        _set_reason(cur, reason)
        cur.execute(
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = now(),"
            " updated_at = now() WHERE state IN ('dead', 'retry')"
            " AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s))"
            " AND (%(dest)s::int IS NULL OR destination_id = %(dest)s)",
            {"ids": ids, "dest": destination_id},
        )
        return cur.rowcount


def cancel_deliveries(conn: psycopg.Connection[Any], reason: str, ids: list[int]) -> int:
    with conn.transaction(), conn.cursor() as cur:
        _set_reason(cur, reason)
        cur.execute(
            "UPDATE deliveries SET state = 'cancelled', updated_at = now(), lease_expires_at = NULL"
            " WHERE id = ANY(%s) AND state IN ('pending', 'retry', 'held', 'dead')",
            (ids,),
        )
        return cur.rowcount


def replay_study(
    conn: psycopg.Connection[Any], reason: str, study_instance_uid: str, destination_id: int
) -> int:
    """Queue every current instance of a study for a destination again."""
    with conn.transaction(), conn.cursor() as cur:
        _set_reason(cur, reason)
        cur.execute(
            "INSERT INTO deliveries (instance_id, destination_id, study_id, state)"
            " SELECT i.id, %s, st.id, 'pending' FROM instances i"
            "   JOIN series se ON se.id = i.series_id JOIN studies st ON st.id = se.study_id"
            "  WHERE st.study_instance_uid = %s AND i.is_latest AND i.deleted_at IS NULL"
            " ON CONFLICT (instance_id, destination_id)"
            " WHERE state NOT IN ('sent', 'dead', 'cancelled') DO NOTHING",
            (destination_id, study_instance_uid),
        )
        return cur.rowcount


def page_deliveries(
    conn: psycopg.Connection[Any],
    state: str | None = None,
    destination_id: int | None = None,
    page: int = 1,
    page_size: int = 50,
) -> tuple[list[dict[str, Any]], int]:
    """Deliveries newest first, with the instance and study they carry, and the total count."""
    where = (
        " WHERE (%(state)s::text IS NULL OR d.state::text = %(state)s)"
        " AND (%(dest)s::int IS NULL OR d.destination_id = %(dest)s)"
    )
    params = {"state": state, "dest": destination_id}
    with conn.cursor(row_factory=dict_row) as cur:
        total = cur.execute("SELECT count(*) AS n FROM deliveries d" + where, params).fetchone()
        rows = cur.execute(
            "SELECT d.id, d.destination_id, dest.name AS destination, d.state::text AS state,"
            " d.attempts, d.last_status, d.last_error, d.next_attempt_at, d.updated_at,"
            " d.sent_at, i.sop_instance_uid, st.study_instance_uid, d.study_id"
            " FROM deliveries d JOIN destinations dest ON dest.id = d.destination_id"
            " JOIN instances i ON i.id = d.instance_id LEFT JOIN studies st ON st.id = d.study_id"
            + where
            + " ORDER BY d.id DESC LIMIT %(limit)s OFFSET %(offset)s",
            params | {"limit": page_size, "offset": (page - 1) * page_size},
        ).fetchall()
    return rows, int(total["n"]) if total else 0


def delivery_counts_by_destination(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT d.destination_id, dest.name AS destination, d.state::text AS state,"
            " count(*) AS count FROM deliveries d JOIN destinations dest"
            " ON dest.id = d.destination_id GROUP BY d.destination_id, dest.name, d.state"
            " ORDER BY dest.name, d.state"
        ).fetchall()


def delivery_history(conn: psycopg.Connection[Any], delivery_id: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT created_at, from_state, to_state, attempts, reason FROM delivery_events"
        " WHERE delivery_id = %s ORDER BY id",
        (delivery_id,),
    ).fetchall()
