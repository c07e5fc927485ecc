"""Studies: search, detail (a PHI read, audited), instance download, replay."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse

from dicom_gw import audit
from dicom_gw.api.deps import Db, State, actor
from dicom_gw.api.schemas import Page, ReplayRequest
from dicom_gw.dicom.storage import Storage
from dicom_gw.queue import replay_study
from dicom_gw.services import studies
from dicom_gw.services.destinations import get_destination

router = APIRouter(prefix="/api/v1", tags=["studies"])

Text = Annotated[str | None, Query(max_length=128)]
DeliveryState = Literal["held", "pending", "claimed", "retry", "sent", "dead", "cancelled"]
Sort = Literal[
    "last_received_at",
    "first_received_at",
    "study_date",
    "accession_number",
    "calling_ae",
    "modalities",
    "instance_count",
    "patient_name",
    "patient_id",
]


@router.get("/studies", response_model=Page[dict[str, Any]])
def search(
    request: Request,
    conn: Db,
    state: State,
    patient_name: Text = None,
    patient_id: Text = None,
    modality: Text = None,
    accession_number: Text = None,
    calling_ae: Text = None,
    study_date_from: dt.date | None = None,
    study_date_to: dt.date | None = None,
    received_from: dt.datetime | None = None,
    received_to: dt.datetime | None = None,
    delivery_state: DeliveryState | None = None,
    sort: Sort = "last_received_at",
    order: Literal["asc", "desc"] = "desc",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 25,
) -> Page[dict[str, Any]]:
    filters = studies.StudyFilters(
        patient_name=patient_name,
        patient_id=patient_id,
        modality=modality,
        accession_number=accession_number,
        calling_ae=calling_ae,
        study_date_from=study_date_from,
        study_date_to=study_date_to,
        received_from=received_from,
        received_to=received_to,
        delivery_state=delivery_state,
    )
    rows, total = studies.search_studies(
        conn, state.phi, filters, sort, order == "desc", page, page_size
    )
    used = {k: v for k, v in filters.__dict__.items() if v not in (None, "")}
    audit.record(
        conn,
        actor(request),
        "phi.study_search",
        "success",
        None,
        {"filters": sorted(used), "results": len(rows)},
        state.settings.audit,
    )
    return Page(items=rows, total=total, page=page, page_size=page_size)


@router.get("/studies/{study_id}", response_model=dict[str, Any])
def detail(study_id: int, request: Request, conn: Db, state: State) -> dict[str, Any]:
    found = studies.study_detail(conn, state.phi, study_id)
    if found is None:
        raise HTTPException(404, "No such study")
    audit.record(
        conn,
        actor(request),
        "phi.study_view",
        "success",
        f"study:{study_id}",
        syslog=state.settings.audit,
    )
    return found


@router.get("/instances/{instance_id}/file", response_class=FileResponse)
def download(instance_id: int, request: Request, conn: Db, state: State) -> FileResponse:
    found = studies.instance_file(conn, instance_id)
    if found is None or found["deleted_at"] is not None:
        raise HTTPException(404, "No such stored instance")
    storage = Storage(state.settings.storage.root)
    try:
        path = storage.absolute(found["storage_path"])
    except ValueError as exc:
        raise HTTPException(404, "No such stored instance") from exc
    if not path.is_file():
        raise HTTPException(404, "The stored file is missing")
    audit.record(
        conn,
        actor(request),
        "phi.instance_download",
        "success",
        f"instance:{instance_id}",
        {"study": found["study_id"]},
        state.settings.audit,
    )
    return FileResponse(
        path, media_type="application/dicom", filename=f"{found['sop_instance_uid']}.dcm"
    )


@router.post("/studies/{study_id}/replay", response_model=dict[str, int])
def replay(
    study_id: int, body: ReplayRequest, request: Request, conn: Db, state: State
) -> dict[str, int]:
    row = conn.execute("SELECT study_instance_uid FROM studies WHERE id = %s", (study_id,))
    found = row.fetchone()
    if found is None:
        raise HTTPException(404, "No such study")
    destination = get_destination(conn, body.destination_id)
    who = actor(request)
    count = replay_study(conn, f"replayed by {who.username} (api)", str(found[0]), destination.id)
    audit.record(
        conn,
        who,
        "queue.replay",
        "success",
        f"study:{study_id}",
        {"destination": destination.name, "queued": count},
        state.settings.audit,
    )
    return {"queued": count}
