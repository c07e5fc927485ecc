"""Server-Sent Events for the UI, fed by PostgreSQL LISTEN/NOTIFY.

The ingest worker notifies ``gw_events`` when an instance is indexed, the forward worker when a
batch's outcomes are recorded; each browser gets them as they happen, plus a heartbeat that keeps
proxies from closing an idle stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from dicom_gw.api.deps import State
from dicom_gw.db.engine import conninfo

router = APIRouter(prefix="/api/v1", tags=["events"])

CHANNEL = "gw_events"
HEARTBEAT_SECONDS = 15.0


async def _stream(request: Request, dsn: str) -> AsyncIterator[str]:
    yield "retry: 3000\n\n"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f"LISTEN {CHANNEL}")
        while not await request.is_disconnected():
            quiet = True
            async for notice in conn.notifies(timeout=HEARTBEAT_SECONDS, stop_after=1):
                quiet = False
                try:
                    payload = json.loads(notice.payload)
                    kind = str(payload.pop("type"))
                except (ValueError, KeyError, AttributeError):
                    continue
                yield f"event: {kind}\ndata: {json.dumps(payload)}\n\n"
            if quiet:
                yield "event: heartbeat\ndata: {}\n\n"


@router.get("/events", response_class=StreamingResponse)
async def events(request: Request, state: State) -> StreamingResponse:
    return StreamingResponse(
        _stream(request, conninfo(state.settings, "api-events")),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
