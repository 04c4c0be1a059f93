"""Bench runs: stored with their JSON payloads, listed newest first."""

from __future__ import annotations

import pytest

from tuner.store.bench import get_bench_run, list_bench_runs, record_bench_run


def test_bench_runs_round_trip_newest_first(db) -> None:  # type: ignore[no-untyped-def]
    first = record_bench_run(
        db,
        engine="sglang",
        engine_version="0.5.23",
        model="zai-org/GLM-4.6-FP8",
        gpu="NVIDIA H100 80GB HBM3",
        flags={"tp": 8, "enable-metrics": True},
        env={"SGLANG_X": "1"},
        workload={"kind": "sharegpt", "rate": 4.0},
        status="ok",
        client_summary={"ttft_p99_s": 0.8, "requests": 200},
        stage_seconds={"load": 93.1},
        log_path="/tmp/run1.log",
    )
    second = record_bench_run(
        db,
        engine="vllm",
        model="Qwen/Qwen3-235B-A22B",
        flags=["--tp", "8"],
        env={},
        workload={"kind": "random"},
        status="failed",
        failure_kind="oom",
        error="CUDA out of memory",
    )
    runs = list_bench_runs(db)
    assert [r.id for r in runs] == [second, first]
    newest, oldest = runs
    assert oldest.flags == {"tp": 8, "enable-metrics": True} and oldest.client_summary["ttft_p99_s"] == 0.8
    assert newest.flags == ["--tp", "8"] and newest.failure_kind == "oom"
    assert newest.client_summary is None and newest.engine_metrics is None and newest.engine_version is None
    assert oldest.created_at.tzinfo is not None
    assert list_bench_runs(db, limit=1) == [newest]
    assert get_bench_run(db, first) == oldest


def test_bench_run_needs_its_fields(db) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match="workload"):
        record_bench_run(db, engine="sglang", model="m", flags={}, env={}, status="ok")
    with pytest.raises(ValueError, match="status"):
        record_bench_run(db, engine="sglang", model="m", flags={}, env={}, workload={}, status="great")
    assert list_bench_runs(db) == []
