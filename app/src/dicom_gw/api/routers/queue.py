"""The delivery queue: list, counts, history, retry and cancel (operators)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request

from dicom_gw import audit, queue
from dicom_gw.api.deps import Db, State, actor
from dicom_gw.api.schemas import Count, IdsRequest, Page, RetryRequest

router = APIRouter(prefix="/api/v1/queue", tags=["queue"])

State_ = Literal["held", "pending", "claimed", "retry", "sent", "dead", "cancelled"]


@router.get("/deliveries", response_model=Page[dict[str, Any]])
def deliveries(
    conn: Db,
    state: State_ | None = None,
    destination_id: Annotated[int | None, Query(ge=1)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[dict[str, Any]]:
    rows, total = queue.page_deliveries(conn, state, destination_id, page, page_size)
    return Page(items=rows, total=total, page=page, page_size=page_size)


@router.get("/counts", response_model=list[dict[str, Any]])
def counts(conn: Db) -> list[dict[str, Any]]:
    return queue.delivery_counts_by_destination(conn)


@router.get("/deliveries/{delivery_id}/history", response_model=list[dict[str, Any]])
def history(delivery_id: int, conn: Db) -> list[dict[str, Any]]:
    rows = queue.delivery_history(conn, delivery_id)
    if not rows:
        raise HTTPException(404, "No such delivery")
    keys = ("created_at", "from_state", "to_state", "attempts", "reason")
    return [dict(zip(keys, row, strict=True)) for row in rows]


@router.post("/retry", response_model=Count)
def retry(body: RetryRequest, request: Request, conn: Db, state: State) -> Count:
    if not body.ids and body.destination_id is None:
        raise HTTPException(422, "Give ids or a destination_id")
    who = actor(request)
    count = queue.retry_deliveries(
        conn, f"retried by {who.username} (api)", body.ids or None, body.destination_id
    )
    audit.record(
        conn,
        who,
        "queue.retry",
        "success",
        None,
        body.model_dump(exclude_none=True) | {"count": count},
        state.settings.audit,
    )
    return Count(count=count)


@router.post("/cancel", response_model=Count)
def cancel(body: IdsRequest, request: Request, conn: Db, state: State) -> Count:
    who = actor(request)
    count = queue.cancel_deliveries(conn, f"cancelled by {who.username} (api)", body.ids)
    audit.record(
        conn,
        who,
        "queue.cancel",
        "success",
        None,
        {"ids": body.ids, "count": count},
        state.settings.audit,
    )
    return Count(count=count)
