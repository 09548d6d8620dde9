"""Saved query rules applied to arriving studies.

A rule (``dataset_rules``) says that the PACS's studies matching a QIDO-RS query belong to a
dataset. When an admin saves one, the studies matching it then are placed at once
(:meth:`~medimg_hub.datasets.administration.DatasetAdmin.add_rule`); studies that arrive later
by any route (the DICOM receiver, STOW-RS through the gateway, ``medimg import``, ``medimg pacs
pull``) and are in no dataset yet join when :func:`apply_rules` next runs: the platform API runs
it every ``[platform] dataset_rules_interval_s`` seconds. Rules never move a study that is in a
dataset already: only an admin's explicit change does.
"""

from __future__ import annotations

import logging

from medimg_kernel.cohort import find_studies
from medimg_kernel.dicomweb import DICOMwebProtocol
from medimg_kernel.errors import MedImgError

from medimg_hub.datasets.administration import DatasetAdmin

log = logging.getLogger(__name__)


def apply_rules(admin: DatasetAdmin, client: DICOMwebProtocol) -> int:
    """Put the studies that match a saved rule and are in no dataset in that rule's dataset.

    Rules are applied oldest first: a study matching two rules joins the older rule's dataset.
    A rule the PACS cannot answer is logged and skipped; the others still apply.

    Returns
    -------
    int
        Studies that joined a dataset.
    """
    assigned = admin.assigned()
    joined = 0
    for rule_id, dataset, query in admin.rules():
        try:
            matches = [uid for uid in find_studies(client, query) if uid not in assigned]
        except (MedImgError, OSError) as exc:
            log.warning("dataset rule %d (%s) could not be applied: %s", rule_id, dataset, exc)
            continue
        if matches:
            joined += admin.assign_unassigned(dataset, matches, rule_id=rule_id)
            assigned.update(matches)
    return joined


__all__ = ["apply_rules"]
