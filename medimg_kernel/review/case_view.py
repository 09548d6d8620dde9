"""The viewer dashboard's widgets for one case: the slice viewer, its tools and the decision panel.

A view of :class:`~medimg_kernel.review.case.ReviewCase`. The viewer brings its own toolbar
(window presets, brush / eraser / fill and size, opacity, segment visibility and the segment
painted); this panel adds undo / redo, volumes and Dice, and the decision. Edits from the viewer go to the case
(which keeps the authoritative labels and the draft) and the case's patches go back to the
viewer. Every edit is saved as a draft on the platform at once, so a reload loses nothing.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable

import ipywidgets as w

from ..anatomy import get_segment_type
from ..errors import MedImgError, UnknownSegmentTypeError
from .case import ACCEPTED, CORRECTED, REJECTED, ReviewCase
from .editing import Edit, Patch
from .viewer import SliceViewer

log = logging.getLogger(__name__)

#: Fallback overlay colours for segments that are not in the anatomy catalogue.
_FALLBACK_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4")


def segment_colour(name: str, index: int) -> str:
    """The catalogue's recommended display colour of a segment, as ``#rrggbb``."""
    try:
        r, g, b = get_segment_type(name).rgb
        return f"#{r:02x}{g:02x}{b:02x}"
    except UnknownSegmentTypeError:
        return _FALLBACK_COLOURS[index % len(_FALLBACK_COLOURS)]


class CaseView(w.VBox):
    """One case: header, viewer with tools, volumes and Dice, decision buttons and messages."""

    def __init__(self, case: ReviewCase, viewer: SliceViewer, on_close: Callable[[], None]) -> None:
        self.case, self.viewer, self._on_close = case, viewer, on_close
        self.segments = [{"value": i, "label": name, "color": segment_colour(name, i - 1), "visible": True}
                         for i, name in enumerate(case.segments, start=1)]
        viewer.show(case.volume.array, case.volume.spacing, case.labels, self.segments, window_preset="soft tissue")
        viewer.on_edit(self._on_edit)
        self.message = w.HTML(layout=w.Layout(min_height="1.5em"))
        self.message.add_class("medimg-message")
        self.volumes = w.HTML()
        case.observe(lambda c: self._say(c["new"]), "message")
        case.observe(lambda _: self._sync_buttons(), ["can_undo", "can_redo", "state"])
        super().__init__([self._header(), w.HBox([viewer, self._tools()], layout=w.Layout(align_items="flex-start")),
                          self.message])
        self.add_class("medimg-case")
        self._refresh_volumes()
        self._sync_buttons()

    # --- layout ----------------------------------------------------------------------------------

    def _header(self) -> w.HBox:
        item, case = self.case.item, self.case
        origin = {"model": "the model's result", "draft": "your saved draft"}.get(
            case.origin, case.origin.replace("proposal:", "the proposal of "))
        role = "You finalise this case." if case.can_finalise else (
            "Your decision is a proposal: an attending finalises it.")
        back = w.Button(description="← Worklist")
        back.on_click(lambda _: self.close_case())
        who = case.identity
        patient = " · ".join(x for x in (
            f"Patient {who['patient_id']}" if who["patient_id"] else "", f"Acc. {who['accession']}" if who["accession"] else "",
            who["study_date"], who["modality"], who["study_description"], who["series_description"]) if x)
        text = w.HTML(f"<b>{html.escape(patient or 'Unknown patient')}</b><br>"
                      f"{html.escape(str(item.get('dataset')))} · {html.escape(str(item.get('pipeline_id')))} · "
                      f"model {html.escape(str(item.get('model_name')))} v{html.escape(str(item.get('model_version')))}"
                      f" · starting from {html.escape(origin)} · {html.escape(role)}")
        text.add_class("medimg-case-header")
        return w.HBox([back, text])

    def _tools(self) -> w.VBox:
        """Undo/redo, volumes and Dice, and the decision (window, tools, segments are the viewer's own)."""
        self.undo_button = w.Button(description="Undo", layout=w.Layout(width="90px"))
        self.redo_button = w.Button(description="Redo", layout=w.Layout(width="90px"))
        self.undo_button.on_click(lambda _: self._history(self.case.undo))
        self.redo_button.on_click(lambda _: self._history(self.case.redo))
        self.reason = w.Text(placeholder="reason (required to reject)", layout=w.Layout(width="280px"))
        verb = "" if self.case.can_finalise else "Propose: "
        self.accept_button = w.Button(description=f"{verb}Accept", button_style="success")
        self.correct_button = w.Button(description=f"{verb}Correct & accept", button_style="info")
        self.reject_button = w.Button(description=f"{verb}Reject", button_style="danger")
        for button, decision in ((self.accept_button, ACCEPTED), (self.correct_button, CORRECTED),
                                 (self.reject_button, REJECTED)):
            button.add_class(f"medimg-decide-{decision}")
            button.layout.width = "280px"
            button.on_click(lambda _, d=decision: self.decide(d))
        tools = w.VBox([w.HTML("<b>Edits</b>"), w.HBox([self.undo_button, self.redo_button]),
                        self.volumes, w.HTML("<b>Decision</b>"), self.reason, self.accept_button,
                        self.correct_button, self.reject_button], layout=w.Layout(width="310px", padding="0 0 0 8px"))
        tools.add_class("medimg-tools")
        return tools

    # --- events ----------------------------------------------------------------------------------

    def _on_edit(self, edit: Edit) -> None:
        try:
            patch = self.case.edit(edit)
        except MedImgError as exc:
            self._say(str(exc), error=True)
            self.viewer.set_labels(self.case.labels)  # drop the browser's preview
            return
        self._after_patch(patch)

    def _history(self, step: Callable[[], Patch | None]) -> None:
        patch = step()
        if patch is not None:
            self._after_patch(patch)

    def _after_patch(self, patch: Patch) -> None:
        self.viewer.apply_patch(patch.indices, patch.values)
        self._refresh_volumes()
        self._save()

    def _save(self) -> None:
        try:
            self.case.save_draft()
        except Exception as exc:  # noqa: BLE001 - the edit stays in the kernel; say so
            self._say(f"Your edit is applied but the draft could not be saved: {exc}", error=True)

    def decide(self, decision: str) -> None:
        """Decide the case (or propose); the outcome or the error is shown, never raised."""
        self._say("Saving…")
        try:
            self.case.decide(decision, self.reason.value.strip() or None)
        except ValueError as exc:
            self._say(str(exc), error=True)
        except Exception:  # noqa: BLE001 - the case model already put the reason in its message
            self._say(self.case.message, error=True)
        self._sync_buttons()

    def close_case(self) -> None:
        self.viewer.on_edit(self._on_edit, remove=True)
        if self.case.dirty:
            self._save()
        self._on_close()

    # --- display ---------------------------------------------------------------------------------

    def _say(self, text: str, error: bool = False) -> None:
        colour = "#b00020" if error else "#1b5e20"
        self.message.value = f'<span style="color:{colour}">{html.escape(text)}</span>' if text else ""

    def _sync_buttons(self) -> None:
        open_ = self.case.state == "open"
        self.undo_button.disabled = not (open_ and self.case.can_undo)
        self.redo_button.disabled = not (open_ and self.case.can_redo)
        for button in (self.accept_button, self.correct_button, self.reject_button):
            button.disabled = not open_

    def _refresh_volumes(self) -> None:
        current, model, dice = self.case.volumes_mm3(), self.case.model_volumes_mm3, self.case.dice()

        def ml(value: float | None) -> str:
            return "—" if value is None else f"{value / 1000:.1f}"

        rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{ml(model.get(name))}</td><td>{ml(current[name])}</td>"
                       f"<td>{dice[name]:.3f}</td></tr>" for name in self.case.segments)
        self.volumes.value = ("<table class='medimg-volumes'><tr><th>Segment</th><th title='volume the AI model "
                              "reported, in millilitres'>AI result (mL)</th><th title='volume with your edits, in "
                              "millilitres'>Now (mL)</th><th title='overlap of your version with the AI result "
                              "(1 = unchanged)'>Agreement (Dice)</th></tr>"
                              f"{rows}</table>")
