"""The DB pool worker: loads spooled events and metrics into PostgreSQL in batches.

A batch closes on size (``batch_max_rows``) or time (``flush_interval_seconds``), and each batch
is one transaction with one COPY per table, so thousands of small rows cost a handful of round
trips. Rows per transaction are exported as a histogram, so the batching can be seen working.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from dicom_gw import metrics
from dicom_gw.config import Settings
from dicom_gw.db.engine import connect
from dicom_gw.spool import TABLES, read_segment, ready_segments, spool_dir

log = logging.getLogger(__name__)


def _copy_value(column: str, value: Any) -> Any:
    if column == "detail":
        return json.dumps(value if value is not None else {})
    return value


class DbPoolWorker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.directory = spool_dir(settings.storage.root)
        self.stop = threading.Event()

    def load(self, conn: psycopg.Connection[Any], segments: list[Path]) -> int:
        """Load segments in one transaction; skip any already loaded. Returns rows written."""
        names = [segment.name.removesuffix(".open") for segment in segments]
        written = 0
        with conn.transaction():
            done = {
                str(row[0])
                for row in conn.execute(
                    "SELECT name FROM spool_segments WHERE name = ANY(%s)", (names,)
                ).fetchall()
            }
            batches: dict[str, list[dict[str, Any]]] = {}
            for segment, name in zip(segments, names, strict=True):
                if name in done:
                    continue
                for table, rows in read_segment(segment).items():
                    batches.setdefault(table, []).extend(rows)
                conn.execute("INSERT INTO spool_segments (name) VALUES (%s)", (name,))
            for table, rows in batches.items():
                columns = TABLES[table]
                with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row([_copy_value(c, row.get(c)) for c in columns])
                written += len(rows)
        for segment in segments:
            segment.unlink(missing_ok=True)
        metrics.DBPOOL_BATCH_ROWS.observe(written)
        return written

    def run_once(self, conn: psycopg.Connection[Any]) -> int:
        pool = self.settings.dbpool
        segments = ready_segments(self.directory)
        if not segments:
            return 0
        # Size trigger: enough segments to fill a batch; estimate 1 row per 100 bytes.
        batch: list[Path] = []
        estimated = 0
        for segment in segments:
            batch.append(segment)
            estimated += max(1, segment.stat().st_size // 100)
            if estimated >= pool.batch_max_rows:
                break
        rows = self.load(conn, batch)
        log.debug("loaded %d rows from %d segments", rows, len(batch))
        return rows

    def run(self) -> None:
        backoff = 1.0
        while not self.stop.is_set():
            try:
                with connect(self.settings, autocommit=True, service="dbpool") as conn:
                    backoff = 1.0
                    while not self.stop.is_set():
                        started = time.monotonic()
                        self.run_once(conn)
                        # Time trigger: look again after the flush interval.
                        elapsed = time.monotonic() - started
                        self.stop.wait(
                            max(0.0, self.settings.dbpool.flush_interval_seconds - elapsed)
                        )
                    self.run_once(conn)  # drain what is ready before stopping
            except psycopg.OperationalError as exc:
                log.error(
                    "database unavailable, retrying in %.0fs: %s", backoff, type(exc).__name__
                )
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
