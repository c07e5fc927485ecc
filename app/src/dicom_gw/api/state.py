"""What the API process holds: settings, a connection pool, and the keys read from secret files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg_pool import ConnectionPool

from dicom_gw.config import Settings
from dicom_gw.db.engine import conninfo
from dicom_gw.security.phi import PhiKey, load_phi_key
from dicom_gw.security.tokens import load_key


@dataclass
class ApiState:
    settings: Settings
    pool: ConnectionPool[Any]
    phi: PhiKey
    jwt_key: str

    @classmethod
    def create(cls, settings: Settings) -> ApiState:
        pool: ConnectionPool[Any] = ConnectionPool(
            conninfo(settings, "api"),
            min_size=1,
            max_size=settings.database.pool_size,
            kwargs={"autocommit": True},
            timeout=settings.database.connect_timeout_seconds,
            open=False,
        )
        return cls(
            settings=settings,
            pool=pool,
            phi=load_phi_key(settings.security.phi_key_file),
            jwt_key=load_key(settings.auth.jwt_key_file),
        )
