"""Review statistics for research directors: throughput, review times, decision rates, Dice.

Input: the rows of ``GET api/review/statistics`` (one per decided review job, no UIDs). The
summary functions return pandas DataFrames; the ``plot_*`` functions draw them with matplotlib
(rendered as static images in the dashboard: nothing loads from the internet).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

#: Decisions in display order.
DECISIONS = ("accepted", "corrected", "rejected")


def decisions_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per decided job: dataset (site), model (``name vN``), decision, times, Dice."""
    frame = pd.DataFrame(list(rows), columns=["dataset", "pipeline_id", "decision", "decided_by", "model_name",
                                              "model_version", "waiting_since", "decided_at", "review_time_s",
                                              "dice_mean"])
    frame["model"] = frame["model_name"].fillna("?").astype(str) + " v" + frame["model_version"].fillna("?").astype(str)
    frame["decided_at"] = pd.to_datetime(frame["decided_at"], utc=True)
    frame["waiting_since"] = pd.to_datetime(frame["waiting_since"], utc=True)
    frame["turnaround_h"] = (frame["decided_at"] - frame["waiting_since"]).dt.total_seconds() / 3600
    frame["review_time_s"] = pd.to_numeric(frame["review_time_s"], errors="coerce")
    frame["dice_mean"] = pd.to_numeric(frame["dice_mean"], errors="coerce")
    return frame


def summary_by(frame: pd.DataFrame, keys: Sequence[str] = ("dataset", "model")) -> pd.DataFrame:
    """Per group: cases, rate of each decision (0–1), median review time (s), mean model-vs-final Dice.

    Dice is over accepted and corrected cases (a rejected case has no final mask).
    """
    if frame.empty:
        return pd.DataFrame(columns=[*keys, "cases", *(f"{d}_rate" for d in DECISIONS), "median_review_s",
                                     "mean_dice"])
    groups = frame.groupby(list(keys), dropna=False)
    out = groups.size().rename("cases").to_frame()
    for decision in DECISIONS:
        out[f"{decision}_rate"] = groups["decision"].apply(lambda s, d=decision: float((s == d).mean()))
    out["median_review_s"] = groups["review_time_s"].median()
    final = frame[frame["decision"] != "rejected"]
    out["mean_dice"] = final.groupby(list(keys), dropna=False)["dice_mean"].mean()
    return out.reset_index()


def throughput(frame: pd.DataFrame, freq: str = "D") -> pd.DataFrame:
    """Cases decided per period (default per day) and site."""
    if frame.empty:
        return pd.DataFrame()
    periods = frame["decided_at"].dt.tz_convert(None).dt.to_period(freq).dt.to_timestamp()
    return frame.assign(period=periods).groupby(["period", "dataset"]).size().unstack(fill_value=0)


def plot_overview(frame: pd.DataFrame) -> Any:
    """A 2×2 figure: throughput, review times, decision rates and Dice, per site and model."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    (ax_through, ax_time), (ax_rates, ax_dice) = axes
    if frame.empty:
        for ax in axes.flat:
            ax.text(0.5, 0.5, "no decided cases yet", ha="center", va="center")
            ax.set_axis_off()
        return fig
    per_day = throughput(frame)
    per_day.plot(kind="bar", stacked=True, ax=ax_through, rot=0)
    ax_through.set_title("Cases decided per day")
    ax_through.set_xticklabels([p.strftime("%m-%d") for p in per_day.index])
    sites = sorted(frame["dataset"].dropna().unique())
    ax_time.boxplot([frame.loc[frame["dataset"] == s, "review_time_s"].dropna() for s in sites],
                    tick_labels=sites)
    ax_time.set_title("Review time per case (s)")
    summary = summary_by(frame)
    labels = summary["dataset"].astype(str) + "\n" + summary["model"].astype(str)
    bottom = pd.Series(0.0, index=summary.index)
    for decision in DECISIONS:
        ax_rates.bar(labels, summary[f"{decision}_rate"], bottom=bottom, label=decision)
        bottom += summary[f"{decision}_rate"]
    ax_rates.set_ylim(0, 1)
    ax_rates.set_title("Decisions (share of cases)")
    ax_rates.legend(loc="lower right")
    ax_dice.bar(labels, summary["mean_dice"].fillna(0.0))
    ax_dice.set_ylim(0, 1)
    ax_dice.set_title("Model vs final mask: mean Dice")
    return fig
