"""Datasets administered (issue #13 item 1): the database side, on a migrated SQLite platform database.

Each change is all or nothing with its audit row; refusals name the problem and change nothing;
the settings file only seeds datasets the database lacks.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from medimg_hub.access.datasets import DatasetDirectory, rights_for, seed_datasets
from medimg_hub.access.models import AuditEvent, DatasetStudy
from medimg_hub.datasets.administration import (AUDIT_ACTION, DatasetAdmin, DatasetAdminError, DatasetConflict,
                                                DatasetNotFound)
from medimg_hub.db import make_engine, utcnow
from medimg_hub.db.migrations import upgrade
from medimg_hub.pipeline.models import Job, Task
from medimg_hub.settings import DatasetSettings

SEED = (DatasetSettings("site-a", "A", "SITEA", read=("engineers",), review=("site-a",)),
        DatasetSettings("site-b", "B", "SITEB", read=("site-b",)))
GROUPS = {"engineers", "site-a", "site-b", "oncology"}
WHO = {"actor": "adam", "groups": ("admins",)}


def uid(n: int) -> str:
    return f"1.2.826.0.1.3680043.10.77.{n}"


@pytest.fixture()
def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    upgrade(url)
    engine = make_engine(url)
    seed_datasets(engine, SEED)
    with Session(engine) as session, session.begin():
        for n, dataset in ((1, "site-a"), (2, "site-a"), (3, "site-b")):
            session.add(DatasetStudy(study_instance_uid=uid(n), dataset=dataset, assigned_at=utcnow()))
    yield engine
    engine.dispose()


@pytest.fixture()
def admin(engine) -> DatasetAdmin:  # type: ignore[no-untyped-def]
    return DatasetAdmin(engine, group_exists=GROUPS.__contains__)


def audit(engine) -> list[tuple[str | None, str | None, str | None]]:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        return [(e.user_name, e.dataset, e.detail) for e in session.scalars(
            select(AuditEvent).where(AuditEvent.action == AUDIT_ACTION).order_by(AuditEvent.id))]


def open_review(engine, study: str, dataset: str) -> None:  # type: ignore[no-untyped-def]
    """A task of ``study`` in ``dataset`` whose manual stage waits for review."""
    now = utcnow()
    task = Task(id=str(uuid.uuid4()), pipeline_id="p", pipeline_version="1", owner="eve", dataset=dataset,
                study_instance_uid=study, parameters={}, created_at=now)
    job = Job(id=str(uuid.uuid4()), task_id=task.id, stage_id="review", position=0, kind="manual", depends_on=[],
              status="waiting_review", max_attempts=1, backoff_s=0, backoff_factor=1, max_backoff_s=0, parameters={},
              outputs={}, created_at=now, updated_at=now, version=1)
    with Session(engine) as session, session.begin():
        session.add_all([task, job])


def test_create_grant_and_the_grantee_sees_it_without_a_restart(engine, admin: DatasetAdmin) -> None:
    directory = DatasetDirectory(engine, ttl_s=3600)  # a long cache: only on_change makes it see changes
    admin = DatasetAdmin(engine, group_exists=GROUPS.__contains__, on_change=directory.forget)
    assert "oncology-2026" not in directory.rights(["oncology"])
    admin.create("oncology-2026", description="Liver lesions", **WHO)
    placed = admin.add_studies("oncology-2026", [uid(9), uid(10)], **WHO)
    assert placed.added == (uid(9), uid(10)) and not placed.moved
    assert admin.grant("oncology-2026", "oncology", "read", **WHO) is True
    assert admin.grant("oncology-2026", "oncology", "read", **WHO) is False  # idempotent
    assert directory.rights(["oncology"]) == {"oncology-2026": {"read"}}
    assert directory.studies_in(["oncology-2026"]) == {uid(9), uid(10)}
    assert admin.revoke("oncology-2026", "oncology", "read", **WHO) is True
    assert directory.rights(["oncology"]) == {}
    view = admin.get("oncology-2026")
    assert (view.studies, view.description, view.grants["read"]) == (2, "Liver lesions", [])
    assert [d for _, _, d in audit(engine)] == ["created", "studies added: 2 new, 0 moved from other datasets",
                                               "granted read to group 'oncology'", "revoked read from group 'oncology'"]
    assert {u for u, _, _ in audit(engine)} == {"adam"}


def test_refusals_change_nothing(engine, admin: DatasetAdmin) -> None:
    before = audit(engine)
    with pytest.raises(DatasetAdminError, match="no group named 'oncolgy'"):
        admin.grant("site-a", "oncolgy", "read", **WHO)
    with pytest.raises(DatasetAdminError, match="right 'admin' is not one of read, write, review, finalise, export"):
        admin.grant("site-a", "oncology", "admin", **WHO)
    with pytest.raises(DatasetNotFound, match="no dataset named 'site-z'"):
        admin.add_studies("site-z", [uid(1)], **WHO)
    with pytest.raises(DatasetConflict, match="exists already"):
        admin.create("site-a", **WHO)
    with pytest.raises(DatasetAdminError, match="dataset name"):
        admin.create("../etc", **WHO)
    with pytest.raises(DatasetAdminError, match="is not a StudyInstanceUID"):
        admin.add_studies("site-b", [uid(5), "1.2.x"], **WHO)  # the valid one is not added either
    with pytest.raises(DatasetAdminError, match="not a DICOM attribute"):
        admin.add_rule("site-b", {"Institution": "X"}, [], **WHO)
    with pytest.raises(DatasetAdminError, match="control parameter"):
        admin.add_rule("site-b", {"limit": "1"}, [], **WHO)
    assert audit(engine) == before
    assert admin.get("site-b").studies == 1 and rights_for(Session(engine), ["oncology"]) == {}


def test_a_study_under_review_does_not_move(engine, admin: DatasetAdmin) -> None:
    """Moving studies out of a dataset with an open review is refused whole: none of them moves."""
    open_review(engine, uid(1), "site-a")
    with pytest.raises(DatasetConflict, match=r"1 of these studies would leave a dataset while a review"):
        admin.add_studies("site-b", [uid(2), uid(1)], **WHO)
    with pytest.raises(DatasetConflict, match="review open"):
        admin.remove_studies("site-a", [uid(1)], **WHO)
    with pytest.raises(DatasetConflict):
        admin.add_rule("site-b", {"InstitutionName": "SITEA"}, [uid(1), uid(2)], **WHO)
    assert admin.get("site-a").studies == 2 and admin.get("site-b").studies == 1 and admin.rules() == []
    moved = admin.add_studies("site-b", [uid(2)], **WHO)  # no review open on this one
    assert moved.moved == (uid(2),)
    assert admin.remove_studies("site-b", [uid(2), uid(99)], **WHO) == 1
    assert uid(2) not in admin.assigned()


def test_rules_place_matching_studies_and_arrivals(engine, admin: DatasetAdmin) -> None:
    rule_id, placed = admin.add_rule("site-b", {"StudyDescription": "LIVER*"}, [uid(1), uid(3), uid(20)], **WHO)
    assert (placed.added, placed.moved, placed.already) == ((uid(20),), (uid(1),), (uid(3),))
    assert admin.rules() == [(rule_id, "site-b", {"StudyDescription": "LIVER*"})]
    # arrivals: only studies in no dataset join; a study in a dataset stays
    assert admin.assign_unassigned("site-b", [uid(2), uid(21)], rule_id=rule_id) == 1
    assert admin.get("site-a").studies == 1 and admin.get("site-b").studies == 4
    assert admin.remove_rule(rule_id, **WHO) == rule_id and admin.rules() == []
    with pytest.raises(DatasetNotFound):
        admin.remove_rule(rule_id, **WHO)


def test_rename_moves_studies_grants_rules_and_tasks(engine, admin: DatasetAdmin) -> None:
    admin.add_rule("site-a", {"Modality": "CT"}, [], **WHO)
    open_review(engine, uid(1), "site-a")
    admin.update("site-a", new_name="northfield", description="Northfield", **WHO)
    with pytest.raises(DatasetNotFound):
        admin.get("site-a")
    view = admin.get("northfield")
    assert (view.studies, view.grants["read"], view.grants["review"], view.description) == (
        2, ["engineers"], ["site-a"], "Northfield")
    assert [r[1] for r in admin.rules()] == ["northfield"]
    with Session(engine) as session:
        assert set(session.scalars(select(Task.dataset))) == {"northfield"}
    with pytest.raises(DatasetConflict):
        admin.update("northfield", new_name="site-b", **WHO)
    assert audit(engine)[-1][2] == "description changed; renamed from 'site-a' to 'northfield'"


def test_the_settings_only_seed(engine, admin: DatasetAdmin) -> None:
    """An administered grant survives a restart with an older settings file; new tables seed new datasets."""
    admin.grant("site-a", "oncology", "read", **WHO)
    admin.revoke("site-a", "engineers", "read", **WHO)
    report = seed_datasets(engine, SEED + (DatasetSettings("site-c", "C", "SITEC", read=("site-b",)),))
    assert report.datasets_added == ("site-c",) and report.differing == ("site-a",)
    assert admin.get("site-a").grants["read"] == ["oncology"]
    assert admin.get("site-c").grants["read"] == ["site-b"]
