"""The invariant checker, and the senders whose acknowledgements it holds the gateway to.

After any scenario the checker proves, from what a sender saw and what the gateway and its
destinations hold:

- every instance the sender saw acknowledged with success (0x0000) is **stored** with the same
  data set bytes as its source, and the SHA-256 recorded for it is the stored file's;
- it is **indexed once**: exactly one ``is_latest`` row in ``instances`` for its SOP Instance UID;
- it is **delivered** to every destination its rules chose: a copy at that destination's sink whose
  data set bytes equal the source's;
- nothing is dead-lettered (a delivery, or an ingest job quarantined) without a recorded reason;
- nothing half-written is indexed: every indexed file exists and hashes to what was recorded.

``lost`` counts acknowledged instances that fail any of stored / indexed / delivered. ``duplicated``
counts extra copies: a second indexed version of an acknowledged instance (a sender resent it after
its answer was lost) and each extra copy at a sink (at-least-once delivery resent it after a crash
or a timeout). Duplicates are allowed by the guarantees; losses are not.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pydicom
from pydicom.filereader import read_file_meta_info

from tests.support import dataset_bytes, wait_for

SUCCESS = 0x0000


def _plain_url(db_url: str) -> str:
    return db_url.replace("postgresql+psycopg://", "postgresql://")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- what a sender saw ------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One C-STORE attempt: the status answered, or None with why there was none."""

    uid: str
    status: int | None
    error: str = ""
    at: float = field(default_factory=time.monotonic)  # when the answer (or its absence) came

    @property
    def success(self) -> bool:
        return self.status == SUCCESS


@dataclass
class SendRecord:
    """Every attempt a sender made, by SOP Instance UID, with the source file of each. Thread-safe:
    several senders may share one record."""

    sources: dict[str, Path] = field(default_factory=dict)
    attempts: dict[str, list[Attempt]] = field(default_factory=lambda: defaultdict(list))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, path: Path, attempt: Attempt) -> None:
        with self._lock:
            self.sources[attempt.uid] = path
            self.attempts[attempt.uid].append(attempt)

    def merge(self, other: SendRecord) -> None:
        with other._lock:
            items = [(uid, other.sources[uid], list(a)) for uid, a in other.attempts.items()]
        for _uid, path, attempts in items:
            for attempt in attempts:
                self.add(path, attempt)

    @property
    def sent(self) -> set[str]:
        with self._lock:
            return set(self.attempts)

    @property
    def acknowledged(self) -> set[str]:
        with self._lock:
            return {uid for uid, a in self.attempts.items() if any(x.success for x in a)}

    def unacknowledged_paths(self) -> list[Path]:
        with self._lock:
            return [
                self.sources[uid]
                for uid, a in self.attempts.items()
                if not any(x.success for x in a)
            ]

    def statuses(self) -> dict[int | None, int]:
        """How often each answer was seen (None: no answer: refused, aborted, cut)."""
        counts: dict[int | None, int] = defaultdict(int)
        with self._lock:
            for attempts in self.attempts.values():
                for attempt in attempts:
                    counts[attempt.status] += 1
        return dict(counts)

    def answered_between(self, start: float, end: float) -> list[Attempt]:
        with self._lock:
            return [x for a in self.attempts.values() for x in a if start <= x.at <= end]

    def failures(self) -> int:
        return sum(n for status, n in self.statuses().items() if status != SUCCESS)

    def errors(self) -> list[str]:
        with self._lock:
            return [x.error for a in self.attempts.values() for x in a if x.error]


_META_CACHE: dict[Path, tuple[str, str, str]] = {}
_META_LOCK = threading.Lock()


def file_meta(path: Path) -> tuple[str, str, str]:
    """(SOP Class UID, SOP Instance UID, Transfer Syntax UID) from a Part 10 file's meta."""
    with _META_LOCK:
        cached = _META_CACHE.get(path)
    if cached is None:
        meta = read_file_meta_info(path)
        cached = (
            str(meta.MediaStorageSOPClassUID),
            str(meta.MediaStorageSOPInstanceUID),
            str(meta.TransferSyntaxUID),
        )
        with _META_LOCK:
            _META_CACHE[path] = cached
    return cached


def send_files(
    port: int,
    files: Sequence[Path],
    record: SendRecord,
    *,
    host: str = "127.0.0.1",
    calling: str = "TESTSCU",
    called: str = "DICOM_GW",
    timeout: float = 15,
) -> bool:
    """Send files in one association, each data set as its file's bytes after the File Meta,
    and record each answer. Returns whether the association was established."""
    from tests.reliability.scu import Association, Refused

    metas = [file_meta(p) for p in files]
    contexts = sorted({(m[0], m[2]) for m in metas})
    try:
        assoc = Association(host, port, contexts, calling, called, timeout)
    except Refused as exc:
        for path, meta in zip(files, metas, strict=True):
            record.add(path, Attempt(meta[1], None, f"association {exc}"))
        return False
    try:
        for path, meta in zip(files, metas, strict=True):
            if not assoc.established:
                record.add(path, Attempt(meta[1], None, "association ended before sending"))
                continue
            stored = assoc.store(path, meta[0], meta[1], meta[2])
            record.add(path, Attempt(meta[1], stored.status, stored.error))
    finally:
        assoc.release()
    return True


class SteadyLoad(threading.Thread):
    """A modality sending under a fault: ``files`` in associations of ``per_association``, one
    association every ``interval`` seconds, then rounds resending whatever was not acknowledged
    (as a modality retries), until everything is acknowledged, ``stop()`` is called, ``rounds``
    are used up or ``deadline`` seconds have passed. Always bounded."""

    def __init__(
        self,
        port: int,
        files: Sequence[Path],
        *,
        record: SendRecord | None = None,
        per_association: int = 5,
        interval: float = 0.05,
        rounds: int = 50,
        deadline: float = 240,
        retry_backoff: float = 0.25,
        calling: str = "TESTSCU",
        called: str = "DICOM_GW",
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(name="steady-load", daemon=True)
        self.port = port
        self.files = list(files)
        self.record = record if record is not None else SendRecord()
        self.per_association = per_association
        self.interval = interval
        self.rounds = rounds
        self.deadline = deadline
        self.retry_backoff = retry_backoff
        self.calling = calling
        self.called = called
        self.host = host
        self.associations = 0
        self.rounds_done = 0
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    def _run(self) -> None:
        ends = time.monotonic() + self.deadline
        pending = list(self.files)
        for _ in range(self.rounds):
            for start in range(0, len(pending), self.per_association):
                if self._stop_event.is_set() or time.monotonic() > ends:
                    return
                chunk = pending[start : start + self.per_association]
                established = send_files(
                    self.port,
                    chunk,
                    self.record,
                    host=self.host,
                    calling=self.calling,
                    called=self.called,
                )
                self.associations += 1
                # Pace the load; back off a little more after a refusal, as a modality would.
                self._stop_event.wait(self.interval if established else self.retry_backoff)
            self.rounds_done += 1
            pending = [p for p in self.record.unacknowledged_paths() if p in set(self.files)]
            if not pending:
                return
            self._stop_event.wait(self.retry_backoff)

    def finish(self, timeout: float = 240) -> SendRecord:
        """Wait for the load to end by itself (every file acknowledged, or bounds reached)."""
        self.join(timeout)
        assert not self.is_alive(), "the sending load did not end"
        if self.error is not None:
            raise self.error
        return self.record

    def run_and_finish(self, timeout: float = 240) -> SendRecord:
        """Send in the foreground: start, then wait for the end."""
        self.start()
        return self.finish(timeout)

    def acknowledged_at_least(self, count: int) -> Callable[[], bool]:
        return lambda: len(self.record.acknowledged & self._uids()) >= count

    def _uids(self) -> set[str]:
        return {file_meta(p)[1] for p in self.files}


# -- what the gateway and the destinations hold -----------------------------------------------


@dataclass
class InvariantResult:
    sent: int
    acknowledged: int
    stored: int
    delivered: int
    lost: int
    duplicated: int
    stored_unacknowledged: int = 0
    dead_lettered: int = 0
    quarantined: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and not self.problems

    def summary(self) -> str:
        return (
            f"sent {self.sent} / acknowledged {self.acknowledged} / stored {self.stored} / "
            f"delivered {self.delivered} / lost {self.lost} / duplicated {self.duplicated}"
        )

    def explain(self, limit: int = 20) -> str:
        extra = f" (+{len(self.problems) - limit} more)" if len(self.problems) > limit else ""
        return self.summary() + "\n  " + "\n  ".join(self.problems[:limit]) + extra


Routes = Mapping[str, Collection[str]] | Callable[[str, Path], Iterable[str]] | None


def _chosen(routes: Routes, uid: str, source: Path, destinations: Collection[str]) -> set[str]:
    if routes is None:
        return set(destinations)
    if callable(routes):
        return set(routes(uid, source))
    return set(routes.get(uid, ()))


def _sink_copies(directory: Path) -> dict[str, list[str]]:
    """SOP Instance UID -> SHA-256 of the data set bytes of each copy a sink holds."""
    copies: dict[str, list[str]] = defaultdict(list)
    if not directory.exists():
        return copies
    for path in sorted(directory.rglob("*")):
        if not path.is_file():
            continue
        try:
            uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            copies[uid].append(_sha256(dataset_bytes(path)))
        except Exception:
            continue  # not a DICOM file (a sink's own bookkeeping), or still being written
    return copies


def check(
    record: SendRecord,
    db_url: str,
    storage_root: Path,
    sinks: Mapping[str, Path] | None = None,
    routes: Routes = None,
    *,
    quiet: bool = False,
) -> InvariantResult:
    """Prove the invariants once, now. ``sinks`` maps destination name -> the directory its
    sink writes to; ``routes`` says which destinations each instance should reach (default:
    every destination in ``sinks``)."""
    sinks = dict(sinks or {})
    problems: list[str] = []
    acknowledged = record.acknowledged
    with psycopg.connect(_plain_url(db_url), autocommit=True) as conn:
        instance_rows = conn.execute(
            "SELECT sop_instance_uid, storage_path, sha256, size_bytes, is_latest,"
            " deleted_at IS NOT NULL FROM instances"
        ).fetchall()
        quarantined = conn.execute(
            "SELECT id, sop_instance_uid, storage_path, last_error FROM ingest_jobs"
            " WHERE state = 'quarantined'"
        ).fetchall()
        deliveries = conn.execute(
            "SELECT d.id, i.sop_instance_uid, t.name, d.state::text, d.last_error"
            " FROM deliveries d JOIN instances i ON i.id = d.instance_id"
            " JOIN destinations t ON t.id = d.destination_id"
        ).fetchall()
        dead_events = conn.execute(
            "SELECT delivery_id, reason FROM delivery_events WHERE to_state = 'dead'"
        ).fetchall()

    by_uid: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in instance_rows:
        by_uid[row[0]].append(row)

    # Nothing half-written is indexed: every indexed file is whole and is what was recorded.
    file_hashes: dict[str, str] = {}
    for uid, path, sha256, size, _latest, deleted in instance_rows:
        if deleted:
            continue
        stored = storage_root / path
        try:
            data = stored.read_bytes()
        except FileNotFoundError:
            problems.append(f"indexed file missing: {path} ({uid})")
            continue
        file_hashes[path] = _sha256(data)
        if file_hashes[path] != sha256 or len(data) != size:
            problems.append(f"indexed file does not match its recorded SHA-256/size: {path}")

    for job_id, uid, path, reason in quarantined:
        if not (reason or "").strip():
            problems.append(f"ingest job {job_id} quarantined without a reason ({path})")
        if uid in acknowledged:
            problems.append(f"acknowledged {uid} quarantined: {reason}")

    dead_reasons = defaultdict(list)
    for delivery_id, reason in dead_events:
        dead_reasons[delivery_id].append(reason)
    dead = 0
    delivery_state: dict[tuple[str, str], list[str]] = defaultdict(list)
    for delivery_id, uid, destination, state, last_error in deliveries:
        delivery_state[(uid, destination)].append(state)
        if state == "dead":
            dead += 1
            reasons = [r for r in dead_reasons.get(delivery_id, []) if (r or "").strip()]
            if not (last_error or "").strip() or not reasons:
                problems.append(f"delivery {delivery_id} dead-lettered without a recorded reason")

    sink_copies = {name: _sink_copies(directory) for name, directory in sinks.items()}
    stored_ok = delivered_ok = lost = duplicated = 0
    for uid in sorted(acknowledged):
        source = record.sources[uid]
        expected = _sha256(dataset_bytes(source))
        rows = by_uid.get(uid, [])
        latest = [r for r in rows if r[4]]
        duplicated += max(len(rows) - 1, 0)
        whole = True
        if len(latest) != 1:
            problems.append(f"{uid}: {len(latest)} current index rows (want exactly 1)")
            whole = False
        else:
            path = latest[0][1]
            stored = storage_root / path
            if not stored.exists():
                whole = False  # reported above
            elif _sha256(dataset_bytes(stored)) != expected:
                problems.append(f"{uid}: stored data set bytes differ from the source")
                whole = False
        if whole:
            stored_ok += 1
        chosen = _chosen(routes, uid, source, sinks)
        reached = True
        for destination in sorted(chosen):
            copies = sink_copies.get(destination, {}).get(uid, [])
            duplicated += max(len(copies) - 1, 0)
            if expected not in copies:
                reached = False
                states = delivery_state.get((uid, destination), [])
                if copies:
                    problems.append(f"{uid}: copy at {destination} differs from the source")
                else:
                    problems.append(f"{uid}: not at {destination} (deliveries: {states})")
            elif "sent" not in delivery_state.get((uid, destination), []):
                problems.append(f"{uid}: at {destination} but no delivery recorded as sent")
        if reached and whole:
            delivered_ok += 1
        if not (whole and reached):
            lost += 1

    stored_unacknowledged = len(set(by_uid) - acknowledged)
    result = InvariantResult(
        sent=len(record.sent),
        acknowledged=len(acknowledged),
        stored=stored_ok,
        delivered=delivered_ok,
        lost=lost,
        duplicated=duplicated,
        stored_unacknowledged=stored_unacknowledged,
        dead_lettered=dead,
        quarantined=len(quarantined),
        problems=problems,
    )
    if not quiet:
        print(f"invariants: {result.summary()}")
    return result


def unwhole_records(db_url: str, storage_root: Path) -> list[str]:
    """Ingest jobs (recorded receipts) whose file is missing or differs from what was recorded:
    a half-written receipt that was recorded anyway. Empty when every record is whole."""
    with psycopg.connect(_plain_url(db_url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT storage_path, sha256, size_bytes FROM ingest_jobs"
            " WHERE state IN ('pending', 'claimed', 'done')"
        ).fetchall()
    problems = []
    for path, sha256, size in rows:
        try:
            data = (storage_root / path).read_bytes()
        except FileNotFoundError:
            problems.append(f"recorded receipt missing: {path}")
            continue
        if _sha256(data) != sha256 or len(data) != size:
            problems.append(f"recorded receipt differs from its record: {path}")
    return problems


def settled(db_url: str) -> bool:
    """No ingest job or delivery is still in flight (pending, claimed, or waiting to retry)."""
    with psycopg.connect(_plain_url(db_url), autocommit=True) as conn:
        (open_jobs,) = conn.execute(
            "SELECT count(*) FROM ingest_jobs WHERE state IN ('pending', 'claimed')"
        ).fetchone() or (0,)
        (open_deliveries,) = conn.execute(
            "SELECT count(*) FROM deliveries WHERE state IN ('pending', 'claimed', 'retry')"
        ).fetchone() or (0,)
    return int(open_jobs) == 0 and int(open_deliveries) == 0


def check_when_settled(
    record: SendRecord,
    db_url: str,
    storage_root: Path,
    sinks: Mapping[str, Path] | None = None,
    routes: Routes = None,
    timeout: float = 120,
) -> InvariantResult:
    """Wait until the gateway has finished with everything it was given (or ``timeout``), then
    prove the invariants. Waiting is on the database's state, never on a fixed delay."""
    last: list[InvariantResult] = []

    def done() -> bool:
        if not settled(db_url):
            return False
        last[:] = [check(record, db_url, storage_root, sinks, routes, quiet=True)]
        return last[0].ok

    with contextlib.suppress(AssertionError):
        wait_for(done, timeout=timeout, what="the gateway to settle with every invariant holding")
    return check(record, db_url, storage_root, sinks, routes)
