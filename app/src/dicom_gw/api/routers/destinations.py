"""Destinations: CRUD (admin) and C-ECHO (operator)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request, Response

from dicom_gw import audit
from dicom_gw.api.deps import Db, State, actor
from dicom_gw.api.schemas import EchoOut
from dicom_gw.dicom.scu import Timeouts, echo
from dicom_gw.services import destinations as service
from dicom_gw.services.destinations import DestinationSpec

router = APIRouter(prefix="/api/v1/destinations", tags=["destinations"])


@router.get("", response_model=list[dict[str, Any]])
def list_destinations(conn: Db) -> list[dict[str, Any]]:
    return [asdict(d) for d in service.list_destinations(conn)]


@router.post("", response_model=dict[str, Any], status_code=201)
def create(body: DestinationSpec, request: Request, conn: Db, state: State) -> dict[str, Any]:
    created = service.create_destination(conn, body)
    audit.record(
        conn,
        actor(request),
        "destination.create",
        "success",
        f"destination:{created.id}",
        body.model_dump(),
        state.settings.audit,
    )
    return asdict(created)


@router.get("/{destination_id}", response_model=dict[str, Any])
def get(destination_id: int, conn: Db) -> dict[str, Any]:
    return asdict(service.get_destination(conn, destination_id))


@router.patch("/{destination_id}", response_model=dict[str, Any])
def update(
    destination_id: int, body: dict[str, Any], request: Request, conn: Db, state: State
) -> dict[str, Any]:
    updated = service.update_destination(conn, str(destination_id), body)
    audit.record(
        conn,
        actor(request),
        "destination.update",
        "success",
        f"destination:{destination_id}",
        body,
        state.settings.audit,
    )
    return asdict(updated)


@router.delete("/{destination_id}", status_code=204)
def delete(destination_id: int, request: Request, conn: Db, state: State) -> Response:
    target = service.get_destination(conn, destination_id)
    service.delete_destination(conn, target.name)
    audit.record(
        conn,
        actor(request),
        "destination.delete",
        "success",
        f"destination:{destination_id}",
        {"name": target.name},
        state.settings.audit,
    )
    return Response(status_code=204)


@router.post("/{destination_id}/echo", response_model=EchoOut)
def echo_destination(destination_id: int, request: Request, conn: Db, state: State) -> EchoOut:
    target = service.get_destination(conn, destination_id)
    forward = state.settings.forward
    result = echo(
        target,
        Timeouts(
            forward.acse_timeout_seconds,
            forward.dimse_timeout_seconds,
            min(forward.network_timeout_seconds, 10),
        ),
    )
    audit.record(
        conn,
        actor(request),
        "destination.echo",
        "success" if result.ok else "failure",
        f"destination:{destination_id}",
        {"detail": result.detail},
        state.settings.audit,
    )
    return EchoOut(
        ok=result.ok, status=result.status, round_trip_ms=result.round_trip_ms, detail=result.detail
    )
