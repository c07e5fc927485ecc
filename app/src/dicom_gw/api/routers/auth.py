"""Login, token refresh with rotation and reuse detection, logout, the current user."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status

from dicom_gw import audit
from dicom_gw.api.deps import CurrentUser, Db, State, actor
from dicom_gw.api.schemas import LoginRequest, PasswordChange, RefreshRequest, SessionOut, UserOut
from dicom_gw.services import accounts

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])

INVALID = "Invalid username or password"


def _session_out(session: accounts.Session) -> SessionOut:
    user = session.user
    return SessionOut(
        access_token=session.access_token,
        expires_in=session.expires_in,
        refresh_token=session.refresh_token,
        user=UserOut(id=user.id, username=user.username, roles=user.roles),
    )


@router.post("/login", response_model=SessionOut)
def login(body: LoginRequest, request: Request, conn: Db, state: State) -> SessionOut:
    who = audit.Actor(body.username, [], actor(request).source_ip)
    try:
        session = accounts.login(
            conn, state.settings.auth, state.jwt_key, body.username, body.password
        )
    except accounts.AccountLocked as exc:
        audit.record(
            conn, who, "auth.login", "locked", f"user:{body.username}", syslog=state.settings.audit
        )
        raise HTTPException(status.HTTP_423_LOCKED, str(exc)) from exc
    except accounts.LoginFailed as exc:
        audit.record(
            conn, who, "auth.login", "failure", f"user:{body.username}", syslog=state.settings.audit
        )
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, INVALID) from exc
    audit.record(
        conn,
        audit.Actor(session.user.username, session.user.roles, who.source_ip),
        "auth.login",
        "success",
        f"user:{session.user.id}",
        syslog=state.settings.audit,
    )
    return _session_out(session)


@router.post("/refresh", response_model=SessionOut)
def refresh(body: RefreshRequest, request: Request, conn: Db, state: State) -> SessionOut:
    try:
        session = accounts.refresh(conn, state.settings.auth, state.jwt_key, body.refresh_token)
    except accounts.RefreshRejected as exc:
        if exc.reused:
            audit.record(
                conn,
                actor(request),
                "auth.refresh_reuse",
                "failure",
                f"user:{exc.user_id}",
                {"reason": "token family revoked"},
                syslog=state.settings.audit,
            )
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Session expired; log in again") from exc
    return _session_out(session)


@router.post("/logout", status_code=204)
def logout(body: RefreshRequest, request: Request, conn: Db, state: State) -> Response:
    user_id = accounts.logout(conn, body.refresh_token)
    if user_id is not None:
        audit.record(
            conn,
            actor(request),
            "auth.logout",
            "success",
            f"user:{user_id}",
            syslog=state.settings.audit,
        )
    return Response(status_code=204)


@router.get("/me", response_model=UserOut)
def me(user: CurrentUser, conn: Db) -> UserOut:
    record = accounts.get_user(conn, user.user_id)
    return UserOut(**record.__dict__)


@router.post("/password", status_code=204)
def change_password(
    body: PasswordChange, user: CurrentUser, request: Request, conn: Db, state: State
) -> Response:
    accounts.change_own_password(
        conn, state.settings.auth, user.user_id, body.current_password, body.new_password
    )
    audit.record(
        conn,
        actor(request),
        "auth.password_change",
        "success",
        f"user:{user.user_id}",
        syslog=state.settings.audit,
    )
    return Response(status_code=204)
