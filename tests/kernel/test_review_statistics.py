"""Review statistics for directors: per-site and per-model rates, review times and Dice, and the plots."""

from __future__ import annotations

import pytest

from medimg_kernel.review.statistics import decisions_frame, plot_overview, summary_by, throughput


def row(dataset: str, decision: str, version: int, review_s: float, dice: float | None, day: int) -> dict:
    return {"dataset": dataset, "pipeline_id": "organ-segmentation", "decision": decision, "decided_by": "x",
            "model_name": "organ-segmentation", "model_version": version,
            "waiting_since": f"2026-12-0{day}T08:00:00+00:00", "decided_at": f"2026-12-0{day}T10:00:00+00:00",
            "review_time_s": review_s, "dice": None, "dice_mean": dice}


ROWS = [row("site-a", "accepted", 7, 60, 1.0, 1), row("site-a", "corrected", 7, 180, 0.8, 1),
        row("site-a", "rejected", 7, 30, None, 2), row("site-b", "corrected", 8, 120, 0.9, 2)]


def test_summary_rates_times_and_dice_per_site_and_model():
    summary = summary_by(decisions_frame(ROWS)).set_index(["dataset", "model"])
    a = summary.loc[("site-a", "organ-segmentation v7")]
    assert a["cases"] == 3 and a["accepted_rate"] == pytest.approx(1 / 3) and a["rejected_rate"] == pytest.approx(1 / 3)
    assert a["median_review_s"] == 60 and a["mean_dice"] == pytest.approx(0.9)  # rejected cases have no final mask
    b = summary.loc[("site-b", "organ-segmentation v8")]
    assert b["cases"] == 1 and b["corrected_rate"] == 1.0 and b["mean_dice"] == pytest.approx(0.9)
    frame = decisions_frame(ROWS)
    assert frame["turnaround_h"].tolist() == [2.0] * 4
    per_day = throughput(frame)
    assert per_day.loc[per_day.index[0], "site-a"] == 2 and per_day.sum().sum() == 4


def test_plots_render_with_and_without_data():
    assert len(plot_overview(decisions_frame(ROWS)).axes) == 4
    empty = decisions_frame([])
    assert summary_by(empty).empty and len(plot_overview(empty).axes) == 4
