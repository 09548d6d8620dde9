"""The platform database: one ``Base`` for every table, engines, and every schema migration.

Tables are declared by their capability (:mod:`medimg_hub.pipeline.models`,
:mod:`medimg_hub.access.models`); :mod:`.migrations` holds every Alembic revision of them.
May import: SQLAlchemy and Alembic only (the migrations' environment imports the models).
"""

from medimg_hub.db.base import Base, UTCDateTime, make_engine, normalise_url, utcnow

__all__ = ["Base", "UTCDateTime", "make_engine", "normalise_url", "utcnow"]
