"""``python -m medimg_hub.db.migrations upgrade URL``: migrate a task store to the newest revision."""

from __future__ import annotations

import argparse
import logging

from medimg_hub.db import make_engine
from medimg_hub.db.migrations import current_revision, head_revision, upgrade


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m medimg_hub.db.migrations")
    parser.add_argument("action", choices=["upgrade", "current"], help="migrate to head, or show the revision")
    parser.add_argument("url", help="SQLAlchemy URL, e.g. sqlite:///var/tasks.sqlite")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.action == "upgrade":
        upgrade(args.url)
    engine = make_engine(args.url)
    try:
        logging.getLogger(__name__).info("revision %s (head %s)", current_revision(engine), head_revision())
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
