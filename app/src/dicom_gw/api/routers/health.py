"""Liveness, readiness, and each component's state for the UI."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from dicom_gw.api.deps import State
from dicom_gw.api.state import ApiState
from dicom_gw.db.migrate import head_revision
from dicom_gw.dicom.storage import Storage

router = APIRouter(tags=["health"])

SERVICES = ("scp", "ingest", "forward", "dbpool", "cleanup")


def _checks(state: ApiState) -> list[dict[str, Any]]:
    components: list[dict[str, Any]] = []
    connected: set[str] = set()
    try:
        with state.pool.connection(timeout=3) as conn:
            revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            rows = conn.execute(
                "SELECT DISTINCT application_name FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name LIKE 'dicom-gw-%'"
            ).fetchall()
            connected = {str(r[0]).removeprefix("dicom-gw-") for r in rows}
        components.append({"name": "database", "status": "ok", "detail": "reachable"})
        head = head_revision()
        at_head = revision is not None and revision[0] == head
        components.append(
            {
                "name": "migrations",
                "status": "ok" if at_head else "error",
                "detail": f"at {revision[0] if revision else 'none'}, head {head}",
            }
        )
    except Exception as exc:
        components.append({"name": "database", "status": "error", "detail": type(exc).__name__})
        components.append({"name": "migrations", "status": "unknown", "detail": "no database"})
    storage = Storage(state.settings.storage.root)
    try:
        storage.tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=storage.tmp_dir, prefix="health-"):
            pass
        components.append({"name": "storage", "status": "ok", "detail": "writable"})
    except OSError as exc:
        components.append({"name": "storage", "status": "error", "detail": exc.strerror or ""})
    usage = storage.usage_percent() if os.path.isdir(storage.root) else 100.0
    watermark = state.settings.storage.disk_watermark_percent
    components.append(
        {
            "name": "disk",
            "status": "ok" if usage < watermark else "error",
            "detail": f"{usage:.1f}% used, watermark {watermark:.0f}%",
        }
    )
    for service in SERVICES:
        components.append(
            {
                "name": service,
                "status": "ok" if service in connected else "unknown",
                "detail": "connected to the database"
                if service in connected
                else "no connection seen",
            }
        )
    return components


@router.get("/healthz", include_in_schema=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
def readyz(state: State) -> JSONResponse:
    checks = [
        c for c in _checks(state) if c["name"] in ("database", "migrations", "storage", "disk")
    ]
    ready = all(c["status"] == "ok" for c in checks)
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/api/v1/health", response_model=dict[str, Any])
def health(state: State) -> dict[str, Any]:
    components = _checks(state)
    degraded = any(c["status"] == "error" for c in components)
    return {"status": "degraded" if degraded else "ok", "components": components}
