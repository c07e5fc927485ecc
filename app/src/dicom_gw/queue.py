"""The work queues on PostgreSQL: claim with SKIP LOCKED, lease, retry, give up, NOTIFY.

Ingest jobs live here now; deliveries (the forward queue) join them in the routing issue. A queue
row is also the record operators look at, so no external broker stands between them.

Leases instead of locks held across work: a claim stamps ``lease_expires_at``; a worker killed
mid-batch simply lets the lease lapse and the row is claimable again. Every claim increments
``attempts``, so a file that kills its worker each time is quarantined after ``max_attempts``
instead of being retried forever.
"""

from __future__ import annotations

import datetime as dt
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
         WHERE state = 'pending'
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


def finish_ingest_job(cur: psycopg.Cursor[Any], job_id: int, worker: str) -> bool:
    """Mark done, only if this worker still holds the job (its lease may have been taken over)."""
    cur.execute(
        "UPDATE ingest_jobs SET state = 'done', finished_at = now(), lease_expires_at = NULL"
        " WHERE id = %s AND claimed_by = %s AND state = 'claimed'",
        (job_id, worker),
    )
    return cur.rowcount == 1


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
        "SELECT id, storage_path FROM ingest_jobs WHERE state = 'claimed'"
        " AND lease_expires_at < now() AND attempts >= %s",
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
