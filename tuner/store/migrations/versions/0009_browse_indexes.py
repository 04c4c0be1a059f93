"""Indexes for the service's paged reads of flag trials (100 000 trials per study stay fast): counts and filters
by status, best goodput first, and the newest finish of a study.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_flag_trials_study_status": ["study_id", "kind", "status"],
    "ix_flag_trials_study_goodput": ["study_id", "goodput_tok_s"],
    "ix_flag_trials_study_finished": ["study_id", "finished_at"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "flag_trials", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="flag_trials")
