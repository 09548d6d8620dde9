"""The director dashboard's widgets: summary table and plots of review statistics."""

from __future__ import annotations

import html

import ipywidgets as w

from ..platform_client import ReviewAPI
from .statistics import decisions_frame, plot_overview, summary_by


class StatisticsView(w.VBox):
    """A refresh button, a per-site and per-model summary table, and the overview plots."""

    def __init__(self, api: ReviewAPI) -> None:
        self.api = api
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.status = w.HTML()
        self.table = w.HTML()
        self.plots = w.Image(format="png", layout=w.Layout(max_width="1200px"))
        self.refresh_button.on_click(lambda _: self.refresh())
        super().__init__([w.HBox([self.refresh_button, self.status]), self.table, self.plots])
        self.add_class("medimg-statistics")

    def refresh(self) -> None:
        try:
            rows = self.api.statistics()
        except Exception as exc:  # noqa: BLE001 - a dashboard shows the failure and stays usable
            self.status.value = f"Statistics could not be loaded: {html.escape(str(exc))}"
            return
        frame = decisions_frame(rows)
        self.status.value = f"{len(frame)} decided case{'s' if len(frame) != 1 else ''}"
        summary = summary_by(frame)
        formatters = {c: "{:.0%}".format for c in summary.columns if c.endswith("_rate")}
        formatters.update(median_review_s="{:.0f}".format, mean_dice="{:.4f}".format)
        self.table.value = summary.to_html(index=False, formatters=formatters, na_rep="—", classes="medimg-summary")
        import io

        import matplotlib.pyplot as plt

        figure = plot_overview(frame)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90)
        plt.close(figure)
        self.plots.value = buffer.getvalue()
