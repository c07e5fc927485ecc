"""Schema migrations: `dicom-gw migrate` brings any database to head."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

_INI = Path(__file__).with_name("alembic.ini")


def _config(url: URL) -> Config:
    config = Config(str(_INI))
    config.attributes["url"] = url.render_as_string(hide_password=False)
    return config


def upgrade(url: URL) -> None:
    command.upgrade(_config(url), "head")


def head_revision() -> str | None:
    return ScriptDirectory.from_config(Config(str(_INI))).get_current_head()


def current_revision(url: URL) -> str | None:
    from sqlalchemy import create_engine, pool

    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
