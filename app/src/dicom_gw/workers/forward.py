"""The forwarding worker: deliver each claimed instance to its destination, at least once.

Fairness. Every destination gets its own sender thread per association slot, so a destination
that is down or slow only ever occupies its own threads; the others keep flowing. A slot is a
PostgreSQL advisory lock (destination, slot), so however many forward processes run, a
destination never gets more parallel associations than it allows.

At-least-once. A batch is claimed with a lease (``FOR UPDATE SKIP LOCKED``) that a heartbeat
extends while the batch is being sent; outcomes are written after the batch. A worker killed
mid-batch leaves its lease to lapse and the batch is claimed again: instances it had already
sent go again (duplicates are allowed, and receivers treat a resent SOP Instance UID as such),
none is lost.

Integrity. Each file's SHA-256 is checked against the one recorded at receipt before it is sent;
a missing or changed file is dead-lettered at once with the reason, never retried, never sent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import socket
import threading
import time
from collections import OrderedDict
from typing import Any

import psycopg

from dicom_gw import metrics
from dicom_gw.config import Settings
from dicom_gw.db.engine import connect
from dicom_gw.dicom.scu import (
    MAX_CONTEXTS,
    AssociationFailed,
    FailureKind,
    StoreResult,
    Timeouts,
    open_association,
    send_file,
)
from dicom_gw.dicom.storage import Storage
from dicom_gw.queue import (
    DELIVERY_CHANNEL,
    DeliveryOutcome,
    DeliveryTask,
    backoff_seconds,
    claim_deliveries,
    extend_delivery_leases,
    record_outcomes,
    release_quiet_studies,
    seconds_until_due,
)
from dicom_gw.services.destinations import Destination, list_destinations
from dicom_gw.spool import EventSpool, spool_dir

log = logging.getLogger(__name__)


class Forwarder:
    """One forward worker process: a sender thread per (destination, association slot)."""

    def __init__(self, settings: Settings, name: str | None = None) -> None:
        self.settings = settings
        self.name = name or f"forward@{socket.gethostname()}:{os.getpid()}"
        self.storage = Storage(settings.storage.root, fsync=settings.storage.fsync)
        self.stop = threading.Event()
        self.destinations: dict[int, Destination] = {}
        self.wake: dict[int, threading.Event] = {}
        self.senders: dict[tuple[int, int], DestinationSender] = {}
        self.events = EventSpool(
            spool_dir(settings.storage.root), "forward", settings.dbpool.segment_max_records
        )
        forward = settings.forward
        self.timeouts = Timeouts(
            forward.acse_timeout_seconds,
            forward.dimse_timeout_seconds,
            forward.network_timeout_seconds,
        )

    def refresh(self, conn: psycopg.Connection[Any]) -> None:
        self.destinations = {d.id: d for d in list_destinations(conn)}
        for destination in self.destinations.values():
            self.wake.setdefault(destination.id, threading.Event())
            for slot in range(destination.max_associations):
                key = (destination.id, slot)
                sender = self.senders.get(key)
                if sender is None or not sender.is_alive():
                    sender = DestinationSender(self, destination.id, slot)
                    self.senders[key] = sender
                    sender.start()

    def run(self) -> None:
        backoff = 1.0
        while not self.stop.is_set():
            try:
                self._serve()
                backoff = 1.0
            except psycopg.OperationalError as exc:
                log.error(
                    "database unavailable, retrying in %.0fs: %s", backoff, type(exc).__name__
                )
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
        for sender in self.senders.values():
            sender.join(timeout=self.settings.forward.dimse_timeout_seconds)
        self.events.close()

    def _serve(self) -> None:
        poll = self.settings.forward.poll_interval_seconds
        with connect(self.settings, autocommit=True, service="forward") as conn:
            conn.execute(f"LISTEN {DELIVERY_CHANNEL}")
            log.info("forward worker ready", extra={"worker": self.name})
            last_refresh = 0.0
            while not self.stop.is_set():
                now = time.monotonic()
                if now - last_refresh >= poll:
                    self.refresh(conn)
                    last_refresh = now
                if release_quiet_studies(conn):
                    for event in self.wake.values():
                        event.set()
                self.events.tick()
                for notice in conn.notifies(timeout=1.0):
                    if notice.payload.isdigit():
                        woken = self.wake.get(int(notice.payload))
                        if woken is None:  # a destination created since the last refresh
                            last_refresh = 0.0
                        else:
                            woken.set()
                    if self.stop.is_set():
                        break


class DestinationSender(threading.Thread):
    def __init__(self, forwarder: Forwarder, destination_id: int, slot: int) -> None:
        super().__init__(name=f"send-{destination_id}-{slot}", daemon=True)
        self.forwarder = forwarder
        self.destination_id = destination_id
        self.slot = slot
        self.rng = random.Random()
        self.worker = f"{forwarder.name}/{destination_id}.{slot}"
        # Recently verified hashes: a file resent in a replay need not be hashed twice a minute.
        self._verified: OrderedDict[str, str] = OrderedDict()

    def run(self) -> None:
        while not self.forwarder.stop.is_set():
            try:
                with connect(self.forwarder.settings, autocommit=True, service="forward") as conn:
                    self._serve(conn)
            except psycopg.OperationalError as exc:
                log.error("sender lost the database: %s", type(exc).__name__)
                self.forwarder.stop.wait(2.0)

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        forwarder = self.forwarder
        poll = forwarder.settings.forward.poll_interval_seconds
        holding_slot = False
        while not forwarder.stop.is_set():
            destination = forwarder.destinations.get(self.destination_id)
            wake = forwarder.wake[self.destination_id]
            if destination is None or self.slot >= destination.max_associations:
                return  # deleted, or fewer slots now: the thread ends
            if not destination.enabled:
                wake.wait(poll)
                wake.clear()
                continue
            if not holding_slot:
                row = conn.execute(
                    "SELECT pg_try_advisory_lock(%s, %s)", (self.destination_id, self.slot)
                ).fetchone()
                holding_slot = bool(row and row[0])
                if not holding_slot:  # another forward process serves this slot
                    forwarder.stop.wait(poll)
                    continue
            tasks = claim_deliveries(
                conn,
                destination.id,
                self.worker,
                destination.batch_size,
                forwarder.settings.forward.lease_seconds,
            )
            if not tasks:
                due = seconds_until_due(conn, destination.id)
                wake.wait(poll if due is None else min(poll, max(due, 0.05)))
                wake.clear()
                continue
            outcomes = self.send_batch(conn, destination, tasks)
            record_outcomes(conn, outcomes, self.worker)

    # -- one batch ------------------------------------------------------------------------
    def send_batch(
        self, conn: psycopg.Connection[Any], destination: Destination, tasks: list[DeliveryTask]
    ) -> list[DeliveryOutcome]:
        lease = self.forwarder.settings.forward.lease_seconds
        stop_heartbeat = threading.Event()

        def heartbeat() -> None:
            while not stop_heartbeat.wait(lease / 3):
                try:
                    extend_delivery_leases(conn, [t.id for t in tasks], self.worker, lease)
                except psycopg.Error:
                    return

        beat = threading.Thread(target=heartbeat, daemon=True)
        beat.start()
        try:
            return self._send(destination, tasks)
        finally:
            stop_heartbeat.set()
            beat.join()

    def _verify(self, task: DeliveryTask) -> str | None:
        """None when the stored file is intact, else why it must not be sent."""
        if self._verified.get(task.storage_path) == task.sha256:
            return None
        try:
            path = self.forwarder.storage.absolute(task.storage_path)
            with path.open("rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        except FileNotFoundError:
            return "integrity: stored file is missing"
        except (OSError, ValueError) as exc:
            return f"integrity: stored file unreadable: {exc}"
        if digest != task.sha256:
            return "integrity: stored file no longer matches its SHA-256"
        self._verified[task.storage_path] = task.sha256
        while len(self._verified) > 1024:
            self._verified.popitem(last=False)
        return None

    def _failure(
        self, destination: Destination, task: DeliveryTask, status: int | None, reason: str
    ) -> DeliveryOutcome:
        attempt = task.attempts + 1
        if attempt > destination.max_retries:
            metrics.DEAD_LETTERS.labels(destination=destination.name).inc()
            return DeliveryOutcome(
                task.id, status, False, f"{reason} (gave up after {attempt} attempts)", dead=True
            )
        delay = backoff_seconds(
            attempt, destination.backoff_base_seconds, destination.backoff_cap_seconds, self.rng
        )
        return DeliveryOutcome(task.id, status, False, reason, retry_in=delay)

    def _send(self, destination: Destination, tasks: list[DeliveryTask]) -> list[DeliveryOutcome]:
        outcomes: list[DeliveryOutcome] = []
        sendable: list[DeliveryTask] = []
        for task in tasks:
            problem = self._verify(task)
            if problem:
                log.error("not sending a damaged file", extra={"delivery": task.id})
                outcomes.append(DeliveryOutcome(task.id, None, False, problem, dead=True))
            else:
                sendable.append(task)
        if not sendable:
            return outcomes

        contexts = sorted({(t.sop_class_uid, t.transfer_syntax_uid) for t in sendable})
        if len(contexts) > MAX_CONTEXTS:
            # An association offers at most 128 presentation contexts; the rest wait for the
            # next batch rather than fail as if the destination had refused them.
            proposed = set(contexts[:MAX_CONTEXTS])
            later = [
                t for t in sendable if (t.sop_class_uid, t.transfer_syntax_uid) not in proposed
            ]
            outcomes += [
                DeliveryOutcome(t.id, None, False, "next association", counted=False) for t in later
            ]
            sendable = [t for t in sendable if t not in later]
            contexts = contexts[:MAX_CONTEXTS]
        try:
            assoc = open_association(destination, contexts, self.forwarder.timeouts)
        except AssociationFailed as exc:
            self._count(destination, exc.kind.value, len(sendable))
            return outcomes + [self._failure(destination, t, None, str(exc)) for t in sendable]

        try:
            for index, task in enumerate(sendable):
                if self.forwarder.stop.is_set() or not assoc.is_established:
                    # Not attempted: back to the queue as it was, no retry spent.
                    outcomes += [
                        DeliveryOutcome(t.id, None, False, "not attempted", counted=False)
                        for t in sendable[index:]
                    ]
                    break
                outcomes.append(self._store(assoc, destination, task))
        finally:
            if assoc.is_established:
                assoc.release()
        return outcomes

    def _store(self, assoc: Any, destination: Destination, task: DeliveryTask) -> DeliveryOutcome:
        started = time.perf_counter()
        path = self.forwarder.storage.absolute(task.storage_path)
        result: StoreResult = send_file(
            assoc, path, task.sop_class_uid, task.transfer_syntax_uid, task.sop_instance_uid
        )
        elapsed = time.perf_counter() - started
        metrics.FORWARD_SECONDS.labels(destination=destination.name).observe(elapsed)
        if result.success or (result.warning and destination.warning_is_success):
            outcome = "sent" if result.success else "sent with warning"
            self._count(destination, outcome, 1)
            self.forwarder.events.metric(
                "forward",
                outcome,
                elapsed,
                size_bytes=task.size_bytes,
                destination_id=destination.id,
            )
            return DeliveryOutcome(task.id, result.status, True)
        if result.warning:
            reason = f"warning status 0x{result.status or 0:04X} (configured to retry)"
        else:
            reason = f"{result.kind or FailureKind.FAILURE_STATUS}: {result.detail}"
        self._count(destination, str(result.kind or "warning"), 1)
        return self._failure(destination, task, result.status, reason)

    @staticmethod
    def _count(destination: Destination, outcome: str, n: int) -> None:
        metrics.FORWARDED.labels(destination=destination.name, outcome=outcome).inc(n)
