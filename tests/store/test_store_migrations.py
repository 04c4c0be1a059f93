"""Migrations: a fresh database gets every table, reopening changes nothing, models match the migrations."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tuner.errors import DatabaseError
from tuner.store import kernels, migrate
from tuner.store.db import open_database, row_counts
from tuner.store.flag_models import FLAG_TABLES
from tuner.store.models import TABLES, Base, KernelBestConfig

CTX = kernels.MeasurementContext("fused_moe", "tuner", "NVIDIA H100 80GB HBM3", "3.6.0", "cuda_graph_v1")


def _tables(db) -> set[str]:  # type: ignore[no-untyped-def]
    with db.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def test_fresh_database_gets_all_tables_at_head(db_url: str) -> None:
    db = open_database(db_url)
    try:
        assert set(TABLES) | {"alembic_version"} <= _tables(db)
        assert migrate.current_revision(db) == migrate.head_revision()
        assert row_counts(db) == dict.fromkeys(TABLES + FLAG_TABLES, 0)
    finally:
        db.dispose()


def test_sqlite_folder_is_created(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "deep" / "er" / "tuner.db"
    open_database(f"sqlite:///{path}").dispose()
    assert path.is_file()


def test_reopening_is_idempotent_and_keeps_data(db_url: str) -> None:
    db = open_database(db_url)
    kernels.record_measurement(
        db, CTX, "shape", kernels.Measurement(1, "c1", "ok", 10.0, 0.1, 0.0, None, 0.5)
    )
    db.dispose()
    for _ in range(2):
        db = open_database(db_url)
        assert migrate.upgrade(db) == migrate.head_revision()
        assert migrate.current_revision(db) == migrate.head_revision()
        assert [m.config_key for m in kernels.load_measurements(db, CTX, "shape")] == ["c1"]
        db.dispose()


def test_models_match_the_migrations(db) -> None:  # type: ignore[no-untyped-def]
    # A model change without a migration would make this non-empty.
    with db.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_database_newer_than_this_tuner_is_refused(sqlite_url: str) -> None:
    db = open_database(sqlite_url)
    with db.connect(read_only=False) as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_future'")
        conn.commit()
    db.dispose()
    with pytest.raises(DatabaseError, match=r"9999_future.*newer tuner.*Upgrade tuner"):
        open_database(sqlite_url)


def test_sqlite_settings_wal_foreign_keys_busy_timeout(sqlite_url: str) -> None:
    db = open_database(sqlite_url, busy_timeout_s=12.5)
    try:
        with db.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 12500
        # foreign keys on: a best config of a sweep that does not exist is rejected by the database itself
        with pytest.raises(sa.exc.IntegrityError), db.session() as session:
            session.add(
                KernelBestConfig(sweep_id=999, batch_size=1, config={}, config_key="k", latency_us=1.0)
            )
    finally:
        db.dispose()


def test_ctrl_c_inside_a_session_leaves_nothing_half_written(db) -> None:  # type: ignore[no-untyped-def]
    from tuner.store.models import KernelMeasurement

    with pytest.raises(KeyboardInterrupt), db.session() as session:
        session.add(
            KernelMeasurement(
                kernel="k",
                kernel_source="tuner",
                device_name="d",
                triton_version="t",
                bench_method="b",
                shape_key="s",
                batch_size=1,
                config_key="c",
                status="ok",
                latency_us=1.0,
                gpu_seconds=0.0,
            )
        )
        session.flush()
        raise KeyboardInterrupt  # Ctrl-C in the middle of a write
    assert row_counts(db)["kernel_measurements"] == 0


def test_upgrade_from_0002_moves_the_replay_count_out_of_detail(sqlite_url: str) -> None:
    """Databases written before 0003 kept "replays=N" in `detail`; after the upgrade a resumed sweep still knows
    which configs already have a final (many-replay) timing and does not re-time them."""
    from alembic import command

    engine = sa.create_engine(sqlite_url.replace("/data/", "/"))
    with engine.begin() as conn:
        config = migrate.alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
        insert = sa.text(
            "INSERT INTO kernel_measurements (kernel, kernel_source, device_name, triton_version, bench_method, "
            "shape_key, batch_size, config_key, status, latency_us, detail, gpu_seconds, created_at) VALUES "
            "('fused_moe', 'tuner', 'NVIDIA H100 80GB HBM3', '3.6.0', 'cuda_graph_v1', 'shape', 8, :key, :status, "
            ":lat, :detail, 0.5, '2026-11-22 19:00:00')"
        )
        conn.execute(insert, {"key": "quick", "status": "ok", "lat": 10.0, "detail": "replays=6"})
        conn.execute(insert, {"key": "final", "status": "ok", "lat": 9.0, "detail": "replays=30"})
        conn.execute(insert, {"key": "bad", "status": "wrong", "lat": None, "detail": "relative error 0.5"})
    engine.dispose()
    db = open_database(sqlite_url.replace("/data/", "/"))
    try:
        assert migrate.current_revision(db) == migrate.head_revision()
        got = {m.config_key: (m.replays, m.detail) for m in kernels.load_measurements(db, CTX, "shape")}
        assert got == {"quick": (6, None), "final": (30, None), "bad": (0, "relative error 0.5")}
    finally:
        db.dispose()
