"""The FastAPI application: routers, the RBAC gate, error shapes, logging, and the built UI."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from dicom_gw.api.deps import authorize
from dicom_gw.api.routers import (
    audit,
    auth,
    destinations,
    events,
    health,
    metrics,
    queue,
    rules,
    studies,
    users,
)
from dicom_gw.api.routers import settings as runtime_settings
from dicom_gw.api.state import ApiState
from dicom_gw.config import Settings, get_settings
from dicom_gw.services import NotFound, ServiceError

log = logging.getLogger("dicom_gw.api")


def _field_error(field: str, message: str) -> JSONResponse:
    """The same shape FastAPI gives request validation errors, so the UI handles one shape."""
    return JSONResponse(
        {"detail": [{"loc": ["body", *field.split(".")], "msg": message, "type": "value_error"}]},
        status_code=422,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    state = ApiState.create(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.pool.open(wait=False)
        yield
        state.pool.close()

    app = FastAPI(
        title="dicom-gw",
        version="1",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.gw = state

    gate = [Depends(authorize)]
    for module in (
        auth,
        users,
        studies,
        destinations,
        rules,
        queue,
        audit,
        metrics,
        health,
        runtime_settings,
        events,
    ):
        app.include_router(module.router, dependencies=gate)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        if isinstance(exc, NotFound):
            return JSONResponse({"detail": exc.message[0].upper() + exc.message[1:]}, 404)
        return _field_error(exc.field, exc.message)

    @app.exception_handler(ValidationError)
    async def validation_error(request: Request, exc: ValidationError) -> JSONResponse:
        errors = [
            {"loc": ["body", *[str(p) for p in e["loc"]]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI echoes the offending input by default; that could be a password or PHI.
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(psycopg.DataError)
    async def data_error(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # A value PostgreSQL cannot store (out of range, malformed): the client's to correct.
        return JSONResponse({"detail": "A value in the request is not acceptable"}, 422)

    @app.exception_handler(psycopg.errors.IntegrityError)
    async def integrity_error(request: Request, exc: psycopg.errors.IntegrityError) -> JSONResponse:
        return JSONResponse({"detail": "The request conflicts with existing data"}, 409)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
        return JSONResponse({"detail": "Internal error"}, status_code=500)

    max_body = settings.api.max_body_bytes

    @app.middleware("http")
    async def request_log(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body:
            return JSONResponse({"detail": "Request body too large"}, status_code=413)
        # NUL cannot be stored in PostgreSQL text and has no place in any field of this API.
        if "%00" in request.url.query or (
            request.headers.get("content-type", "").startswith("application/json")
            and b"\\u0000" in await request.body()
        ):
            return JSONResponse({"detail": "NUL characters are not allowed"}, status_code=422)
        started = time.perf_counter()
        response = await call_next(request)
        response.headers["X-Request-ID"] = request_id
        # The path only: query strings may carry search terms (PHI) or an SSE token.
        log.info(
            "request",
            extra={
                "request_id": request_id,
                "method": request.method,
                "path": request.url.path,
                "status": response.status_code,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return response

    ui = settings.api.ui_dir
    if ui is not None and (ui / "index.html").exists():
        _mount_ui(app, ui)
    return app


def _mount_ui(app: FastAPI, ui: Path) -> None:
    """Serve the built single-page app; other paths outside /api get index.html (client routes)."""
    assets = ui / "assets"
    if assets.is_dir():
        app.mount("/assets", StaticFiles(directory=assets), name="assets")
    index = ui / "index.html"

    @app.get("/{path:path}", include_in_schema=False)
    async def spa(path: str) -> Response:
        if path.startswith("api/"):
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        candidate = (ui / path).resolve()
        if path and candidate.is_file() and candidate.is_relative_to(ui.resolve()):
            return FileResponse(candidate)
        return FileResponse(index)
