"""The worklist's widgets: filters, sortable rows, and the open / take-over flow.

A view of :class:`~medimg_kernel.review.worklist.WorklistModel`: it renders the model's rows and
forwards clicks; it makes no HTTP calls itself.
"""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as w

from .worklist import SORT_KEYS, WorklistModel, WorklistRow

#: Column titles and widths of the table.
COLUMNS = (("Patient", "110px"), ("Accession", "110px"), ("Study date", "100px"), ("Study", "230px"),
           ("Site", "90px"), ("Model", "170px"), ("Waiting", "70px"), ("Status", "200px"), ("", "80px"))


def _cell(text: str, width: str, *, title: str = "") -> w.HTML:
    return w.HTML(f'<span title="{html.escape(title)}">{html.escape(text)}</span>', layout=w.Layout(width=width))


class WorklistView(w.VBox):
    """Filters and the table of cases; ``on_open(job_id)`` is called when a case is opened."""

    def __init__(self, model: WorklistModel, on_open: Callable[[str], None]) -> None:
        self.model, self._on_open = model, on_open
        self.site = w.Dropdown(description="Site", options=[("all", "")], layout=w.Layout(width="220px"))
        self.text = w.Text(placeholder="filter patient, accession, study, model", layout=w.Layout(width="280px"))
        self.sort = w.Dropdown(description="Sort by", options=list(SORT_KEYS), value=model.sort_by,
                               layout=w.Layout(width="220px"))
        self.refresh_button = w.Button(description="Refresh", icon="refresh", layout=w.Layout(width="100px"))
        self.status = w.HTML()
        self.table = w.VBox(layout=w.Layout(width="100%"))
        self.site.observe(lambda c: setattr(model, "site", c["new"] or ""), "value")
        self.text.observe(lambda c: setattr(model, "text", c["new"]), "value")
        self.sort.observe(lambda c: setattr(model, "sort_by", c["new"]), "value")
        self.refresh_button.on_click(lambda _: self.refresh())
        model.observe(lambda _: self.render(), ["rows", "site", "text", "sort_by"])
        model.observe(lambda c: setattr(self.status, "value", html.escape(c["new"])), "message")
        super().__init__([w.HBox([self.site, self.text, self.sort, self.refresh_button]), self.status, self.table])
        self.add_class("medimg-worklist")

    def refresh(self) -> None:
        """Fetch the rows again; errors are shown, not raised."""
        try:
            self.model.refresh()
        except Exception as exc:  # noqa: BLE001 - a dashboard shows the failure and stays usable
            self.model.message = f"The worklist could not be loaded: {exc}"
        sites = [("all", "")] + [(s, s) for s in self.model.sites()]
        if list(self.site.options) != sites:
            self.site.options = sites

    def render(self) -> None:
        header = w.HBox([_cell(title, width) for title, width in COLUMNS], layout=w.Layout(font_weight="bold"))
        header.add_class("medimg-worklist-header")
        rows = [self._row(r) for r in self.model.visible()]
        self.table.children = [header, *rows] if rows else [header, w.HTML("<i>Nothing waiting for review.</i>")]

    def _row(self, row: WorklistRow) -> w.HBox:
        status = []
        if row.claimed_by:
            status.append(f"claimed by {row.claimed_by}")
        status += [f"proposed {p}" for p in row.proposals]
        opened = w.Button(description="Open", button_style="primary", layout=w.Layout(width=COLUMNS[-1][1]))
        opened.add_class("medimg-open-case")
        opened.on_click(lambda _, job=row.job_id: self._on_open(job))
        study = " · ".join(x for x in (row.modality, row.study_description, row.series_description) if x) or "—"
        cells = [_cell(row.patient_id or "—", COLUMNS[0][1]), _cell(row.accession or "—", COLUMNS[1][1]),
                 _cell(row.study_date or "—", COLUMNS[2][1]), _cell(study, COLUMNS[3][1], title=row.pipeline),
                 _cell(row.dataset, COLUMNS[4][1]), _cell(row.model, COLUMNS[5][1]),
                 _cell(row.age, COLUMNS[6][1]), _cell("; ".join(status) or "open", COLUMNS[7][1]), opened]
        box = w.HBox(cells)
        box.add_class("medimg-worklist-row")
        return box


class TakeOverDialog(w.VBox):
    """Asks before opening a case someone else has claimed."""

    def __init__(self, claimed_by: str, until: str, on_take_over: Callable[[], None],
                 on_cancel: Callable[[], None]) -> None:
        text = w.HTML(f"<b>{html.escape(claimed_by)}</b> is working on this case (claim until "
                      f"{html.escape(until[:16].replace('T', ' '))} UTC). Take it over? They will see it in "
                      "the worklist, and the take-over is recorded in the audit log.")
        take, cancel = w.Button(description="Take over", button_style="warning"), w.Button(description="Cancel")
        take.on_click(lambda _: on_take_over())
        cancel.on_click(lambda _: on_cancel())
        super().__init__([text, w.HBox([take, cancel])])
        self.add_class("medimg-takeover")
