"""Initial schema: kernel measurements, kernel sweeps, their best configs, bench runs.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "kernel_measurements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kernel", sa.String(), nullable=False),
        sa.Column("kernel_source", sa.String(), nullable=False),
        sa.Column("device_name", sa.String(), nullable=False),
        sa.Column("triton_version", sa.String(), nullable=False),
        sa.Column("bench_method", sa.String(), nullable=False),
        sa.Column("shape_key", sa.String(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("config_key", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("latency_us", sa.Float(), nullable=True),
        sa.Column("latency_spread_us", sa.Float(), nullable=True),
        sa.Column("max_rel_error", sa.Float(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_kernel_measurements"),
        sa.UniqueConstraint(
            "kernel",
            "kernel_source",
            "device_name",
            "triton_version",
            "bench_method",
            "shape_key",
            "batch_size",
            "config_key",
            name="uq_kernel_measurements_key",
        ),
    )
    op.create_table(
        "kernel_sweeps",
        sa.Column("id", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("tp", sa.Integer(), nullable=False),
        sa.Column("ep", sa.Integer(), nullable=False),
        sa.Column("shared_experts_fusion", sa.Boolean(), nullable=False),
        sa.Column("dtype", sa.String(), nullable=False),
        sa.Column("kernel", sa.String(), nullable=False),
        sa.Column("kernel_source", sa.String(), nullable=False),
        sa.Column("device_name", sa.String(), nullable=False),
        sa.Column("triton_version", sa.String(), nullable=False),
        sa.Column("torch_version", sa.String(), nullable=False),
        sa.Column("bench_method", sa.String(), nullable=False),
        sa.Column("shape", sa.JSON(), nullable=False),
        sa.Column("shape_key", sa.String(), nullable=False),
        sa.Column("batch_sizes", sa.JSON(), nullable=False),
        sa.Column("strategy", sa.String(), nullable=False),
        sa.Column("engine_version", sa.String(), nullable=True),
        sa.Column("gpu_seconds", sa.Float(), server_default="0", nullable=False),
        sa.Column("notes", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_kernel_sweeps"),
        sa.UniqueConstraint(
            "model",
            "tp",
            "ep",
            "shared_experts_fusion",
            "kernel",
            "kernel_source",
            "device_name",
            "triton_version",
            "bench_method",
            "shape_key",
            name="uq_kernel_sweeps_key",
        ),
    )
    op.create_table(
        "kernel_best_configs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("config_key", sa.String(), nullable=False),
        sa.Column("latency_us", sa.Float(), nullable=False),
        sa.Column("default_latency_us", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["kernel_sweeps.id"],
            name="fk_kernel_best_configs_sweep_id_kernel_sweeps",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_kernel_best_configs"),
        sa.UniqueConstraint("sweep_id", "batch_size", name="uq_kernel_best_configs_key"),
    )
    op.create_table(
        "bench_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        sa.Column("engine", sa.String(), nullable=False),
        sa.Column("engine_version", sa.String(), nullable=True),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("gpu", sa.String(), nullable=True),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.Column("env", sa.JSON(), nullable=False),
        sa.Column("workload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("failure_kind", sa.String(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("client_summary", sa.JSON(), nullable=True),
        sa.Column("engine_metrics", sa.JSON(), nullable=True),
        sa.Column("server_info", sa.JSON(), nullable=True),
        sa.Column("log_path", sa.String(), nullable=True),
        sa.Column("stage_seconds", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_bench_runs"),
    )


def downgrade() -> None:
    op.drop_table("bench_runs")
    op.drop_table("kernel_best_configs")
    op.drop_table("kernel_sweeps")
    op.drop_table("kernel_measurements")
