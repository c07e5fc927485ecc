"""Access tokens (JWT, HS256, python-jose) and refresh tokens (random, stored hashed).

The signing key is read from a secrets file, never from the repository or the database. Decoding
names its one accepted algorithm, so a token claiming ``alg: none`` or another algorithm fails.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jose import JWTError, jwt

ALGORITHM = "HS256"


class TokenInvalid(Exception):
    pass


def load_key(path: Path) -> str:
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise RuntimeError(f"cannot read the JWT key file {path}: {exc.strerror}") from exc
    if len(key) < 32:
        raise RuntimeError(f"{path} must hold at least 32 characters of key")
    return key


def create_key_file(path: Path) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.touch(mode=0o600)
    path.write_text(secrets.token_urlsafe(48) + "\n")


@dataclass(frozen=True)
class AccessClaims:
    user_id: int
    username: str
    roles: list[str]
    expires_at: dt.datetime


def issue_access_token(
    key: str, user_id: int, username: str, roles: list[str], minutes: float
) -> tuple[str, int]:
    now = dt.datetime.now(dt.UTC)
    expires = now + dt.timedelta(minutes=minutes)
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "name": username,
        "roles": roles,
        "iat": int(now.timestamp()),
        "exp": int(expires.timestamp()),
        "jti": uuid.uuid4().hex,
        "typ": "access",
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM), int(minutes * 60)


def decode_access_token(key: str, token: str) -> AccessClaims:
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM])
    except JWTError as exc:
        raise TokenInvalid(str(exc)) from exc
    if claims.get("typ") != "access" or not str(claims.get("sub", "")).isdigit():
        raise TokenInvalid("not an access token")
    roles = claims.get("roles")
    if not isinstance(roles, list):
        raise TokenInvalid("malformed roles")
    return AccessClaims(
        int(claims["sub"]),
        str(claims.get("name", "")),
        [str(r) for r in roles],
        dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC),
    )


def new_refresh_token() -> tuple[str, str]:
    """A refresh token and the hash stored for it (the token itself is never stored)."""
    token = secrets.token_urlsafe(32)
    return token, refresh_token_hash(token)


def refresh_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
