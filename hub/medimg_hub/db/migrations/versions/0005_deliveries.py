"""The outbox of finalised results: ``deliveries`` (pushes to hospital PACS and signed webhooks).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# The model lives in medimg_hub.delivery.models; importing it registers the table on Base.metadata
# whenever the migration scripts are loaded (schema comparisons see the whole chain).
import medimg_hub.delivery.models  # noqa: F401

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _time(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(36), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("dataset", sa.String(128), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _time("created_at", nullable=False),
        _time("updated_at", nullable=False),
        _time("next_attempt_at", nullable=False),
        _time("delivered_at"),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        _time("lease_expires_at"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="ck_deliveries_status"),
        sa.CheckConstraint("kind IN ('dicomweb', 'dicom', 'webhook')", name="ck_deliveries_kind"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_deliveries_job_id_jobs"),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.UniqueConstraint("idempotency_key", name="uq_deliveries_idempotency_key"),
    )
    op.create_index("ix_deliveries_job_id", "deliveries", ["job_id"])
    op.create_index("ix_deliveries_dataset", "deliveries", ["dataset"])
    op.create_index("ix_deliveries_status", "deliveries", ["status"])
    op.create_index("ix_deliveries_next_attempt_at", "deliveries", ["next_attempt_at"])


def downgrade() -> None:
    op.drop_table("deliveries")
