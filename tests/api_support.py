"""The API under test: the real app in-process (httpx TestClient) on the real database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
import pytest
from fastapi.testclient import TestClient

from dicom_gw.api.app import create_app
from dicom_gw.config import load_settings
from dicom_gw.services.accounts import create_user
from tests.conftest import Gateway

PASSWORD = "correct horse battery staple"
ROLES = ("admin", "operator", "viewer", "auditor")


@dataclass
class Api:
    client: TestClient
    gateway: Gateway
    tokens: dict[str, str] = field(default_factory=dict)

    def login(self, username: str, password: str = PASSWORD) -> dict[str, object]:
        response = self.client.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def as_role(self, role: str, method: str, url: str, **kwargs: object) -> object:
        return self.client.request(method, url, headers=self.headers(role), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def api(make_gateway: object) -> Iterator[Api]:
    gw: Gateway = make_gateway()  # type: ignore[operator]
    settings = load_settings(gw.config)
    with psycopg.connect(
        gw.db_url.replace("postgresql+psycopg", "postgresql"), autocommit=True
    ) as conn:
        for role in ROLES:
            create_user(conn, settings.auth, role, PASSWORD, [role])
    with TestClient(create_app(settings)) as client:
        result = Api(client, gw)
        for role in ROLES:
            result.tokens[role] = str(result.login(role)["access_token"])
        yield result
