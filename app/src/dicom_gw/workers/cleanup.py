"""The cleanup worker: delete stored files that are no longer needed, never one that is.

A file may go only when every delivery of its instance is final and successful (``sent``, or
``cancelled`` by an operator) and the retention period has passed. Under disk pressure the
emergency mode ignores retention, oldest first, down to a target usage, but it still deletes
only delivered files: an undelivered instance is never sacrificed for space. Dead-lettered and
pending deliveries keep their files; quarantined files are not touched.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg

from dicom_gw import metrics
from dicom_gw.config import Settings
from dicom_gw.db.engine import connect
from dicom_gw.dicom.storage import Storage
from dicom_gw.services.runtime import apply_runtime, load_runtime

log = logging.getLogger(__name__)

# Instances whose files may be deleted: not yet deleted, and no delivery that still needs the file.
_DELETABLE = """
SELECT i.id, i.storage_path FROM instances i
 WHERE i.deleted_at IS NULL
   AND i.received_at < now() - make_interval(secs => %(retention)s)
   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.instance_id = i.id
                    AND d.state NOT IN ('sent', 'cancelled'))
 ORDER BY i.received_at
 LIMIT %(limit)s
 FOR UPDATE OF i SKIP LOCKED
"""


class CleanupWorker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.storage = Storage(settings.storage.root, fsync=settings.storage.fsync)
        self.stop = threading.Event()

    def delete_batch(
        self, conn: psycopg.Connection[Any], retention_seconds: float, mode: str
    ) -> int:
        """Delete one batch. The row lock held while unlinking keeps a replay from racing us."""
        with conn.transaction():
            rows = conn.execute(
                _DELETABLE,
                {"retention": retention_seconds, "limit": self.settings.cleanup.batch_size},
            ).fetchall()
            for instance_id, path in rows:
                try:
                    self.storage.absolute(path).unlink()
                except FileNotFoundError:
                    log.warning("file already gone", extra={"instance": instance_id})
                conn.execute(
                    "UPDATE instances SET deleted_at = now() WHERE id = %s", (instance_id,)
                )
        if rows:
            metrics.CLEANED_FILES.labels(mode=mode).inc(len(rows))
            log.info("deleted %d delivered file(s)", len(rows), extra={"mode": mode})
        return len(rows)

    def run_once(self, conn: psycopg.Connection[Any]) -> int:
        # Retention may have been changed live by an admin (runtime settings).
        cleanup = apply_runtime(self.settings, load_runtime(conn, self.settings)).cleanup
        deleted = 0
        while batch := self.delete_batch(conn, cleanup.retention_hours * 3600, "retention"):
            deleted += batch
        if self.storage.usage_percent() >= cleanup.emergency_start_percent:
            log.warning("storage above %.0f%%: emergency cleanup", cleanup.emergency_start_percent)
            while self.storage.usage_percent() > cleanup.emergency_target_percent:
                batch = self.delete_batch(conn, 0, "emergency")
                if not batch:
                    log.error("storage still above target; nothing delivered is left to delete")
                    break
                deleted += batch
        return deleted

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with connect(self.settings, autocommit=True, service="cleanup") as conn:
                    while not self.stop.is_set():
                        self.run_once(conn)
                        self.stop.wait(self.settings.cleanup.interval_seconds)
            except psycopg.OperationalError as exc:
                log.error("database unavailable: %s", type(exc).__name__)
                self.stop.wait(5)
