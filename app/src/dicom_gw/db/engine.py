"""Engines and connections built from the one settings object.

SQLAlchemy serves the index and the admin paths; the receive path and the queues use psycopg
directly, since each C-STORE pays for every microsecond spent between the socket and the commit.
"""

from __future__ import annotations

from functools import lru_cache

import psycopg
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url

from dicom_gw.config import Settings


class DatabaseNotConfigured(RuntimeError):
    pass


def database_url(settings: Settings) -> URL:
    if not settings.database.url:
        raise DatabaseNotConfigured(
            "database.url is empty: set it in the config file or DICOM_GW_DATABASE__URL"
        )
    url = make_url(settings.database.url).set(drivername="postgresql+psycopg")
    password = settings.database_password()
    if password is not None:
        url = url.set(password=password)
    return url


def conninfo(settings: Settings, service: str = "cli") -> str:
    """A libpq connection string for psycopg. The application name says which service holds a
    connection: pg_stat_activity (and the health endpoint) can tell which workers are alive."""
    url = database_url(settings).set(drivername="postgresql")
    query = dict(url.query)
    query.setdefault("application_name", f"dicom-gw-{service}")
    query.setdefault("connect_timeout", str(int(settings.database.connect_timeout_seconds)))
    return url.set(query=query).render_as_string(hide_password=False)


def connect(
    settings: Settings, *, autocommit: bool = False, service: str = "cli"
) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(conninfo(settings, service), autocommit=autocommit)


@lru_cache(maxsize=4)
def _engine(url: str, pool_size: int) -> Engine:
    return create_engine(url, pool_size=pool_size, pool_pre_ping=True, future=True)


def engine(settings: Settings) -> Engine:
    url = database_url(settings).render_as_string(hide_password=False)
    return _engine(url, settings.database.pool_size)
