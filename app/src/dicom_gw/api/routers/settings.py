"""Runtime settings that are safe to change live (admin, audited)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from dicom_gw import audit
from dicom_gw.api.deps import Db, State, actor
from dicom_gw.services.runtime import RuntimeUpdate, load_runtime, update_runtime

router = APIRouter(prefix="/api/v1/settings", tags=["settings"])


@router.get("", response_model=dict[str, Any])
def get_settings(conn: Db, state: State) -> dict[str, Any]:
    return load_runtime(conn, state.settings).model_dump(mode="json")


@router.patch("", response_model=dict[str, Any])
def patch_settings(body: RuntimeUpdate, request: Request, conn: Db, state: State) -> dict[str, Any]:
    who = actor(request)
    updated = update_runtime(conn, state.settings, body, who.username or "api")
    audit.record(
        conn,
        who,
        "settings.update",
        "success",
        None,
        body.model_dump(exclude_none=True, mode="json"),
        state.settings.audit,
    )
    return updated.model_dump(mode="json")
