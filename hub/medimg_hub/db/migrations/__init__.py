"""Schema migrations of the task store (Alembic), usable from code and from the shell.

``upgrade(url)`` brings a database to the newest revision (creating the schema in an
empty one); :class:`~medimg_hub.pipeline.store.TaskStore` refuses a database that is not
at :func:`head_revision`. From the shell::

    medimg migrate    (or: python -m medimg_hub.db.migrations upgrade URL)

The revision is kept in the table ``alembic_version_tasks``, so other Alembic
environments of the platform can share the same database.

A new revision: change :mod:`medimg_hub.pipeline.models`, then write
``versions/NNNN_<what>.py`` by hand or with
``alembic -c <(python -m medimg_hub.db.migrations ini URL) revision --autogenerate``;
``tests/hub/test_task_store.py`` checks that the migrated schema equals the models.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from medimg_hub.db import make_engine, normalise_url

log = logging.getLogger(__name__)

SCRIPT_LOCATION = Path(__file__).resolve().parent
VERSION_TABLE = "alembic_version_tasks"

__all__ = ["VERSION_TABLE", "alembic_config", "current_revision", "head_revision", "upgrade"]


def alembic_config(url: str) -> Config:
    """An Alembic configuration for the task store at ``url`` (no ini file needed)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory(str(SCRIPT_LOCATION)).get_current_head()
    assert head is not None, "the task store has no migrations"  # noqa: S101 (packaging error)
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision of the database behind ``engine`` (``None`` if never migrated)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (default: the newest).

    Parameters
    ----------
    url
        SQLAlchemy URL; ``postgresql://`` uses psycopg 3.
    revision
        Target revision.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)  # a fresh var/ has no folder yet
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
        log.info("task store at %s migrated to %s", engine.url.render_as_string(hide_password=True), revision)
    finally:
        engine.dispose()
