"""Routing rules: CRUD, reorder, and a tester that shows where a file would go."""

from __future__ import annotations

import tempfile
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, Response, UploadFile
from pydicom import dcmread

from dicom_gw import audit
from dicom_gw.api.deps import Db, State, actor
from dicom_gw.api.schemas import ReorderRequest, RuleTestOut
from dicom_gw.routing import RoutingContext, RuleSpec, route
from dicom_gw.services import rules as service
from dicom_gw.services.destinations import list_destinations

router = APIRouter(prefix="/api/v1/rules", tags=["rules"])

MAX_TEST_FILE = 64 * 1024 * 1024


def _out(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "position": row["position"],
        "enabled": row["enabled"],
        "stop_processing": row["stop_processing"],
        "is_default": row["is_default"],
        "match": row["match"],
        "conditions": row["conditions"],
        "destinations": list(row["destination_names"]),
    }


def _find(conn: Any, rule_id: int) -> dict[str, Any]:
    for row in service.list_rules(conn):
        if row["id"] == rule_id:
            return row
    raise HTTPException(404, "No such rule")


@router.get("", response_model=list[dict[str, Any]])
def list_rules(conn: Db) -> list[dict[str, Any]]:
    return [_out(r) for r in service.list_rules(conn)]


@router.post("", response_model=dict[str, Any], status_code=201)
def create(body: RuleSpec, request: Request, conn: Db, state: State) -> dict[str, Any]:
    rule_id = service.save_rule(conn, body)
    audit.record(
        conn,
        actor(request),
        "rule.create",
        "success",
        f"rule:{rule_id}",
        body.model_dump(mode="json"),
        state.settings.audit,
    )
    return _out(_find(conn, rule_id))


@router.post("/reorder", status_code=204)
def reorder(body: ReorderRequest, request: Request, conn: Db, state: State) -> Response:
    known = {r["id"] for r in service.list_rules(conn)}
    if set(body.ids) != known or len(body.ids) != len(known):
        raise HTTPException(422, "ids must list every rule exactly once")
    with conn.transaction():
        for position, rule_id in enumerate(body.ids, start=1):
            conn.execute(
                "UPDATE routing_rules SET position = %s, updated_at = now() WHERE id = %s",
                (position * 10, rule_id),
            )
    audit.record(
        conn,
        actor(request),
        "rule.reorder",
        "success",
        None,
        {"ids": body.ids},
        state.settings.audit,
    )
    return Response(status_code=204)


@router.post("/test", response_model=RuleTestOut)
async def test_rules(
    conn: Db,
    file: Annotated[UploadFile, File(description="A DICOM file")],
    calling_ae: Annotated[str, Form(max_length=16)] = "",
    called_ae: Annotated[str, Form(max_length=16)] = "",
    source_ip: Annotated[str | None, Form(max_length=64)] = None,
) -> RuleTestOut:
    with tempfile.SpooledTemporaryFile(max_size=MAX_TEST_FILE) as spool:
        size = 0
        while chunk := await file.read(1 << 20):
            size += len(chunk)
            if size > MAX_TEST_FILE:
                raise HTTPException(413, "The test file is larger than 64 MB")
            spool.write(chunk)
        spool.seek(0)
        try:
            ds = dcmread(spool, stop_before_pixels=True, force=False)
        except Exception as exc:
            raise HTTPException(422, f"Not a DICOM file: {type(exc).__name__}") from exc
    rules = service.load_active_rules(conn)
    decision = route(rules, RoutingContext(calling_ae, called_ae, source_ip, ds))
    names = {d.id: d.name for d in list_destinations(conn)}
    return RuleTestOut(
        matched_rules=decision.matched_rules,
        destinations=[names[i] for i in decision.destinations if i in names],
    )


@router.get("/{rule_id}", response_model=dict[str, Any])
def get(rule_id: int, conn: Db) -> dict[str, Any]:
    return _out(_find(conn, rule_id))


@router.put("/{rule_id}", response_model=dict[str, Any])
def replace(
    rule_id: int, body: RuleSpec, request: Request, conn: Db, state: State
) -> dict[str, Any]:
    _find(conn, rule_id)
    service.save_rule(conn, body, rule_id)
    audit.record(
        conn,
        actor(request),
        "rule.update",
        "success",
        f"rule:{rule_id}",
        body.model_dump(mode="json"),
        state.settings.audit,
    )
    return _out(_find(conn, rule_id))


@router.delete("/{rule_id}", status_code=204)
def delete(rule_id: int, request: Request, conn: Db, state: State) -> Response:
    found = _find(conn, rule_id)
    service.delete_rule(conn, found["name"])
    audit.record(
        conn,
        actor(request),
        "rule.delete",
        "success",
        f"rule:{rule_id}",
        {"name": found["name"]},
        state.settings.audit,
    )
    return Response(status_code=204)
