"""The audit log (auditors and admins): search, CSV export, chain verification."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from dicom_gw import audit
from dicom_gw.api.deps import Db, State, actor
from dicom_gw.api.schemas import ChainOut, Page

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])

Text = Annotated[str | None, Query(max_length=256)]


def audit_filters(
    q: Text = None,
    actor_name: Annotated[str | None, Query(alias="actor", max_length=64)] = None,
    action: Text = None,
    outcome: Text = None,
    since: Annotated[dt.datetime | None, Query(alias="from")] = None,
    until: Annotated[dt.datetime | None, Query(alias="to")] = None,
) -> audit.AuditFilters:
    """The filters shared by search and export, as one dependency."""
    return audit.AuditFilters(
        q=q, actor=actor_name, action=action, outcome=outcome, since=since, until=until
    )


Filters = Annotated[audit.AuditFilters, Depends(audit_filters)]


@router.get("", response_model=Page[dict[str, Any]])
def search(
    conn: Db,
    filters: Filters,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[dict[str, Any]]:
    rows, total = audit.search(conn, filters, page, page_size)
    return Page(items=rows, total=total, page=page, page_size=page_size)


@router.get("/export", response_class=StreamingResponse)
def export(request: Request, conn: Db, state: State, filters: Filters) -> StreamingResponse:
    audit.record(
        conn,
        actor(request),
        "audit.export",
        "success",
        None,
        {k: str(v) for k, v in filters.__dict__.items() if v},
        state.settings.audit,
    )
    lines = list(audit.export_csv(conn, filters))  # the connection returns to the pool after
    return StreamingResponse(
        iter(lines),
        media_type="text/csv",
        headers={"Content-Disposition": "attachment; filename=audit.csv"},
    )


@router.get("/verify", response_model=ChainOut)
def verify(request: Request, conn: Db, state: State) -> ChainOut:
    verdict = audit.verify(conn)
    audit.record(
        conn,
        actor(request),
        "audit.verify",
        "success" if verdict.ok else "failure",
        None,
        {"checked": verdict.checked, "first_broken_id": verdict.first_broken_id},
        state.settings.audit,
    )
    return ChainOut(**verdict.__dict__)
