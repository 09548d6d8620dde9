"""Alembic environment of the task store; run by :func:`medimg_hub.db.migrations.upgrade`.

Uses the connection handed over in ``config.attributes["connection"]`` when there is
one, else builds an engine from ``sqlalchemy.url``. Online mode only.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import medimg_hub.access.models  # noqa: F401 - every table on Base.metadata
import medimg_hub.delivery.models  # noqa: F401
import medimg_hub.pipeline.models  # noqa: F401
from medimg_hub.db import Base, make_engine
from medimg_hub.db.migrations import VERSION_TABLE


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE via table copies on SQLite
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the given connection or a new engine."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(context.config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.begin() as new_connection:
            _run(new_connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("the task store's migrations run online only (use medimg_hub.db.migrations.upgrade)")
run_migrations_online()
