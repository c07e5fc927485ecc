"""The ingest worker: turn durable received files into indexed patients, studies, series, instances.

It claims jobs in batches (``FOR UPDATE SKIP LOCKED``, so several workers never take the same
job), sleeps on ``LISTEN ingest_jobs`` between batches with a poll as a fallback for lost
notifications, and indexes a batch in one transaction together with marking its jobs done, so an
instance is indexed exactly once even when a lease lapses and another worker takes the job over.

Why a batch per transaction: a modality sends a series, so the instances of one batch share their
patient, study and series. Indexing them together upserts each of those rows once per batch
instead of once per instance (one PHI encryption per patient, not per image) and sends the
statements in one pipeline, which cut the worker's and PostgreSQL's CPU per instance several
times over (docs/performance.md). If anything in a batch fails, the batch is rolled back and its
instances are indexed one transaction each, so one bad instance costs only itself.

Commits are asynchronous (``synchronous_commit = off``) for the same reason as the SCP's: the
index is derived data. If PostgreSQL crashes, it loses at most the last few hundred milliseconds
of commits, always a suffix of the WAL; the lost jobs are then claimed again (their lease lapses)
or re-recorded from the durable files by reconciliation, and indexed again.

Parsing reads the header only (``stop_before_pixels``): routing and the index need attributes,
never pixel data, and a 1 GB multi-frame object must not be read to index it. A file pydicom
cannot parse is moved to ``quarantine/`` with the reason recorded: kept, not dropped, not retried.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_gw import metrics
from dicom_gw.config import Settings
from dicom_gw.db.engine import connect
from dicom_gw.dicom.storage import Storage
from dicom_gw.queue import (
    INGEST_CHANNEL,
    IngestJobRow,
    claim_ingest_jobs,
    create_deliveries_many,
    exhausted_ingest_jobs,
    finish_ingest_jobs,
    quarantine_ingest_job,
    release_ingest_job,
)
from dicom_gw.recovery import recover_incoming
from dicom_gw.routing import RoutingContext, RoutingDecision, Rule, route
from dicom_gw.security.phi import PGP_OPTIONS, PhiKey, load_phi_key
from dicom_gw.services.rules import load_active_rules
from dicom_gw.spool import EventSpool, spool_dir

log = logging.getLogger(__name__)


class Unparsable(Exception):
    """The file is not DICOM the index can use; quarantine it, retrying cannot help."""


@dataclass(frozen=True)
class Header:
    """The attributes the index keeps (PS3.3 patient, study, series and instance modules)."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str | None
    birth_date: str | None
    sex: str | None
    study_date: dt.date | None
    study_time: str | None
    accession_number: str | None
    study_description: str | None
    modality: str | None
    series_number: int | None
    series_description: str | None
    body_part: str | None
    instance_number: int | None


def _text(ds: Dataset, keyword: str, limit: int = 64) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    # NUL is not valid in DICOM text and PostgreSQL cannot store it: drop it from the index
    # (the stored file keeps every byte as received).
    return str(value).replace("\x00", "").strip()[:limit] or None


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _date(value: str | None) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return None


def read_header(path: os.PathLike[str]) -> tuple[Header, Dataset]:
    try:
        ds = dcmread(path, stop_before_pixels=True)
        header = Header(
            sop_instance_uid=_text(ds, "SOPInstanceUID") or "",
            sop_class_uid=_text(ds, "SOPClassUID") or "",
            study_instance_uid=_text(ds, "StudyInstanceUID") or "",
            series_instance_uid=_text(ds, "SeriesInstanceUID") or "",
            patient_id=_text(ds, "PatientID") or "",
            issuer_of_patient_id=_text(ds, "IssuerOfPatientID") or "",
            patient_name=_text(ds, "PatientName", 324),
            birth_date=_text(ds, "PatientBirthDate", 16),
            sex=_text(ds, "PatientSex", 16),
            study_date=_date(_text(ds, "StudyDate", 16)),
            study_time=_text(ds, "StudyTime", 32),
            accession_number=_text(ds, "AccessionNumber"),
            study_description=_text(ds, "StudyDescription", 128),
            modality=_text(ds, "Modality", 16),
            series_number=_int(ds, "SeriesNumber"),
            series_description=_text(ds, "SeriesDescription", 128),
            body_part=_text(ds, "BodyPartExamined"),
            instance_number=_int(ds, "InstanceNumber"),
        )
    except Exception as exc:  # pydicom raises many types on corrupt input; all mean "unusable"
        raise Unparsable(f"not parsable as DICOM: {type(exc).__name__}: {exc}"[:500]) from exc
    missing = [
        name
        for name in (
            "sop_instance_uid",
            "sop_class_uid",
            "study_instance_uid",
            "series_instance_uid",
        )
        if not getattr(header, name)
    ]
    if missing:
        raise Unparsable(f"missing required attribute(s): {', '.join(missing)}")
    return header, ds


_SUPERSEDE = """
UPDATE instances SET is_latest = false WHERE sop_instance_uid = %s AND is_latest RETURNING id
"""

_SUPERSEDE_ANY = """
UPDATE instances SET is_latest = false WHERE sop_instance_uid = ANY(%s) AND is_latest
RETURNING id, sop_instance_uid
"""

_PATIENT = """
INSERT INTO patients (patient_key, patient_id_enc, patient_name_enc, name_grams, birth_date_enc,
                      sex)
VALUES (%(key)s, pgp_sym_encrypt(%(pid)s, %(pass)s, %(pgp)s),
        pgp_sym_encrypt(%(name)s, %(pass)s, %(pgp)s), %(grams)s,
        pgp_sym_encrypt(%(birth)s, %(pass)s, %(pgp)s), %(sex)s)
ON CONFLICT (patient_key) DO UPDATE
   SET patient_name_enc = EXCLUDED.patient_name_enc, name_grams = EXCLUDED.name_grams,
       birth_date_enc = EXCLUDED.birth_date_enc, sex = EXCLUDED.sex, updated_at = now()
RETURNING id
"""

_STUDY = """
INSERT INTO studies (study_instance_uid, patient_id, study_date, study_time, accession_number,
                     study_description, modalities, calling_ae, instance_count,
                     first_received_at, last_received_at)
VALUES (%(uid)s, %(patient)s, %(date)s, %(time)s, %(accession)s, %(description)s,
        %(modalities)s, %(calling_ae)s, %(new)s, %(first)s, %(last)s)
ON CONFLICT (study_instance_uid) DO UPDATE
   SET instance_count = studies.instance_count + %(new)s,
       last_received_at = greatest(studies.last_received_at, EXCLUDED.last_received_at),
       modalities = ARRAY(SELECT DISTINCT unnest(studies.modalities || EXCLUDED.modalities)
                          ORDER BY 1),
       patient_id = EXCLUDED.patient_id,
       study_date = COALESCE(EXCLUDED.study_date, studies.study_date),
       accession_number = COALESCE(EXCLUDED.accession_number, studies.accession_number),
       study_description = COALESCE(EXCLUDED.study_description, studies.study_description)
RETURNING id
"""

_SERIES = """
INSERT INTO series (series_instance_uid, study_id, modality, series_number, series_description,
                    body_part, instance_count, last_received_at)
VALUES (%(uid)s, %(study)s, %(modality)s, %(number)s, %(description)s, %(body_part)s, %(new)s,
        %(received)s)
ON CONFLICT (series_instance_uid) DO UPDATE
   SET instance_count = series.instance_count + %(new)s,
       last_received_at = greatest(series.last_received_at, EXCLUDED.last_received_at)
RETURNING id
"""

_INSTANCE = """
INSERT INTO instances (sop_instance_uid, sop_class_uid, series_id, instance_number,
                       transfer_syntax_uid, size_bytes, sha256, storage_path, received_at,
                       calling_ae, called_ae, peer_address, ingest_job_id)
VALUES (%(uid)s, %(sop_class)s, %(series)s, %(number)s, %(ts)s, %(size)s, %(sha256)s, %(path)s,
        %(received)s, %(calling_ae)s, %(called_ae)s, %(peer)s, %(job)s)
RETURNING id
"""


def detail_study(row: Any) -> int | None:
    return int(row[0]) if row else None


class _LeaseLost(Exception):
    """Another worker took this job over after our lease lapsed; its result wins."""


class _BatchNotApplicable(Exception):
    """The batch cannot be indexed as one (the caller indexes its instances one by one)."""


# What rolls a batch back to one-by-one indexing: conflicts with another worker (deadlock,
# serialization), a value or constraint one instance breaks, a lease lost. A lost connection is not
# among them: the worker reconnects and the jobs' leases bring them back.
_BATCH_FALLBACK = (
    _BatchNotApplicable,
    _LeaseLost,
    psycopg.errors.TransactionRollback,
    psycopg.DataError,
    psycopg.IntegrityError,
)


@dataclass
class _Parsed:
    """A claimed job with its parsed header, and what indexing it in a batch learns."""

    job: IngestJobRow
    header: Header
    ds: Dataset
    patient_key: bytes = b""
    instance_id: int = 0


class IngestWorker:
    def __init__(self, settings: Settings, name: str | None = None) -> None:
        self.settings = settings
        self.name = name or f"ingest@{socket.gethostname()}:{os.getpid()}"
        self.storage = Storage(settings.storage.root, fsync=settings.storage.fsync)
        self.phi: PhiKey = load_phi_key(settings.security.phi_key_file)
        self.stop = threading.Event()
        self.events = EventSpool(
            spool_dir(settings.storage.root), "ingest", settings.dbpool.segment_max_records
        )
        self.rules: list[Rule] = []
        self.study_mode_destinations: set[int] = set()

    def load_routing(self, conn: psycopg.Connection[Any]) -> None:
        """Rules and destination modes, fresh for each batch: an edit applies within a batch."""
        self.rules = load_active_rules(conn)
        rows = conn.execute("SELECT id FROM destinations WHERE mode = 'study'").fetchall()
        self.study_mode_destinations = {int(row[0]) for row in rows}

    def _patient_row(self, header: Header) -> dict[str, Any]:
        """The _PATIENT parameters: the blind index as key, PHI encrypted inside PostgreSQL."""
        return {
            "key": self.phi.blind_index(header.patient_id, header.issuer_of_patient_id),
            "pid": header.patient_id or None,
            "name": header.patient_name,
            "grams": self.phi.name_grams(header.patient_name),
            "birth": header.birth_date,
            "sex": header.sex,
            "pass": self.phi.passphrase,
            "pgp": PGP_OPTIONS,
        }

    # -- one job ---------------------------------------------------------------------------
    def index(
        self, conn: psycopg.Connection[Any], job: IngestJobRow, header: Header, ds: Dataset
    ) -> int:
        """Index and route one instance and finish its job, in one transaction.

        Routing inside the same transaction means an indexed instance always has its deliveries:
        there is no moment at which a crash could leave it indexed but unrouted.
        """
        with conn.transaction(), conn.cursor() as cur:
            superseded = cur.execute(_SUPERSEDE, (header.sop_instance_uid,)).fetchall()
            new = 0 if superseded else 1
            patient_id = cur.execute(
                _PATIENT,
                self._patient_row(header),
            ).fetchone()
            study_id = cur.execute(
                _STUDY,
                {
                    "uid": header.study_instance_uid,
                    "patient": patient_id[0] if patient_id else None,
                    "date": header.study_date,
                    "time": header.study_time,
                    "accession": header.accession_number,
                    "description": header.study_description,
                    "modalities": [header.modality] if header.modality else [],
                    "calling_ae": job.calling_ae,
                    "new": new,
                    "first": job.received_at,
                    "last": job.received_at,
                },
            ).fetchone()
            series_id = cur.execute(
                _SERIES,
                {
                    "uid": header.series_instance_uid,
                    "study": study_id[0] if study_id else None,
                    "modality": header.modality,
                    "number": header.series_number,
                    "description": header.series_description,
                    "body_part": header.body_part,
                    "new": new,
                    "received": job.received_at,
                },
            ).fetchone()
            instance = cur.execute(
                _INSTANCE,
                self._instance_params(job, header, series_id[0] if series_id else None),
            ).fetchone()
            instance_id = int(instance[0]) if instance else 0
            decision = self._route(job, ds)
            create_deliveries_many(
                cur,
                [(instance_id, study_id[0] if study_id else None, decision.destinations)],
                self.study_mode_destinations,
            )
            self._notify(cur, detail_study(study_id), instance_id)
            if finish_ingest_jobs(cur, [job.id], self.name) != 1:
                raise _LeaseLost
        detail: dict[str, Any] = {"rules": decision.matched_rules}
        if superseded:
            detail["superseded"] = [row[0] for row in superseded]
        self._emit_indexed(job.id, instance_id, detail)
        return instance_id

    @staticmethod
    def _instance_params(
        job: IngestJobRow, header: Header, series_id: int | None
    ) -> dict[str, Any]:
        return {
            "uid": header.sop_instance_uid,
            "sop_class": header.sop_class_uid,
            "series": series_id,
            "number": header.instance_number,
            "ts": job.transfer_syntax_uid or "",
            "size": job.size_bytes,
            "sha256": job.sha256,
            "path": job.storage_path,
            "received": job.received_at,
            "calling_ae": job.calling_ae or "",
            "called_ae": job.called_ae or "",
            "peer": job.peer_address,
            "job": job.id,
        }

    def _route(self, job: IngestJobRow, ds: Dataset) -> RoutingDecision:
        context = RoutingContext(job.calling_ae or "", job.called_ae or "", job.peer_address, ds)
        return route(self.rules, context)

    def _emit_indexed(self, job_id: int, instance_id: int, detail: dict[str, Any]) -> None:
        self.events.emit(
            "ingest_events", job_id=job_id, instance_id=instance_id, kind="indexed", detail=detail
        )

    @staticmethod
    def _notify(cur: psycopg.Cursor[Any], study_id: int | None, instance_id: int) -> None:
        """Tell live views (the API's SSE stream) that a study changed; they re-read it."""
        payload = {"type": "ingest", "study_id": study_id, "instance_id": instance_id}
        cur.execute("SELECT pg_notify('gw_events', %s)", (json.dumps(payload),))

    def quarantine(
        self, conn: psycopg.Connection[Any], job_id: int, storage_path: str, reason: str
    ) -> None:
        new_path: str | None = None
        try:
            new_path = self.storage.quarantine(storage_path)
        except FileNotFoundError:
            reason = f"{reason} (file missing)"
        except OSError as exc:
            reason = f"{reason} (could not move: {exc.strerror})"
        with conn.transaction(), conn.cursor() as cur:
            quarantine_ingest_job(cur, job_id, new_path, reason)
        self.events.emit(
            "ingest_events", job_id=job_id, kind="quarantined", detail={"reason": reason}
        )
        metrics.INGESTED.labels(outcome="quarantined").inc()
        log.warning("ingest job quarantined", extra={"job": job_id, "reason": reason})

    def index_batch(self, conn: psycopg.Connection[Any], batch: list[_Parsed]) -> None:
        """Index and route a batch in one transaction: each patient, study and series once.

        The result equals indexing the instances one by one in claim order: a study keeps the
        first instance's time and calling AE, and takes the latest non-empty date, accession and
        description; a patient's demographics are the last instance's. Rows are locked in a
        fixed order (by key) so that two workers indexing overlapping batches cannot deadlock.
        Raises on any failure, leaving nothing of the batch behind (the caller then indexes the
        instances one by one).
        """
        uids = [item.header.sop_instance_uid for item in batch]
        if len(set(uids)) != len(uids):
            raise _BatchNotApplicable("the batch holds the same instance twice")
        events: list[tuple[int, int, dict[str, Any]]] = []
        with conn.transaction(), conn.cursor() as cur:
            superseded: dict[str, list[int]] = {}
            for instance_id, uid in cur.execute(_SUPERSEDE_ANY, (uids,)).fetchall():
                superseded.setdefault(uid, []).append(instance_id)

            patients: dict[bytes, dict[str, Any]] = {}
            for item in batch:
                h = item.header
                row = self._patient_row(h)
                item.patient_key = row["key"]
                patients[row["key"]] = row
            patient_ids = dict(
                zip(
                    sorted(patients),
                    self._upsert(cur, _PATIENT, [patients[key] for key in sorted(patients)]),
                    strict=True,
                )
            )

            studies: dict[str, dict[str, Any]] = {}
            series: dict[str, dict[str, Any]] = {}
            for item in batch:
                h, job = item.header, item.job
                new = 0 if h.sop_instance_uid in superseded else 1
                study = studies.setdefault(
                    h.study_instance_uid,
                    {
                        "uid": h.study_instance_uid,
                        "time": h.study_time,
                        "modalities": [],
                        "calling_ae": job.calling_ae,
                        "new": 0,
                        "first": job.received_at,
                        "last": job.received_at,
                        "date": None,
                        "accession": None,
                        "description": None,
                    },
                )
                study["patient"] = patient_ids[item.patient_key]
                study["new"] += new
                study["first"] = min(study["first"], job.received_at)
                study["last"] = max(study["last"], job.received_at)
                for field_name, value in (
                    ("date", h.study_date),
                    ("accession", h.accession_number),
                    ("description", h.study_description),
                ):
                    if value is not None:
                        study[field_name] = value
                if h.modality and h.modality not in study["modalities"]:
                    study["modalities"] = sorted([*study["modalities"], h.modality])
                one = series.setdefault(
                    h.series_instance_uid,
                    {
                        "uid": h.series_instance_uid,
                        "study_uid": h.study_instance_uid,
                        "modality": h.modality,
                        "number": h.series_number,
                        "description": h.series_description,
                        "body_part": h.body_part,
                        "new": 0,
                        "received": job.received_at,
                    },
                )
                one["new"] += new
                one["received"] = max(one["received"], job.received_at)
            study_ids = dict(
                zip(
                    sorted(studies),
                    self._upsert(cur, _STUDY, [studies[uid] for uid in sorted(studies)]),
                    strict=True,
                )
            )
            for one in series.values():
                one["study"] = study_ids[one["study_uid"]]
            series_ids = dict(
                zip(
                    sorted(series),
                    self._upsert(cur, _SERIES, [series[uid] for uid in sorted(series)]),
                    strict=True,
                )
            )

            ordered = sorted(batch, key=lambda item: item.header.sop_instance_uid)
            instance_ids = self._upsert(
                cur,
                _INSTANCE,
                [
                    self._instance_params(
                        item.job, item.header, series_ids[item.header.series_instance_uid]
                    )
                    for item in ordered
                ],
            )
            deliveries: list[tuple[int, int | None, dict[int, int]]] = []
            for item, instance_id in zip(ordered, instance_ids, strict=True):
                item.instance_id = instance_id
                study_id = study_ids[item.header.study_instance_uid]
                decision = self._route(item.job, item.ds)
                deliveries.append((instance_id, study_id, decision.destinations))
                detail: dict[str, Any] = {"rules": decision.matched_rules}
                if item.header.sop_instance_uid in superseded:
                    detail["superseded"] = superseded[item.header.sop_instance_uid]
                events.append((item.job.id, instance_id, detail))
            create_deliveries_many(cur, deliveries, self.study_mode_destinations)
            for study_uid, study_id in study_ids.items():
                last = max(
                    item.instance_id
                    for item in batch
                    if item.header.study_instance_uid == study_uid
                )
                self._notify(cur, study_id, last)
            if finish_ingest_jobs(cur, [item.job.id for item in batch], self.name) != len(batch):
                raise _LeaseLost
        for job_id, instance_id, detail in events:  # only what was committed
            self._emit_indexed(job_id, instance_id, detail)

    @staticmethod
    def _upsert(cur: psycopg.Cursor[Any], sql: str, rows: list[dict[str, Any]]) -> list[int]:
        """Run one RETURNING id statement per row in a single pipeline; the ids in row order."""
        cur.executemany(sql, rows, returning=True)
        ids: list[int] = []
        while True:
            row = cur.fetchone()
            ids.append(int(row[0]) if row else 0)
            if not cur.nextset():
                return ids

    def process_batch(self, conn: psycopg.Connection[Any], jobs: list[IngestJobRow]) -> None:
        """Parse every claimed job, quarantine what cannot be used, index the rest."""
        started = time.perf_counter()
        parsed: list[_Parsed] = []
        for job in jobs:
            if self.stop.is_set():
                release_ingest_job(conn, job.id, "worker stopping")
                continue
            try:
                header, ds = read_header(self.storage.absolute(job.storage_path))
            except FileNotFoundError:
                self.quarantine(conn, job.id, job.storage_path, "file missing from storage")
                continue
            except Unparsable as exc:
                self.quarantine(conn, job.id, job.storage_path, str(exc))
                continue
            parsed.append(_Parsed(job, header, ds))
        if not parsed:
            return
        try:
            self.index_batch(conn, parsed)
        except _BATCH_FALLBACK as exc:
            # Rolled back: index one by one, so that only a bad instance is set aside.
            log.info("indexing the batch one by one: %s", type(exc).__name__)
            for item in parsed:
                self.process(conn, item)
            return
        share = (time.perf_counter() - started) / len(parsed)
        for item in parsed:
            self._indexed(item.job, share)

    def process(self, conn: psycopg.Connection[Any], item: _Parsed) -> None:
        started = time.perf_counter()
        job = item.job
        try:
            self.index(conn, job, item.header, item.ds)
        except _LeaseLost:
            log.info("lease lost; another worker owns the job", extra={"job": job.id})
            return
        except psycopg.OperationalError:
            raise
        except psycopg.DataError as exc:
            # A value the index cannot hold: retrying cannot help, so keep it aside.
            self.quarantine(
                conn,
                job.id,
                job.storage_path,
                f"not indexable: {type(exc).__name__}: {str(exc)[:200]}",
            )
            return
        except psycopg.Error as exc:
            log.error("ingest job failed: %s", type(exc).__name__, extra={"job": job.id})
            release_ingest_job(conn, job.id, f"database error: {type(exc).__name__}")
            return
        self._indexed(job, time.perf_counter() - started)

    def _indexed(self, job: IngestJobRow, elapsed: float) -> None:
        metrics.INGESTED.labels(outcome="indexed").inc()
        metrics.INGEST_SECONDS.observe(elapsed)
        self.events.metric("index", "indexed", elapsed, size_bytes=job.size_bytes)

    # -- the loop --------------------------------------------------------------------------
    def run_once(self, conn: psycopg.Connection[Any]) -> int:
        """Claim and process one batch. Returns how many jobs were claimed."""
        ingest = self.settings.ingest
        for job_id, storage_path in exhausted_ingest_jobs(conn, ingest.max_attempts):
            self.quarantine(
                conn, job_id, storage_path, f"gave up after {ingest.max_attempts} attempts"
            )
        jobs = claim_ingest_jobs(
            conn, self.name, ingest.batch_size, ingest.lease_seconds, ingest.max_attempts
        )
        if jobs:
            self.load_routing(conn)
            self.process_batch(conn, jobs)
        return len(jobs)

    def run(self) -> None:
        backoff = 1.0
        while not self.stop.is_set():
            try:
                self._serve()
                return
            except psycopg.OperationalError as exc:
                log.error(
                    "database unavailable, retrying in %.0fs: %s", backoff, type(exc).__name__
                )
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _serve(self) -> None:
        ingest = self.settings.ingest
        with (
            connect(self.settings, autocommit=True, service="ingest") as conn,
            connect(self.settings, autocommit=True, service="ingest") as listener,
        ):
            conn.execute("SET synchronous_commit = off")  # see the module docstring
            listener.execute(f"LISTEN {INGEST_CHANNEL}")
            recover_incoming(conn, self.storage, ingest.recovery_grace_seconds)
            reconciled = time.monotonic()
            log.info("ingest worker ready", extra={"worker": self.name})
            while not self.stop.is_set():
                if time.monotonic() - reconciled >= ingest.reconcile_interval_seconds:
                    # Receipts whose record a PostgreSQL crash lost (asynchronous commit).
                    recover_incoming(conn, self.storage, ingest.recovery_grace_seconds)
                    reconciled = time.monotonic()
                if self.run_once(conn) >= ingest.batch_size:
                    continue
                # Sleep until an insert notifies us, or the poll interval passes (a missed
                # notification, or a lease that lapsed, is then found by the next claim).
                self.events.tick()
                for _ in listener.notifies(timeout=ingest.poll_interval_seconds, stop_after=1):
                    pass
            self.events.close()
