"""The platform API (hub side): a DICOMweb gateway with dataset grants and audit, the tasks API, metrics.

A JupyterHub-managed service at ``/services/platform/`` (``python -m medimg_hub.platform_api``).
This package's top level re-exports the database layer only; the tornado application is in
:mod:`.app` so importing the models does not import tornado or JupyterHub.
"""

from __future__ import annotations

from .audit import AuditLog, AuditRecord
from .datasets import DatasetDirectory, assign_study, rights_for, sync_datasets
from .models import AuditEvent, Dataset, DatasetStudy, Grant, Outcome, ReviewProposal, Right

__all__ = [
    "AuditEvent", "AuditLog", "AuditRecord", "Dataset", "DatasetDirectory", "DatasetStudy", "Grant",
    "Outcome", "ReviewProposal", "Right", "assign_study", "rights_for", "sync_datasets",
]
