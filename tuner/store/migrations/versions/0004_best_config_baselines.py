"""Best configs carry the down GEMM's own config and the engine's current choice beside the tuned one.

A tuned file is only good if it beats what the engine already runs (its shipped file, else its default), so
each best-config row now records that choice, its source and latency, the separate `_down` config SGLang
reads, the best single config (for engines without `_down` files), and whether the engine's choice was kept.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    ("down_config", sa.JSON(none_as_null=True)),
    ("engine_config", sa.JSON(none_as_null=True)),
    ("engine_source", sa.String()),
    ("engine_latency_us", sa.Float()),
    ("single_config", sa.JSON(none_as_null=True)),
    ("single_latency_us", sa.Float()),
    ("kept_engine_choice", sa.Boolean()),
    ("noise_us", sa.Float()),
)


def upgrade() -> None:
    with op.batch_alter_table("kernel_best_configs") as batch:
        for name, type_ in _COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("kernel_best_configs") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
