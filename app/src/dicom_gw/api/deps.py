"""Dependencies: the database connection, and the one authorization check every route passes."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dicom_gw.api.state import ApiState
from dicom_gw.audit import Actor
from dicom_gw.security.rbac import PERMISSIONS, PUBLIC
from dicom_gw.security.tokens import TokenInvalid, decode_access_token

_bearer = HTTPBearer(auto_error=False)


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.gw
    return state


def db(request: Request) -> Iterator[psycopg.Connection[Any]]:
    with api_state(request).pool.connection() as conn:
        yield conn


Db = Annotated[psycopg.Connection[Any], Depends(db)]
State = Annotated[ApiState, Depends(api_state)]


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    roles: list[str]


def _ip(text: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address((text or "").strip()))
    except ValueError:
        return None


def client_ip(request: Request) -> str | None:
    """The caller's address; X-Forwarded-For only counts when nginx (local) is the direct peer."""
    peer = _ip(request.client.host) if request.client else None
    local = peer is None or ipaddress.ip_address(peer).is_loopback
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and local:
        return _ip(forwarded.split(",")[-1]) or peer
    return peer


def actor(request: Request) -> Actor:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        return Actor(None, [], client_ip(request))
    return Actor(principal.username, principal.roles, client_ip(request))


def authorize(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """The single RBAC gate: look the route up in the table; fail closed if it is missing."""
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    permitted = PERMISSIONS.get((request.method.upper(), path))
    if permitted is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "This route is not in the RBAC table")
    if permitted is PUBLIC:
        return
    token = credentials.credentials if credentials else None
    if token is None and path == "/api/v1/events":
        token = request.query_params.get("access_token")  # EventSource cannot send headers
    if not token:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Not authenticated",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        claims = decode_access_token(api_state(request).jwt_key, token)
    except TokenInvalid as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Invalid or expired token",
            headers={"WWW-Authenticate": "Bearer"},
        ) from exc
    request.state.principal = Principal(claims.user_id, claims.username, claims.roles)
    if not permitted.intersection(claims.roles):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Your role does not allow this")


def principal(request: Request) -> Principal:
    found: Principal | None = getattr(request.state, "principal", None)
    if found is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Not authenticated")
    return found


CurrentUser = Annotated[Principal, Depends(principal)]
