"""Settings that are safe to change while the gateway runs, stored in the database.

Retention, the disk watermark and the calling AE allow-list can be changed from the API (audited)
and take effect within seconds: receivers and the cleanup worker re-read them periodically. The
configuration file keeps the values used until someone overrides them.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict, Field

from dicom_gw.config import AllowedCaller, Settings


class RuntimeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retention_hours: float = Field(ge=0)
    disk_watermark_percent: float = Field(gt=0, le=100)
    allow_any_caller: bool
    allowed_callers: list[AllowedCaller]


class RuntimeUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retention_hours: float | None = Field(default=None, ge=0)
    disk_watermark_percent: float | None = Field(default=None, gt=0, le=100)
    allow_any_caller: bool | None = None
    allowed_callers: list[AllowedCaller] | None = None


def load_runtime(conn: psycopg.Connection[Any], settings: Settings) -> RuntimeSettings:
    values: dict[str, Any] = {
        "retention_hours": settings.cleanup.retention_hours,
        "disk_watermark_percent": settings.storage.disk_watermark_percent,
        "allow_any_caller": settings.dicom.allow_any_caller,
        "allowed_callers": [c.model_dump() for c in settings.dicom.allowed_callers],
    }
    for key, value in conn.execute("SELECT key, value FROM runtime_settings").fetchall():
        if key in values:
            values[key] = value
    return RuntimeSettings.model_validate(values)


def update_runtime(
    conn: psycopg.Connection[Any], settings: Settings, update: RuntimeUpdate, actor: str
) -> RuntimeSettings:
    changes = update.model_dump(exclude_none=True, mode="json")
    with conn.transaction():
        for key, value in changes.items():
            conn.execute(
                "INSERT INTO runtime_settings (key, value, updated_by) VALUES (%s, %s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now(),"
                " updated_by = EXCLUDED.updated_by",
                (key, json.dumps(value), actor),
            )
    return load_runtime(conn, settings)


def apply_runtime(settings: Settings, runtime: RuntimeSettings) -> Settings:
    """A copy of the settings with the live overrides applied (receivers, cleanup)."""
    return settings.model_copy(
        update={
            "dicom": settings.dicom.model_copy(
                update={
                    "allow_any_caller": runtime.allow_any_caller,
                    "allowed_callers": runtime.allowed_callers,
                }
            ),
            "storage": settings.storage.model_copy(
                update={"disk_watermark_percent": runtime.disk_watermark_percent}
            ),
            "cleanup": settings.cleanup.model_copy(
                update={"retention_hours": runtime.retention_hours}
            ),
        }
    )
