"""The clinician's review dashboard: the worklist, and one case at a time in the viewer.

``ReviewApp.from_environment()`` is the whole of ``dashboards/worklist.ipynb``: inside a platform
user server the gateway, the platform API and the user come from the environment. One
:class:`SliceViewer` is made once and reused for every case, so opening a case only moves data.
"""

from __future__ import annotations

import html
import logging
import os

import ipywidgets as w

from ..dicomweb import DICOMwebProtocol
from ..errors import CaseClaimedError
from ..platform_client import ReviewAPI
from .case import ReviewCase
from .case_view import CaseView
from .viewer import SliceViewer
from .worklist import WorklistModel
from .worklist_view import TakeOverDialog, WorklistView

log = logging.getLogger(__name__)

#: Styles of the dashboard (inline: nothing is loaded from elsewhere).
STYLE = """<style>
.medimg-worklist-row { border-bottom: 1px solid #ddd; align-items: center; }
.medimg-worklist-header { border-bottom: 2px solid #888; }
.medimg-volumes td, .medimg-volumes th { padding: 1px 6px; text-align: right; }
.medimg-summary td, .medimg-summary th { padding: 2px 8px; }
</style>"""


class ReviewApp(w.VBox):
    """Worklist ↔ case, for one reviewer."""

    def __init__(self, api: ReviewAPI, dicomweb: DICOMwebProtocol, user: str) -> None:
        self.api, self.dicomweb, self.user = api, dicomweb, user
        self.worklist = WorklistModel(api, dicomweb, user=user)
        self.worklist_view = WorklistView(self.worklist, self.open_case)
        self.viewer = SliceViewer()
        self.notice = w.HTML()
        self.notice.add_class("medimg-notice")
        self.body = w.VBox([self.worklist_view])
        self.case_view: CaseView | None = None
        title = w.HTML(f"{STYLE}<p>Signed in as <b>{html.escape(user)}</b></p>")
        super().__init__([title, self.notice, self.body])
        self.add_class("medimg-review-app")
        self.worklist_view.refresh()
        _preload()

    @classmethod
    def from_environment(cls) -> ReviewApp:
        """The app inside a platform user server (gateway, platform API and token from the environment)."""
        from ..client import connect
        from ..platform_client import connect_platform

        return cls(connect_platform(), connect(), os.environ.get("JUPYTERHUB_USER", "unknown"))

    def open_case(self, job_id: str, *, force: bool = False) -> None:
        """Claim a case and show it; a case claimed by someone else asks first."""
        self.notice.value = "Opening the case…"
        try:
            item = self.worklist.claim(job_id, force=force)
        except CaseClaimedError as exc:
            self.notice.value = ""
            self.body.children = [TakeOverDialog(exc.claim.get("actor", "?"), exc.claim.get("expires_at", ""),
                                                 lambda: self.open_case(job_id, force=True), self.show_worklist)]
            return
        except Exception as exc:  # noqa: BLE001 - shown, the worklist stays usable
            self._fail(f"The case could not be claimed: {exc}")
            return
        try:
            case = ReviewCase.open(self.api, self.dicomweb, item, reviewer=self.user)
        except Exception as exc:  # noqa: BLE001
            self._fail(f"The case could not be opened: {exc}")
            return
        self.case_view = CaseView(case, self.viewer, self.show_worklist)
        self.notice.value = ""
        self.body.children = [self.case_view]

    def show_worklist(self) -> None:
        self.case_view = None
        self.body.children = [self.worklist_view]
        self.worklist_view.refresh()

    def _fail(self, text: str) -> None:
        log.warning("%s", text)
        self.notice.value = f'<span style="color:#b00020">{html.escape(text)}</span>'
        self.show_worklist()


def _preload() -> None:
    """Import what opening a case needs (highdicom, pydicom's pixel handlers) before the first click."""
    from .. import seg, series, sr  # noqa: F401
