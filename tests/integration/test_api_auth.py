"""Authentication: login, lockout, refresh rotation and reuse detection, rehash, bad tokens."""

from __future__ import annotations

import base64
import json
import time

from jose import jwt

from dicom_gw.security.passwords import hash_password
from tests.api_support import PASSWORD, Api, api

__all__ = ["api"]


def test_unknown_user_and_wrong_password_get_the_same_answer(api: Api) -> None:
    unknown = api.client.post("/api/v1/auth/login", json={"username": "nobody", "password": "x"})
    wrong = api.client.post("/api/v1/auth/login", json={"username": "viewer", "password": "x"})
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json() == {"detail": "Invalid username or password"}


def test_login_returns_a_working_session(api: Api) -> None:
    session = api.login("operator")
    me = api.client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {session['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["username"] == "operator" and me.json()["roles"] == ["operator"]
    assert session["expires_in"] == 15 * 60


def test_brute_force_trips_the_lockout(api: Api) -> None:
    for _ in range(4):
        response = api.client.post(
            "/api/v1/auth/login", json={"username": "viewer", "password": "guess"}
        )
        assert response.status_code == 401
    locked = api.client.post("/api/v1/auth/login", json={"username": "viewer", "password": "guess"})
    assert locked.status_code == 423
    assert locked.json()["detail"].startswith("Account locked until")
    # Even the right password is refused while locked.
    right = api.client.post("/api/v1/auth/login", json={"username": "viewer", "password": PASSWORD})
    assert right.status_code == 423
    outcomes = api.gateway.sql(
        "SELECT outcome FROM audit_log WHERE action = 'auth.login' AND target = 'user:viewer'"
    )
    assert [o for (o,) in outcomes].count("failure") >= 4 and ("locked",) in outcomes


def test_refresh_rotates_and_reuse_revokes_the_family(api: Api) -> None:
    first = api.login("admin")
    second = api.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    # Replaying the used token is detected: refused, and the whole family is revoked...
    replay = api.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    # ...so the token issued by the legitimate rotation no longer works either.
    after = api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]}
    )
    assert after.status_code == 401
    assert api.gateway.sql(
        "SELECT count(*) FROM audit_log WHERE action = 'auth.refresh_reuse'"
    ) == [(1,)]
    stored = api.gateway.sql("SELECT token_hash FROM refresh_tokens")
    assert all(first["refresh_token"] not in h for (h,) in stored)  # only hashes are stored


def test_logout_revokes_the_refresh_token(api: Api) -> None:
    session = api.login("viewer")
    assert (
        api.client.post(
            "/api/v1/auth/logout", json={"refresh_token": session["refresh_token"]}
        ).status_code
        == 204
    )
    again = api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": session["refresh_token"]}
    )
    assert again.status_code == 401


def test_password_is_rehashed_when_parameters_change(api: Api) -> None:
    from argon2 import PasswordHasher

    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    api.gateway.sql("UPDATE users SET password_hash = %s WHERE username = 'auditor'", (weak,))
    api.login("auditor")
    [(stored,)] = api.gateway.sql("SELECT password_hash FROM users WHERE username = 'auditor'")
    assert stored != weak and stored.startswith("$argon2id$")
    assert "m=65536" in stored


def test_password_policy_and_own_password_change(api: Api) -> None:
    short = api.as_role(
        "viewer",
        "POST",
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": "short"},
    )
    assert short.status_code == 422  # type: ignore[attr-defined]
    assert short.json()["detail"][0]["loc"][-1] == "password"  # type: ignore[attr-defined]
    with_name = api.as_role(
        "viewer",
        "POST",
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": "viewer-is-my-name-1"},
    )
    assert with_name.status_code == 422  # type: ignore[attr-defined]
    ok = api.as_role(
        "viewer",
        "POST",
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": "a much better passphrase"},
    )
    assert ok.status_code == 204  # type: ignore[attr-defined]
    api.login("viewer", "a much better passphrase")
    assert hash_password("x") != hash_password("x")  # salted


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_forged_tokens_are_refused(api: Api) -> None:
    good = api.tokens["admin"]
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged = {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "wrong key": jwt.encode(claims, "not-the-key-" * 4, algorithm="HS256"),
        "expired": jwt.encode(
            claims | {"exp": int(time.time()) - 10},
            api.gateway.root.joinpath("secrets/jwt.key").read_text().strip(),
            algorithm="HS256",
        ),
        "tampered": f"{header}.{_b64(claims | {'roles': ['admin', 'auditor']})}.{signature}",
        "garbage": "not.a.token",
    }
    for name, token in forged.items():
        response = api.client.get("/api/v1/users", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
    assert api.client.get("/api/v1/users", headers=api.headers("admin")).status_code == 200
