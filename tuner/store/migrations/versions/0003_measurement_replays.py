"""Kernel measurements say how many graph replays their median is over (a quick search sample or a final).

Until now the count was only written into `detail` as "replays=N"; it is moved into its own column, and the
old text is cleared where it said nothing else.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REPLAYS = re.compile(r"^replays=(\d+)(?:;\s*(.*))?$", re.DOTALL)


def upgrade() -> None:
    with op.batch_alter_table("kernel_measurements") as batch:
        batch.add_column(sa.Column("replays", sa.Integer(), nullable=False, server_default="0"))
    table = sa.table("kernel_measurements", sa.column("id", sa.Integer), sa.column("detail", sa.Text),
                     sa.column("replays", sa.Integer))
    conn = op.get_bind()
    rows = conn.execute(sa.select(table.c.id, table.c.detail).where(table.c.detail.like("replays=%"))).all()
    for row_id, detail in rows:
        match = _REPLAYS.match(detail)
        if match:
            conn.execute(table.update().where(table.c.id == row_id)
                         .values(replays=int(match.group(1)), detail=match.group(2) or None))


def downgrade() -> None:
    table = sa.table("kernel_measurements", sa.column("detail", sa.Text), sa.column("replays", sa.Integer))
    conn = op.get_bind()
    conn.execute(table.update().where(table.c.replays > 0, table.c.detail.is_(None))
                 .values(detail=sa.literal("replays=") + sa.cast(table.c.replays, sa.String)))
    with op.batch_alter_table("kernel_measurements") as batch:
        batch.drop_column("replays")
