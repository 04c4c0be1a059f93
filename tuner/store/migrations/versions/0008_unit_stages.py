"""Work-unit stages: a unit is claimable only once every unit of a lower stage of its job has ended (a kernel
sweep's second pass over all batch sizes waits for the first pass of every one of them).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("work_units") as batch:
        batch.add_column(sa.Column("stage", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("work_units") as batch:
        batch.drop_column("stage")
