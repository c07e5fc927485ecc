"""User administration (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from dicom_gw import audit
from dicom_gw.api.deps import Db, State, actor
from dicom_gw.api.schemas import PasswordReset, UserCreate, UserOut, UserUpdate
from dicom_gw.services import accounts

router = APIRouter(prefix="/api/v1/users", tags=["users"])


@router.get("", response_model=list[UserOut])
def list_users(conn: Db) -> list[UserOut]:
    return [UserOut(**u.__dict__) for u in accounts.list_users(conn)]


@router.post("", response_model=UserOut, status_code=201)
def create_user(body: UserCreate, request: Request, conn: Db, state: State) -> UserOut:
    user = accounts.create_user(conn, state.settings.auth, body.username, body.password, body.roles)
    audit.record(
        conn,
        actor(request),
        "user.create",
        "success",
        f"user:{user.id}",
        {"username": user.username, "roles": user.roles},
        state.settings.audit,
    )
    return UserOut(**user.__dict__)


@router.patch("/{user_id}", response_model=UserOut)
def update_user(
    user_id: int, body: UserUpdate, request: Request, conn: Db, state: State
) -> UserOut:
    user = accounts.update_user(conn, user_id, body.roles, body.disabled)
    audit.record(
        conn,
        actor(request),
        "user.update",
        "success",
        f"user:{user_id}",
        body.model_dump(exclude_none=True),
        state.settings.audit,
    )
    return UserOut(**user.__dict__)


@router.post("/{user_id}/password", status_code=204)
def reset_password(
    user_id: int, body: PasswordReset, request: Request, conn: Db, state: State
) -> Response:
    accounts.set_password(conn, state.settings.auth, user_id, body.password)
    audit.record(
        conn,
        actor(request),
        "user.password_reset",
        "success",
        f"user:{user_id}",
        syslog=state.settings.audit,
    )
    return Response(status_code=204)
