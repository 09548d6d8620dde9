"""Datasets, dataset studies and grants, the append-only audit log, review proposals.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

``audit_events`` is append-only: on PostgreSQL a trigger function refuses UPDATE, DELETE and
TRUNCATE; on SQLite two triggers refuse UPDATE and DELETE.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# The models of these tables live in medimg_hub.access.models, on the task store's Base.
# Importing them here registers them on Base.metadata whenever the migration scripts are
# loaded, so schema comparisons (tests/hub/test_task_store.py) see the whole chain.
import medimg_hub.access.models  # noqa: F401

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_APPEND_ONLY = "audit_events is append-only: UPDATE, DELETE and TRUNCATE are refused"


def _time(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _datasets() -> None:
    op.create_table(
        "datasets",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("institution", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_datasets"),
    )
    op.create_index("ix_datasets_institution", "datasets", ["institution"])
    op.create_table(
        "dataset_studies",
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("dataset", sa.String(128), nullable=False),
        _time("assigned_at", nullable=False),
        sa.ForeignKeyConstraint(["dataset"], ["datasets.name"], name="fk_dataset_studies_dataset_datasets",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("study_instance_uid", name="pk_dataset_studies"),
    )
    op.create_index("ix_dataset_studies_dataset", "dataset_studies", ["dataset"])
    op.create_table(
        "dataset_grants",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("group_name", sa.String(128), nullable=False),
        sa.Column("right", sa.String(16), nullable=False),
        sa.CheckConstraint("\"right\" IN ('read', 'write', 'review', 'finalise')", name="ck_dataset_grants_right"),
        sa.ForeignKeyConstraint(["dataset"], ["datasets.name"], name="fk_dataset_grants_dataset_datasets",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_dataset_grants"),
        sa.UniqueConstraint("dataset", "group_name", "right", name="uq_dataset_grants_dataset_group_name_right"),
    )
    op.create_index("ix_dataset_grants_dataset", "dataset_grants", ["dataset"])
    op.create_index("ix_dataset_grants_group_name", "dataset_grants", ["group_name"])


def _audit() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _time("at", nullable=False),
        sa.Column("user_name", sa.String(128), nullable=True),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=True),
        sa.Column("series_instance_uid", sa.String(64), nullable=True),
        sa.Column("sop_instance_uid", sa.String(64), nullable=True),
        sa.Column("dataset", sa.String(128), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.CheckConstraint("outcome IN ('allowed', 'denied', 'error')", name="ck_audit_events_outcome"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    for column in ("action", "at", "dataset", "study_instance_uid", "user_name"):
        op.create_index(f"ix_audit_events_{column}", "audit_events", [column])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{_APPEND_ONLY}'; END $$"
        )
        op.execute("CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events "
                   "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()")
        op.execute("CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
                   "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()")
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_events_no_{verb.lower()} BEFORE {verb} ON audit_events "
                       f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END")


def upgrade() -> None:
    _datasets()
    _audit()
    op.create_table(
        "review_proposals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("outputs", sa.JSON(), nullable=False),
        _time("at", nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_review_proposals_job_id_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_review_proposals"),
    )
    op.create_index("ix_review_proposals_job_id", "review_proposals", ["job_id"])


def downgrade() -> None:
    op.drop_table("review_proposals")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_change ON audit_events")
        op.execute("DROP FUNCTION IF EXISTS audit_events_append_only()")
    op.drop_table("audit_events")
    op.drop_table("dataset_grants")
    op.drop_table("dataset_studies")
    op.drop_table("datasets")
