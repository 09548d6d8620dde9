"""``notebooks/federated_experiment.ipynb`` runs under papermill with tiny settings (simulation mode)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medimg_federated.task import TINY_MODEL

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_federated_notebook_runs_under_papermill(demo_sites, tmp_path, monkeypatch):
    import papermill

    # The kernel gets the repository root (medimg_kernel) and federated/ (the app's package
    # medimg_federated); the notebook never imports medimg_hub.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(REPO / "federated"), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "federated_experiment.ipynb"), str(out), kernel_name="python3",
        progress_bar=False, cwd=str(tmp_path),
        parameters={"sites_folder": str(demo_sites[0]), "tracking_uri": f"sqlite:///{tmp_path / 'nb.db'}",
                    "rounds": 2, "model_config": TINY_MODEL},
    )
    text = out.read_text()
    assert "3 sites, 2 rounds" in text and "eval_dice_liver" in text and "SITEA_eval_dice" in text
