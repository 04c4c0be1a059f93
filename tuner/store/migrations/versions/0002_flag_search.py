"""Flag searches: studies and their trials (the Optuna study of the same name sits beside them).

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "flag_studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("engine", sa.String(), nullable=False),
        sa.Column("engine_version", sa.String(), nullable=True),
        sa.Column("gpu", sa.String(), nullable=True),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("workload", sa.JSON(), nullable=False),
        sa.Column("objective", sa.JSON(), nullable=False),
        sa.Column("sampler", sa.String(), nullable=False),
        sa.Column("space", sa.JSON(), nullable=False),
        sa.Column("load_search", sa.JSON(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=True),
        sa.Column("owner", sa.String(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_flag_studies"),
        sa.UniqueConstraint("name", name="uq_flag_studies_name"),
    )
    op.create_table(
        "flag_trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("is_baseline", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("failure_kind", sa.String(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.Column("env", sa.JSON(), nullable=False),
        sa.Column("notes", sa.JSON(), nullable=True),
        sa.Column("argv", sa.JSON(), nullable=True),
        sa.Column("engine_version", sa.String(), nullable=True),
        sa.Column("gpu", sa.String(), nullable=True),
        sa.Column("values", sa.JSON(), nullable=True),
        sa.Column("constraints", sa.JSON(), nullable=True),
        sa.Column("goodput_tok_s", sa.Float(), nullable=True),
        sa.Column("goodput_req_s", sa.Float(), nullable=True),
        sa.Column("max_load", sa.Float(), nullable=True),
        sa.Column("searches", sa.JSON(), nullable=True),
        sa.Column("server_info", sa.JSON(), nullable=True),
        sa.Column("log_path", sa.String(), nullable=True),
        sa.Column("log_tail", sa.Text(), nullable=True),
        sa.Column("stage_seconds", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["flag_studies.id"], name="fk_flag_trials_study_id_flag_studies",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_flag_trials"),
        sa.UniqueConstraint("study_id", "trial_number", "kind", "attempt", name="uq_flag_trials_key"),
    )


def downgrade() -> None:
    op.drop_table("flag_trials")
    op.drop_table("flag_studies")
