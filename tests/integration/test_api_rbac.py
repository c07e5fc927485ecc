"""The authorization matrix: every route x every role (and no/expired/tampered token) gets
exactly what the RBAC table says; a route missing from the table fails this test."""

from __future__ import annotations

import re
import time
from pathlib import Path

from jose import jwt

from dicom_gw.security.rbac import PERMISSIONS, PUBLIC, ROLES, markdown_table
from tests.api_support import Api, api

__all__ = ["api"]

NON_SCHEMA_ROUTES = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}


def routes(api: Api) -> set[tuple[str, str]]:
    schema = api.client.get("/api/openapi.json").json()
    found = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    return found | NON_SCHEMA_ROUTES


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "999999", path)


def test_every_route_is_in_the_rbac_table(api: Api) -> None:
    missing = routes(api) - set(PERMISSIONS)
    assert not missing, f"routes missing from the RBAC table: {sorted(missing)}"
    stale = set(PERMISSIONS) - routes(api)
    assert not stale, f"RBAC entries for routes that do not exist: {sorted(stale)}"


def test_authorization_matrix(api: Api) -> None:
    key = api.gateway.root.joinpath("secrets/jwt.key").read_text().strip()
    expired = jwt.encode(
        {
            "sub": "1",
            "name": "admin",
            "roles": ["admin"],
            "typ": "access",
            "exp": int(time.time()) - 5,
        },
        key,
        algorithm="HS256",
    )
    header, payload, signature = api.tokens["viewer"].split(".")
    tampered = f"{header}.{payload[:-2]}AA.{signature}"
    checked = 0
    for method, path in sorted(routes(api)):
        if path == "/api/v1/events":
            continue  # a stream: checked separately below
        allowed = PERMISSIONS[(method, path)]
        url = concrete(path)
        for role in ROLES:
            response = api.client.request(method, url, headers=api.headers(role), json={})
            if allowed is PUBLIC or role in allowed:
                assert response.status_code not in (401, 403), (role, method, path, response.text)
                assert response.status_code < 500, (role, method, path, response.text)
            else:
                assert response.status_code == 403, (role, method, path, response.status_code)
            checked += 1
        for name, token in (("none", None), ("expired", expired), ("tampered", tampered)):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = api.client.request(method, url, headers=headers, json={})
            if allowed is PUBLIC:
                assert response.status_code not in (401, 403), (name, method, path)
            else:
                assert response.status_code == 401, (name, method, path, response.status_code)
            checked += 1
    assert checked > 200


def test_event_stream_requires_a_reader_token(api: Api) -> None:
    assert api.client.get("/api/v1/events").status_code == 401
    assert api.client.get("/api/v1/events?access_token=garbage").status_code == 401
    assert api.client.get(f"/api/v1/events?access_token={api.tokens['auditor']}").status_code == 403


def test_docs_security_prints_the_table() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "security.md").read_text()
    assert markdown_table() in doc, (
        "docs/security.md is out of date: python -m dicom_gw.security.rbac"
    )
