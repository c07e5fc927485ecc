"""Destinations: the DICOM peers instances are forwarded to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.rows import class_row
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dicom_gw.config import AETitle
from dicom_gw.services import NotFound, ServiceError


class DestinationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    ae_title: AETitle
    host: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.:-]+$")
    port: int = Field(ge=1, le=65535)
    calling_ae_title: AETitle = "DICOM_GW"
    tls_enabled: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    max_associations: int = Field(default=1, ge=1, le=16)
    batch_size: int = Field(default=50, ge=1, le=1000)
    max_retries: int = Field(default=10, ge=0, le=1000)
    backoff_base_seconds: float = Field(default=5, gt=0, le=86400)
    backoff_cap_seconds: float = Field(default=900, gt=0, le=7 * 86400)
    mode: Literal["instance", "study"] = "instance"
    study_quiet_seconds: float = Field(default=60, ge=0, le=86400)
    warning_is_success: bool = True
    enabled: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> DestinationSpec:
        if self.backoff_cap_seconds < self.backoff_base_seconds:
            raise ValueError("backoff_cap_seconds must not be below backoff_base_seconds")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        return self


@dataclass
class Destination:
    id: int
    name: str
    ae_title: str
    host: str
    port: int
    calling_ae_title: str
    tls_enabled: bool
    tls_ca_file: str | None
    tls_cert_file: str | None
    tls_key_file: str | None
    max_associations: int
    batch_size: int
    max_retries: int
    backoff_base_seconds: float
    backoff_cap_seconds: float
    mode: str
    study_quiet_seconds: float
    warning_is_success: bool
    enabled: bool


_COLUMNS = ", ".join(Destination.__dataclass_fields__)
_FIELDS = [name for name in DestinationSpec.model_fields]


def _write(conn: psycopg.Connection[Any], sql: str, values: dict[str, Any]) -> Destination:
    try:
        with conn.transaction(), conn.cursor(row_factory=class_row(Destination)) as cur:
            row = cur.execute(sql, values).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        raise ServiceError("name", f"a destination named '{values['name']}' exists") from exc
    assert row is not None
    return row


def create_destination(conn: psycopg.Connection[Any], spec: DestinationSpec) -> Destination:
    return _write(
        conn,
        f"INSERT INTO destinations ({', '.join(_FIELDS)})"
        f" VALUES ({', '.join('%(' + f + ')s' for f in _FIELDS)}) RETURNING {_COLUMNS}",
        spec.model_dump(),
    )


def update_destination(
    conn: psycopg.Connection[Any], name: str, changes: dict[str, Any]
) -> Destination:
    current = get_destination(conn, name)
    merged = {f: getattr(current, f) for f in _FIELDS} | changes
    spec = DestinationSpec.model_validate(merged)
    return _write(
        conn,
        f"UPDATE destinations SET {', '.join(f'{f} = %({f})s' for f in _FIELDS)},"
        f" updated_at = now() WHERE id = %(id)s RETURNING {_COLUMNS}",
        spec.model_dump() | {"id": current.id},
    )


def list_destinations(conn: psycopg.Connection[Any]) -> list[Destination]:
    with conn.cursor(row_factory=class_row(Destination)) as cur:
        return cur.execute(f"SELECT {_COLUMNS} FROM destinations ORDER BY name").fetchall()


def get_destination(conn: psycopg.Connection[Any], name_or_id: str | int) -> Destination:
    with conn.cursor(row_factory=class_row(Destination)) as cur:
        if isinstance(name_or_id, int) or str(name_or_id).isdigit():
            cur.execute(f"SELECT {_COLUMNS} FROM destinations WHERE id = %s", (int(name_or_id),))
        else:
            cur.execute(f"SELECT {_COLUMNS} FROM destinations WHERE name = %s", (name_or_id,))
        row = cur.fetchone()
    if row is None:
        raise NotFound("destination", f"no destination '{name_or_id}'")
    return row


def delete_destination(conn: psycopg.Connection[Any], name: str) -> None:
    destination = get_destination(conn, name)
    [(open_count,)] = conn.execute(
        "SELECT count(*) FROM deliveries WHERE destination_id = %s"
        " AND state NOT IN ('sent', 'dead', 'cancelled')",
        (destination.id,),
    ).fetchall()
    if open_count:
        raise ServiceError(
            "destination", f"{open_count} deliveries are still open; disable it or cancel them"
        )
    try:
        with conn.transaction():
            conn.execute(
                "DELETE FROM rule_destinations WHERE destination_id = %s", (destination.id,)
            )
            conn.execute("DELETE FROM destinations WHERE id = %s", (destination.id,))
    except psycopg.errors.ForeignKeyViolation as exc:
        raise ServiceError(
            "destination", "it has delivery history; disable it instead of deleting it"
        ) from exc
