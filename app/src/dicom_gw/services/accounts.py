"""User accounts and sessions: create, list, change roles, disable, passwords, login, refresh.

Login failures are counted per account and lock it for a while after too many; the error for an
unknown user and for a wrong password is the same, and takes the same time. Refresh tokens are
single use: presenting one that was already used means it was stolen or replayed, so the whole
family (every token descended from that login) is revoked.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from dicom_gw.config import AuthSettings
from dicom_gw.security import passwords, tokens
from dicom_gw.security.rbac import ROLES
from dicom_gw.services import NotFound, ServiceError


@dataclass(frozen=True)
class UserRecord:
    id: int
    username: str
    roles: list[str]
    disabled: bool
    locked_until: dt.datetime | None
    created_at: dt.datetime


class LoginFailed(Exception):
    """Unknown user, wrong password or disabled account: callers see one message."""


class AccountLocked(Exception):
    def __init__(self, until: dt.datetime) -> None:
        super().__init__(f"Account locked until {until.isoformat(timespec='seconds')}")
        self.until = until


class RefreshRejected(Exception):
    def __init__(self, reason: str, reused: bool = False, user_id: int | None = None) -> None:
        super().__init__(reason)
        self.reused = reused
        self.user_id = user_id


@dataclass(frozen=True)
class Session:
    access_token: str
    expires_in: int
    refresh_token: str
    user: UserRecord


def _validate_roles(roles: list[str]) -> list[str]:
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ServiceError("roles", f"unknown role(s): {', '.join(unknown)}")
    if not roles:
        raise ServiceError("roles", "at least one role is required")
    return sorted(set(roles))


def _check_password(password: str, username: str, auth: AuthSettings) -> None:
    problems = passwords.policy_problems(password, username, auth.password_min_length)
    if problems:
        raise ServiceError("password", "; ".join(problems))


_USER = "id, username, roles, disabled, locked_until, created_at"
_USERNAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def create_user(
    conn: psycopg.Connection[Any],
    auth: AuthSettings,
    username: str,
    password: str,
    roles: list[str],
) -> UserRecord:
    username = username.strip()
    if not _USERNAME.fullmatch(username):
        raise ServiceError("username", "1-64 letters, digits, '.', '_' or '-'")
    roles = _validate_roles(roles)
    _check_password(password, username, auth)
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                f"INSERT INTO users (username, password_hash, roles) VALUES (%s, %s, %s)"
                f" RETURNING {_USER}",
                (username, passwords.hash_password(password), roles),
            ).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        raise ServiceError("username", f"a user named '{username}' exists") from exc
    assert row is not None
    return UserRecord(**row)


def list_users(conn: psycopg.Connection[Any]) -> list[UserRecord]:
    with conn.cursor(row_factory=dict_row) as cur:
        return [
            UserRecord(**r) for r in cur.execute(f"SELECT {_USER} FROM users ORDER BY username")
        ]


def get_user(conn: psycopg.Connection[Any], user_id: int) -> UserRecord:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {_USER} FROM users WHERE id = %s", (user_id,)).fetchone()
    if row is None:
        raise NotFound("user", f"no user {user_id}")
    return UserRecord(**row)


def update_user(
    conn: psycopg.Connection[Any], user_id: int, roles: list[str] | None, disabled: bool | None
) -> UserRecord:
    get_user(conn, user_id)
    if roles is not None:
        conn.execute(
            "UPDATE users SET roles = %s, updated_at = now() WHERE id = %s",
            (_validate_roles(roles), user_id),
        )
    if disabled is not None:
        conn.execute(
            "UPDATE users SET disabled = %s, updated_at = now() WHERE id = %s", (disabled, user_id)
        )
        if disabled:
            revoke_sessions(conn, user_id)
    return get_user(conn, user_id)


def set_password(
    conn: psycopg.Connection[Any], auth: AuthSettings, user_id: int, password: str
) -> None:
    user = get_user(conn, user_id)
    _check_password(password, user.username, auth)
    conn.execute(
        "UPDATE users SET password_hash = %s, password_changed_at = now(), failed_logins = 0,"
        " locked_until = NULL, updated_at = now() WHERE id = %s",
        (passwords.hash_password(password), user_id),
    )
    revoke_sessions(conn, user_id)


def change_own_password(
    conn: psycopg.Connection[Any], auth: AuthSettings, user_id: int, current: str, new: str
) -> None:
    row = conn.execute("SELECT password_hash FROM users WHERE id = %s", (user_id,)).fetchone()
    if row is None or not passwords.verify_password(row[0], current):
        raise ServiceError("current_password", "is not correct")
    set_password(conn, auth, user_id, new)


def revoke_sessions(conn: psycopg.Connection[Any], user_id: int) -> None:
    conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = %s AND revoked_at IS NULL",
        (user_id,),
    )


def _issue(
    conn: psycopg.Connection[Any], auth: AuthSettings, key: str, user: UserRecord, family: str
) -> Session:
    access, expires_in = tokens.issue_access_token(
        key, user.id, user.username, user.roles, auth.access_token_minutes
    )
    refresh, refresh_hash = tokens.new_refresh_token()
    conn.execute(
        "INSERT INTO refresh_tokens (user_id, family, token_hash, expires_at)"
        " VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
        (user.id, family, refresh_hash, auth.refresh_token_hours * 3600),
    )
    return Session(access, expires_in, refresh, user)


def login(
    conn: psycopg.Connection[Any], auth: AuthSettings, key: str, username: str, password: str
) -> Session:
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {_USER}, password_hash, failed_logins FROM users WHERE username = %s"
            " FOR UPDATE",
            (username,),
        ).fetchone()
        if row is None:
            passwords.verify_password(None, password)  # same work as a real check
            raise LoginFailed
        now = dt.datetime.now(dt.UTC)
        if row["locked_until"] is not None and row["locked_until"] > now:
            raise AccountLocked(row["locked_until"])
        if row["disabled"] or not passwords.verify_password(row["password_hash"], password):
            failures = row["failed_logins"] + 1
            if failures >= auth.max_failed_logins:
                until = now + dt.timedelta(minutes=auth.lockout_minutes)
                cur.execute(
                    "UPDATE users SET failed_logins = 0, locked_until = %s WHERE id = %s",
                    (until, row["id"]),
                )
                # Raised after the transaction commits: the lockout must persist.
                raise_after: Exception | None = AccountLocked(until)
            else:
                cur.execute(
                    "UPDATE users SET failed_logins = %s WHERE id = %s", (failures, row["id"])
                )
                raise_after = None
        else:
            raise_after = None
            if passwords.needs_rehash(row["password_hash"]):
                cur.execute(
                    "UPDATE users SET password_hash = %s WHERE id = %s",
                    (passwords.hash_password(password), row["id"]),
                )
            cur.execute(
                "UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = %s",
                (row["id"],),
            )
            user = UserRecord(**{k: row[k] for k in UserRecord.__dataclass_fields__})
            return _issue(conn, auth, key, user, str(uuid.uuid4()))
    if raise_after is not None:
        raise raise_after
    raise LoginFailed


def refresh(conn: psycopg.Connection[Any], auth: AuthSettings, key: str, token: str) -> Session:
    token_hash = tokens.refresh_token_hash(token)
    failure: RefreshRejected | None
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT id, user_id, family, expires_at, used_at, revoked_at FROM refresh_tokens"
            " WHERE token_hash = %s FOR UPDATE",
            (token_hash,),
        ).fetchone()
        if row is None:
            raise RefreshRejected("unknown refresh token")
        if row["used_at"] is not None or row["revoked_at"] is not None:
            cur.execute(
                "UPDATE refresh_tokens SET revoked_at = now() WHERE family = %s"
                " AND revoked_at IS NULL",
                (row["family"],),
            )
            reused = row["used_at"] is not None
            failure = RefreshRejected(
                "refresh token reused" if reused else "refresh token revoked",
                reused,
                row["user_id"],
            )
        elif row["expires_at"] < dt.datetime.now(dt.UTC):
            failure = RefreshRejected("refresh token expired", user_id=row["user_id"])
        else:
            failure = None
            cur.execute("UPDATE refresh_tokens SET used_at = now() WHERE id = %s", (row["id"],))
            user = get_user(conn, row["user_id"])
            if user.disabled:
                failure = RefreshRejected("account disabled", user_id=user.id)
            else:
                return _issue(conn, auth, key, user, row["family"])
    assert failure is not None
    raise failure


def logout(conn: psycopg.Connection[Any], token: str) -> int | None:
    """Revoke the session (the token's family). Returns the user id, if the token was known."""
    row = conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family ="
        " (SELECT family FROM refresh_tokens WHERE token_hash = %s) AND revoked_at IS NULL"
        " RETURNING user_id",
        (tokens.refresh_token_hash(token),),
    ).fetchone()
    return int(row[0]) if row else None
