"""Review claims and drafts, and the proposer's labels on review proposals.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("review_proposals") as batch:
        batch.add_column(sa.Column("mask", sa.LargeBinary(), nullable=True))
    op.create_table(
        "review_claims",
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_review_claims_job_id_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", name="pk_review_claims"),
    )
    op.create_table(
        "review_drafts",
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_review_drafts_job_id_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "actor", name="pk_review_drafts"),
    )


def downgrade() -> None:
    op.drop_table("review_drafts")
    op.drop_table("review_claims")
    with op.batch_alter_table("review_proposals") as batch:
        batch.drop_column("mask")
