"""The event spool between the services and the DB pool worker.

Ingest events and per-operation metrics are many small rows that nothing waits for. Writing each
in the transaction that produced it would double the hot path's database work, so producers
append them as JSON lines to a segment file under ``<storage>/spool/<host>/`` and the DB pool
worker loads whole segments in batches (one COPY per table per transaction).

Committed instances and deliveries never pass through here: losing a segment loses telemetry,
never data. A segment is recorded in ``spool_segments`` in the transaction that loads it, so a
crash between the load and the unlink cannot load it twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The tables and columns a segment may write to: nothing else can be named through a file.
TABLES: dict[str, tuple[str, ...]] = {
    "ingest_events": ("job_id", "instance_id", "kind", "detail", "created_at"),
    "operation_metrics": (
        "recorded_at",
        "service",
        "operation",
        "outcome",
        "duration_ms",
        "size_bytes",
        "destination_id",
    ),
}
TIME_COLUMNS = {"created_at", "recorded_at"}


def spool_dir(storage_root: Path) -> Path:
    return storage_root / "spool" / socket.gethostname()


class EventSpool:
    """One writer per process; thread-safe. Segments rotate by size or age."""

    def __init__(
        self, directory: Path, service: str, max_records: int = 500, max_age_seconds: float = 1.0
    ) -> None:
        self.directory = directory
        self.service = service
        self.max_records = max_records
        self.max_age_seconds = max_age_seconds
        self._lock = threading.Lock()
        self._file: Any = None
        self._path: Path | None = None
        self._records = 0
        self._opened_at = 0.0
        self._sequence = 0
        self._dropped = 0

    def emit(self, table: str, **row: Any) -> None:
        if table not in TABLES:
            raise ValueError(f"unknown spool table {table}")
        time_column = "created_at" if table == "ingest_events" else "recorded_at"
        row.setdefault(time_column, dt.datetime.now(dt.UTC).isoformat())
        line = json.dumps({"table": table, "row": row}, default=str) + "\n"
        with self._lock:
            try:
                if self._file is None:
                    self._open()
                self._file.write(line)
                self._records += 1
                if self._records >= self.max_records:
                    self._rotate()
            except OSError as exc:
                # Telemetry must never stop the work it describes (a full disk, say): drop it.
                self._dropped += 1
                if self._dropped in (1, 1000):
                    log.warning("event spool unavailable, dropping events: %s", exc.strerror)
                self._file = None

    def metric(self, operation: str, outcome: str, duration: float, **extra: Any) -> None:
        self.emit(
            "operation_metrics",
            service=self.service,
            operation=operation,
            outcome=outcome,
            duration_ms=round(duration * 1000, 3),
            **extra,
        )

    def tick(self) -> None:
        """Rotate an old segment; producers call this when idle so events never linger."""
        with self._lock, contextlib.suppress(OSError):
            if (
                self._file is not None
                and time.monotonic() - self._opened_at >= self.max_age_seconds
            ):
                self._rotate()

    def close(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            if self._file is not None:
                self._rotate()

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sequence += 1
        name = f"{self.service}-{os.getpid()}-{time.time_ns()}-{self._sequence}.jsonl"
        self._path = self.directory / (name + ".open")
        self._file = self._path.open("a", encoding="utf-8")
        self._records = 0
        self._opened_at = time.monotonic()

    def _rotate(self) -> None:
        assert self._file is not None and self._path is not None
        self._file.close()
        os.rename(self._path, self._path.with_suffix(""))  # drop ".open": ready to load
        self._file = None
        self._path = None


def ready_segments(directory: Path) -> list[Path]:
    """Closed segments, plus open ones whose writer process is gone (it crashed)."""
    if not directory.exists():
        return []
    segments = []
    for path in sorted(directory.iterdir()):
        if path.name.endswith(".jsonl") or (
            path.name.endswith(".jsonl.open") and not _writer_alive(path)
        ):
            segments.append(path)
    return segments


def _writer_alive(path: Path) -> bool:
    try:
        pid = int(path.name.split("-")[-3])
    except (IndexError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_segment(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The rows of a segment by table; a torn last line (writer killed mid-write) is skipped."""
    rows: dict[str, list[dict[str, Any]]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            table = record.get("table")
            if table in TABLES and isinstance(record.get("row"), dict):
                rows.setdefault(table, []).append(record["row"])
    return rows
