"""Voila templates of the platform's dashboards; ``medimg`` is Voila's ``lab`` with no external requests.

Voila's ``lab`` template links an icon stylesheet from a CDN (and its error pages another),
which an offline hospital network cannot reach (DESIGN.md §6). The ``medimg`` template
inherits ``lab`` and drops every ``<link>`` to another host; everything else (JupyterLab's CSS,
the widget manager, anywidget) is served by Voila itself. Font Awesome icons on ipywidgets
buttons therefore do not render: use text labels.

Voila finds templates only under ``<dir>/voila/templates/<name>`` for the directories of
``jupyter_core.paths.jupyter_path()`` (its ``template_paths`` setting is recomputed from
those), so select it with both::

    JUPYTER_PATH=<this directory> voila --template=medimg dashboard.ipynb

:data:`JUPYTER_DATA_DIR` is that directory, and :func:`jupyter_path_env` prepends it to an
existing ``JUPYTER_PATH`` value.
"""

from __future__ import annotations

import os
from pathlib import Path

#: A Jupyter data directory holding ``voila/templates/medimg``; put it on ``JUPYTER_PATH``.
JUPYTER_DATA_DIR = Path(__file__).resolve().parent
#: The template's name, for ``voila --template`` / ``VoilaConfiguration.template``.
TEMPLATE_NAME = "medimg"


def jupyter_path_env(existing: str | None = None) -> str:
    """A ``JUPYTER_PATH`` value with :data:`JUPYTER_DATA_DIR` first, then ``existing`` (if any)."""
    parts = [str(JUPYTER_DATA_DIR)] + ([existing] if existing else [])
    return os.pathsep.join(parts)
