"""What the datasets API, the admin page and ``medimg datasets`` do: the database changes of
:class:`~.administration.DatasetAdmin`, plus what they involve outside the database (the PACS
for rules and unassigned studies, MLflow's experiments when a dataset is renamed)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine

from medimg_kernel.cohort import find_studies
from medimg_kernel.dicom_json import first_value
from medimg_kernel.errors import MedImgError

from medimg_hub.datasets.administration import DatasetAdmin, Membership, PacsUnanswered, check_query
from medimg_hub.datasets.rules import apply_rules
from medimg_hub.pacs.connection import pacs_connection
from medimg_hub.settings import Settings

log = logging.getLogger(__name__)

#: Attributes shown for an unassigned study: date, modalities, instances, description.
UNASSIGNED_FIELDS = ("00080020", "00080061", "00201208", "00081030")


class DatasetOperations:
    """Dataset administration for one platform.

    Parameters
    ----------
    settings
        The platform's settings (PACS, MLflow).
    engine
        The platform database.
    group_exists
        Whether the hub has a group of that name.
    on_change
        Called after each committed change (caches of the calling process).
    """

    def __init__(self, settings: Settings, engine: Engine, *, group_exists: Callable[[str], bool],
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self.admin = DatasetAdmin(engine, group_exists=group_exists, on_change=on_change)

    def _client(self) -> Any:
        return pacs_connection(self.settings).client()

    def update(self, name: str, *, actor: str, groups: Sequence[str] = (), new_name: str | None = None,
               description: str | None = None) -> dict[str, Any]:
        """Rename or describe a dataset; a rename also renames its MLflow experiments (``"mlflow"``
        in the answer says how many, or why not: the database change stands either way)."""
        view = self.admin.update(name, actor=actor, groups=groups, new_name=new_name, description=description)
        answer = view.as_json()
        if new_name and new_name != name:
            answer["mlflow"] = self._rename_in_mlflow(name, new_name)
        return answer

    def _rename_in_mlflow(self, old: str, new: str) -> str:
        from medimg_hub.tracking.accounts import AdminApi, TrackingAccessError, rename_dataset_experiments
        from medimg_hub.tracking.server import credentials

        try:
            api = AdminApi(self.settings.mlflow_tracking_uri, credentials(self.settings))
            return f"{rename_dataset_experiments(api, old, new)} experiments renamed"
        except TrackingAccessError as exc:
            log.warning("dataset %s renamed %s, but not in MLflow: %s", old, new, exc)
            return (f"not renamed in MLflow ({exc}): its runs of {old!r} stay readable by hub admins only until "
                    f"`medimg datasets rename {new} {new}` is run again with MLflow up")

    def grant(self, name: str, group: str, right: str, *, actor: str, groups: Sequence[str] = ()) -> bool:
        return self.admin.grant(name, group, right, actor=actor, groups=groups)

    def add_rule(self, name: str, query: Mapping[str, Any], *, actor: str,
                 groups: Sequence[str] = ()) -> tuple[int, Membership]:
        """Save a rule; the PACS's studies that match it now join the dataset (moved from others
        unless a review of them is open there: then nothing changes)."""
        filters = check_query(query)
        self.admin.get(name)  # an unknown dataset is refused before the PACS is asked
        try:
            matching = find_studies(self._client(), filters)
        except (MedImgError, OSError) as exc:
            raise PacsUnanswered(f"the PACS could not answer the rule's query: {exc}") from exc
        return self.admin.add_rule(name, filters, matching, actor=actor, groups=groups)

    def unassigned(self) -> list[dict[str, Any]]:
        """Studies in the PACS that are in no dataset: ``{"study_uid", "date", "modalities",
        "instances", "description"}`` each (admins only see them)."""
        assigned = self.admin.assigned()
        try:
            found = self._client().search_for_studies(fields=list(UNASSIGNED_FIELDS))
        except (MedImgError, OSError) as exc:
            raise PacsUnanswered(f"the PACS could not list its studies: {exc}") from exc
        rows = []
        for item in found:
            uid = first_value(item, "0020000D", None)
            if uid and uid not in assigned:
                modalities = (item.get("00080061") or {}).get("Value") or []
                rows.append({"study_uid": uid, "date": first_value(item, "00080020", ""), "modalities": modalities,
                             "instances": first_value(item, "00201208", None),
                             "description": first_value(item, "00081030", "")})
        return rows

    def apply_rules(self) -> int:
        """Saved rules applied to studies in no dataset (:func:`~.rules.apply_rules`)."""
        return apply_rules(self.admin, self._client())


__all__ = ["DatasetOperations"]
