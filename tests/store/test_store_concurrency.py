"""Worker processes writing to one database lose nothing; a lock that never clears is explained."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time

import pytest

from tuner.errors import DatabaseError
from tuner.store import kernels
from tuner.store.db import open_database

CTX = kernels.MeasurementContext("fused_moe", "tuner", "NVIDIA H100 80GB HBM3", "3.6.0", "cuda_graph_v1")
ROWS_PER_WORKER = 50


def _worker(url: str, worker: int, start, sweep_fields: dict) -> None:  # type: ignore[no-untyped-def]
    # Each worker opens the still-empty file itself, so the first migration races too.
    db = open_database(url)
    sweep_id = kernels.get_or_create_sweep(db, **sweep_fields)
    start.wait(timeout=60)
    for i in range(ROWS_PER_WORKER):
        m = kernels.Measurement(1 + i % 5, f"w{worker}_c{i}", "ok", 10.0 + i, 0.1, 0.0, None, 0.25)
        kernels.record_measurement(db, CTX, "shape", m)
        kernels.set_sweep_status(db, sweep_id, "running", gpu_seconds_delta=0.25)
    db.dispose()


def test_two_processes_writing_one_database_lose_nothing(db_url: str) -> None:
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(2)
    sweep_fields = {
        "model": "m",
        "tp": 8,
        "ep": 1,
        "shared_experts_fusion": False,
        "dtype": "bf16",
        "kernel": "fused_moe",
        "kernel_source": "tuner",
        "device_name": CTX.device_name,
        "triton_version": "3.6.0",
        "torch_version": "2.11",
        "bench_method": "cuda_graph_v1",
        "shape": {"E": 8},
        "shape_key": "shape",
        "batch_sizes": [1, 2],
        "strategy": "grid",
    }
    workers = [spawn.Process(target=_worker, args=(db_url, w, start, sweep_fields)) for w in range(2)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=120)
    assert [p.exitcode for p in workers] == [0, 0]

    db = open_database(db_url)
    try:
        loaded = kernels.load_measurements(db, CTX, "shape")
        assert len(loaded) == 2 * ROWS_PER_WORKER
        assert {m.config_key for m in loaded} == {
            f"w{w}_c{i}" for w in range(2) for i in range(ROWS_PER_WORKER)
        }
        (sweep,) = kernels.list_sweeps(db)  # both workers resumed one sweep row
        assert sweep.gpu_seconds == pytest.approx(2 * ROWS_PER_WORKER * 0.25)  # no lost update
    finally:
        db.dispose()


def _hold_write_lock(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


def test_locked_database_gives_a_helpful_error(sqlite_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    open_database(sqlite_url).dispose()
    holder = _hold_write_lock(str(tmp_path / "data" / "tuner.db"))
    try:
        db = open_database(sqlite_url, busy_timeout_s=0.1, lock_retries=1)
        # reading still works while another process writes (WAL)
        assert kernels.load_measurements(db, CTX, "shape") == []
        started = time.monotonic()
        with pytest.raises(DatabaseError, match=r"locked.*another process.*PostgreSQL"):
            kernels.record_measurement(
                db, CTX, "shape", kernels.Measurement(1, "c", "ok", 1.0, None, None, None, 0)
            )
        assert time.monotonic() - started < 10
        db.dispose()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_lock_released_while_retrying_is_waited_out(sqlite_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = open_database(sqlite_url, busy_timeout_s=0.1, lock_retries=20)
    holder = _hold_write_lock(str(tmp_path / "data" / "tuner.db"))
    release = threading.Timer(0.5, lambda: holder.execute("ROLLBACK"))
    release.start()
    try:
        kernels.record_measurement(
            db, CTX, "shape", kernels.Measurement(1, "c", "ok", 1.0, None, None, None, 0)
        )
        assert [m.config_key for m in kernels.load_measurements(db, CTX, "shape")] == ["c"]
    finally:
        release.join()
        holder.close()
        db.dispose()
