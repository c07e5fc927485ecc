"""Request and response bodies that are the API's own (services define the domain models)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class RefreshRequest(Body):
    refresh_token: str = Field(min_length=1, max_length=512)


class PasswordChange(Body):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class PasswordReset(Body):
    password: str = Field(min_length=1, max_length=1024)


class UserOut(BaseModel):
    id: int
    username: str
    roles: list[str]
    disabled: bool = False
    locked_until: dt.datetime | None = None
    created_at: dt.datetime | None = None


class SessionOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth 2 token type, not a secret
    expires_in: int
    refresh_token: str
    user: UserOut


class UserCreate(Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    roles: list[str] = Field(min_length=1, max_length=4)


class UserUpdate(Body):
    roles: list[str] | None = Field(default=None, max_length=4)
    disabled: bool | None = None


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int


class ReplayRequest(Body):
    destination_id: int = Field(ge=1)


class IdsRequest(Body):
    ids: list[int] = Field(min_length=1, max_length=10_000)


class RetryRequest(Body):
    ids: list[int] | None = Field(default=None, max_length=10_000)
    destination_id: int | None = Field(default=None, ge=1)


class ReorderRequest(Body):
    ids: list[int] = Field(min_length=1, max_length=10_000)


class Count(BaseModel):
    count: int


class EchoOut(BaseModel):
    ok: bool
    status: int | None
    round_trip_ms: float
    detail: str


class ChainOut(BaseModel):
    ok: bool
    checked: int
    first_broken_id: int | None
    detail: str


class RuleTestOut(BaseModel):
    matched_rules: list[str]
    destinations: list[str]


JSON = dict[str, Any]
