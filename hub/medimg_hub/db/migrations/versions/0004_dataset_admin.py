"""Datasets administered: saved query rules, and the ``export`` right.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_OLD_RIGHTS = "\"right\" IN ('read', 'write', 'review', 'finalise')"
_NEW_RIGHTS = "\"right\" IN ('read', 'write', 'review', 'finalise', 'export')"


def upgrade() -> None:
    with op.batch_alter_table("dataset_grants", recreate="always") as batch:
        batch.drop_constraint("ck_dataset_grants_right", type_="check")
        batch.create_check_constraint("right", sa.text(_NEW_RIGHTS))
    op.create_table(
        "dataset_rules",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("query", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["dataset"], ["datasets.name"], name="fk_dataset_rules_dataset_datasets",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_dataset_rules"),
    )
    op.create_index("ix_dataset_rules_dataset", "dataset_rules", ["dataset"])


def downgrade() -> None:
    op.drop_index("ix_dataset_rules_dataset", table_name="dataset_rules")
    op.drop_table("dataset_rules")
    op.execute("DELETE FROM dataset_grants WHERE \"right\" = 'export'")
    with op.batch_alter_table("dataset_grants", recreate="always") as batch:
        batch.drop_constraint("ck_dataset_grants_right", type_="check")
        batch.create_check_constraint("right", sa.text(_OLD_RIGHTS))
