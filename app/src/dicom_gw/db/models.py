"""SQLAlchemy 2 models: the DICOM index, the queues, and the shells later services fill.

The information model follows PS3.3's patient / study / series / instance hierarchy. An instance
row is one stored *file*: a SOP Instance UID sent twice is two rows (two files), the newest marked
``is_latest``, because the gateway never overwrites what it acknowledged.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Computed,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, INET, JSONB, TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

UID = String(64)  # PS3.5 UI VR: at most 64 characters
AE = String(16)  # PS3.5 AE VR: at most 16 characters


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now() -> Mapped[dt.datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class IngestState(enum.StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    DONE = "done"
    QUARANTINED = "quarantined"


class DeliveryState(enum.StrEnum):
    HELD = "held"  # study mode: waiting for the study to go quiet
    PENDING = "pending"
    CLAIMED = "claimed"
    RETRY = "retry"
    SENT = "sent"
    DEAD = "dead"
    CANCELLED = "cancelled"


class Patient(Base):
    """PHI is stored encrypted (pgcrypto); ``patient_key`` is a keyed hash for exact lookups."""

    __tablename__ = "patients"
    __table_args__ = (
        # Name search: candidates by keyed trigram hashes, then decrypt only those (0005).
        Index("ix_patients_name_grams", "name_grams", postgresql_using="gin"),
        # Rows written before 0005 until `dicom-gw migrate` has hashed them: searched by decrypt.
        Index("ix_patients_name_grams_missing", "id", postgresql_where=text("name_grams IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    patient_key: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    patient_id_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    patient_name_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    name_grams: Mapped[list[int] | None] = mapped_column(ARRAY(Integer))
    birth_date_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    sex: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
    study_date: Mapped[dt.date | None] = mapped_column(Date, index=True)
    study_time: Mapped[str | None] = mapped_column(String(32))
    accession_number: Mapped[str | None] = mapped_column(String(64), index=True)
    study_description: Mapped[str | None] = mapped_column(String(128))
    modalities: Mapped[list[str]] = mapped_column(
        ARRAY(String(16)), server_default=text("'{}'"), nullable=False
    )
    calling_ae: Mapped[str | None] = mapped_column(AE, index=True)
    instance_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    first_received_at: Mapped[dt.datetime] = _now()
    last_received_at: Mapped[dt.datetime] = _now()

    series: Mapped[list[Series]] = relationship(back_populates="study")

    __table_args__ = (
        # The studies list's default order, newest first (migration 0004).
        Index(
            "ix_studies_last_received_at_id",
            text("last_received_at DESC NULLS LAST"),
            text("id DESC"),
        ),
    )


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str | None] = mapped_column(String(128))
    body_part: Mapped[str | None] = mapped_column(String(64))
    instance_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_received_at: Mapped[dt.datetime] = _now()

    study: Mapped[Study] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    instance_number: Mapped[int | None] = mapped_column(Integer)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_path: Mapped[str] = mapped_column(Text, unique=True)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    indexed_at: Mapped[dt.datetime] = _now()
    calling_ae: Mapped[str] = mapped_column(AE)
    called_ae: Mapped[str] = mapped_column(AE)
    peer_address: Mapped[str | None] = mapped_column(INET)
    is_latest: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    ingest_job_id: Mapped[int | None] = mapped_column(ForeignKey("ingest_jobs.id"), unique=True)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "ix_instances_received_at_live",
            "received_at",
            postgresql_where=text("deleted_at IS NULL"),
        ),
        # One "current" version per SOP Instance UID; older files stay until retention.
        Index(
            "uq_instances_latest_sop_instance_uid",
            "sop_instance_uid",
            unique=True,
            postgresql_where=text("is_latest"),
        ),
    )


class IngestJob(Base):
    """What the SCP commits before it answers success: a durable file awaiting indexing."""

    __tablename__ = "ingest_jobs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    storage_path: Mapped[str] = mapped_column(Text, unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sop_instance_uid: Mapped[str | None] = mapped_column(UID)
    sop_class_uid: Mapped[str | None] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str | None] = mapped_column(UID)
    calling_ae: Mapped[str | None] = mapped_column(AE)
    called_ae: Mapped[str | None] = mapped_column(AE)
    peer_address: Mapped[str | None] = mapped_column(INET)
    received_at: Mapped[dt.datetime] = _now()
    source: Mapped[str] = mapped_column(String(16), server_default=text("'scp'"))
    state: Mapped[IngestState] = mapped_column(
        Enum(IngestState, name="ingest_state", values_callable=lambda e: [m.value for m in e]),
        server_default=IngestState.PENDING.value,
    )
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    last_error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # The claim query scans only unfinished work.
        Index(
            "ix_ingest_jobs_open",
            "id",
            postgresql_where=text("state IN ('pending', 'claimed')"),
        ),
    )


class IngestEvent(Base):
    __tablename__ = "ingest_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    instance_id: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    created_at: Mapped[dt.datetime] = _now()


class Destination(Base):
    __tablename__ = "destinations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    ae_title: Mapped[str] = mapped_column(AE)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    calling_ae_title: Mapped[str] = mapped_column(AE)
    tls_enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    tls_ca_file: Mapped[str | None] = mapped_column(Text)
    tls_cert_file: Mapped[str | None] = mapped_column(Text)
    tls_key_file: Mapped[str | None] = mapped_column(Text)
    max_associations: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    batch_size: Mapped[int] = mapped_column(Integer, server_default=text("50"))
    max_retries: Mapped[int] = mapped_column(Integer, server_default=text("10"))
    backoff_base_seconds: Mapped[float] = mapped_column(Float, server_default=text("5"))
    backoff_cap_seconds: Mapped[float] = mapped_column(Float, server_default=text("900"))
    mode: Mapped[str] = mapped_column(String(16), server_default=text("'instance'"))
    study_quiet_seconds: Mapped[float] = mapped_column(Float, server_default=text("60"))
    warning_is_success: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class RoutingRule(Base):
    __tablename__ = "routing_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    position: Mapped[int] = mapped_column(Integer, index=True)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    stop_processing: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    is_default: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    match: Mapped[str] = mapped_column(String(8), server_default=text("'all'"))
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'"))
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class RuleDestination(Base):
    __tablename__ = "rule_destinations"

    rule_id: Mapped[int] = mapped_column(
        ForeignKey("routing_rules.id", ondelete="CASCADE"), primary_key=True
    )
    destination_id: Mapped[int] = mapped_column(
        ForeignKey("destinations.id", ondelete="CASCADE"), primary_key=True
    )


class Delivery(Base):
    """One row per (instance, destination): the product's core record and the queue at once."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id"), index=True)
    destination_id: Mapped[int] = mapped_column(ForeignKey("destinations.id"))
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id"), index=True)
    rule_id: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[DeliveryState] = mapped_column(
        Enum(DeliveryState, name="delivery_state", values_callable=lambda e: [m.value for m in e]),
        server_default=DeliveryState.PENDING.value,
    )
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[dt.datetime] = _now()
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_status: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_deliveries_destination_state_next", "destination_id", "state", "next_attempt_at"),
        Index("ix_deliveries_sent_at", "sent_at", postgresql_where=text("sent_at IS NOT NULL")),
        # At most one open delivery per (instance, destination); a replay after a final state
        # adds a new row, so history is kept.
        Index(
            "uq_deliveries_open_instance_destination",
            "instance_id",
            "destination_id",
            unique=True,
            postgresql_where=text("state NOT IN ('sent', 'dead', 'cancelled')"),
        ),
    )


class DeliveryEvent(Base):
    """Every state change of a delivery, with time and reason (written by a trigger)."""

    __tablename__ = "delivery_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(BigInteger, index=True)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _now()


class OperationMetric(Base):
    """Per-operation measurements written in batches by the DB pool worker."""

    __tablename__ = "operation_metrics"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    service: Mapped[str] = mapped_column(String(32))
    operation: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(32))
    duration_ms: Mapped[float | None] = mapped_column(Float)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    destination_id: Mapped[int | None] = mapped_column(Integer)


class SpoolSegment(Base):
    """Spool segments already loaded by the DB pool worker (makes loading idempotent)."""

    __tablename__ = "spool_segments"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    loaded_at: Mapped[dt.datetime] = _now()


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(16)), server_default=text("'{}'"))
    disabled: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    failed_logins: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    password_changed_at: Mapped[dt.datetime] = _now()
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class RefreshToken(Base):
    """Refresh tokens are stored hashed, used once, and grouped in families for reuse detection."""

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family: Mapped[str] = mapped_column(String(36), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    issued_at: Mapped[dt.datetime] = _now()
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class RuntimeSetting(Base):
    """Settings safe to change while running (retention, watermark, AE allow-list)."""

    __tablename__ = "runtime_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONB)
    updated_at: Mapped[dt.datetime] = _now()
    updated_by: Mapped[str | None] = mapped_column(String(64))


class AuditEntry(Base):
    """Append-only and hash-chained by triggers (migration 0003); ``search`` feeds the auditors'
    full-text filter."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_search", "search", postgresql_using="gin"),
        Index("ix_audit_log_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    created_at: Mapped[dt.datetime] = _now()
    actor: Mapped[str | None] = mapped_column(String(64))
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(16)), server_default=text("'{}'"))
    source_ip: Mapped[str | None] = mapped_column(INET)
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    search: Mapped[Any] = mapped_column(
        TSVECTOR,
        Computed(
            "to_tsvector('simple', coalesce(actor, '') || ' ' || action || ' ' ||"
            " coalesce(target, '') || ' ' || outcome || ' ' || detail::text)",
            persisted=True,
        ),
    )


__all__ = [
    "AuditEntry",
    "Base",
    "Delivery",
    "DeliveryEvent",
    "DeliveryState",
    "Destination",
    "IngestEvent",
    "IngestJob",
    "IngestState",
    "Instance",
    "OperationMetric",
    "Patient",
    "RefreshToken",
    "RoutingRule",
    "RuleDestination",
    "RuntimeSetting",
    "Series",
    "SpoolSegment",
    "Study",
    "User",
]
