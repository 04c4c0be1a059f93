"""run_bench end to end against the fake server: stages, storage, and the failures users meet."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from runtime_fakes import FakeEngine

from tuner.runtime import engines
from tuner.runtime.bench import STAGES, BenchSpec, run_bench
from tuner.runtime.launcher import group_members
from tuner.runtime.loadgen.arrivals import PoissonArrivals
from tuner.runtime.loadgen.client import LoadOptions
from tuner.runtime.loadgen.summary import parse_slos
from tuner.runtime.loadgen.workloads import RandomWorkload, fallback_make_text
from tuner.store.bench import get_bench_run
from tuner.store.db import open_database


@pytest.fixture(autouse=True)
def fake_registered(monkeypatch):
    monkeypatch.setitem(engines.ENGINES, "fake", FakeEngine)


@pytest.fixture()
def db(tmp_path):
    database = open_database(f"sqlite:///{tmp_path / 'tuner.db'}")
    yield database
    database.dispose()


def _spec(tmp_path, mode="ok", extra=(), num_prompts=20, rate=200.0, **kw):
    return BenchSpec(
        engine="fake", model="fake-model",
        workload=RandomWorkload(num_prompts, input_len=20, output_len=10, text_source=fallback_make_text),
        arrivals=PoissonArrivals(rate), load=LoadOptions(num_warmup=2),
        engine_options={"mode": mode, "extra": ("--ready-after-s", "0.2", "--ttft-s", "0.03",
                                                "--itl-s", "0.012", *extra)},
        log_dir=tmp_path / "logs", ready_timeout_s=kw.pop("ready_timeout_s", 20), **kw,
    )


def test_a_full_bench_is_timed_compared_and_stored(tmp_path, db):
    result = run_bench(_spec(tmp_path, slos=parse_slos("ttft_p99<=1s,tpot_p99<=100ms")), db=db)
    assert result.ok, result.error
    assert set(result.stage_seconds) == set(STAGES) - {"validate"}
    c, e = result.client, result.engine_figures
    assert c is not None and e is not None
    assert c.completed == 20 and c.failed == 0 and c.total_output_tokens == 200
    assert e.generation_tokens == 200  # warm-up excluded on both sides
    assert c.goodput_req_s is not None and c.slo_attainment == 1.0
    assert all(row.agrees for row in result.comparison), result.comparison
    json.dumps(result.to_dict())  # JSON all the way down
    stored = get_bench_run(db, result.run_id)
    assert stored is not None and stored.status == "ok" and stored.engine == "fake"
    assert stored.client_summary["ttft_p99_s"] == pytest.approx(c.ttft_p99_s)
    assert stored.engine_metrics["generation_tokens"] == 200
    assert stored.workload["arrivals"]["request_rate"] == 200.0
    assert set(stored.stage_seconds) == set(result.stage_seconds)


def test_infinite_rate_is_stored_as_json(tmp_path, db):
    result = run_bench(_spec(tmp_path, num_prompts=4, rate=math.inf), db=db)
    assert result.ok and get_bench_run(db, result.run_id).workload["arrivals"]["request_rate"] == "inf"


def test_an_engine_killed_mid_load_fails_clearly_and_leaves_no_process(tmp_path, db):
    spec = _spec(tmp_path, mode="die-after-requests", extra=("--die-after", "8", "--spawn-child"), rate=50.0)
    result = run_bench(spec, db=db)
    assert result.status == "failed" and result.failure_kind == "crash"
    assert "exited with code 3 during the load" in result.error
    assert result.client is not None and result.client.failed > 0  # what was measured is kept
    assert result.client.completed < 20
    pgid = int(Path(result.log_path).read_text().split("in process group ")[1].split()[0])
    assert group_members(pgid) == []  # the engine's child is gone too
    assert get_bench_run(db, result.run_id).failure_kind == "crash"


def test_garbage_metrics_fail_the_run_naming_the_url(tmp_path):
    result = run_bench(_spec(tmp_path, mode="garbage-metrics", num_prompts=2))
    assert result.failure_kind == "bad_metrics"
    assert "/metrics did not return Prometheus text" in result.error


def test_missing_metrics_are_reported_missing(tmp_path):
    result = run_bench(_spec(tmp_path, mode="no-metrics", num_prompts=3))
    assert result.ok and result.engine_figures is not None
    assert result.engine_figures.ttft_p99 is None
    assert "sglang:time_to_first_token_seconds" in result.engine_figures.missing
    assert any("engine metrics missing" in w for w in result.warnings)


def test_launch_failures_are_results_with_a_kind(tmp_path, db):
    oom = run_bench(_spec(tmp_path, mode="oom"), db=db)
    assert oom.status == "failed" and oom.failure_kind == "oom" and oom.client is None
    assert "CUDA out of memory" in oom.error
    assert get_bench_run(db, oom.run_id).failure_kind == "oom"
    never = run_bench(_spec(tmp_path, mode="never-ready", ready_timeout_s=1.0))
    assert never.failure_kind == "timeout" and "listening on" in never.error


def test_unknown_flags_are_rejected_before_any_launch(tmp_path):
    result = run_bench(_spec(tmp_path, flags={"ready_after_sec": 1}))
    assert result.failure_kind == "invalid_argument"
    assert "--ready-after-sec" in result.error and "--ready-after-s" in result.error  # close match
    assert "launch" not in result.stage_seconds and result.log_path is None


def _read_only_db_url(tmp_path):
    path = tmp_path / "ro.db"
    open_database(f"sqlite:///{path}").dispose()  # created and migrated, then opened read-only below
    return f"sqlite:///file:{path}?mode=ro&uri=true"


def test_a_read_only_database_keeps_the_finished_run(tmp_path):
    with open_database(_read_only_db_url(tmp_path)) as ro:
        result = run_bench(_spec(tmp_path, num_prompts=4), db=ro)
    assert result.ok and result.client is not None and result.client.completed == 4
    assert result.run_id is None and "read-only" in result.store_error


def test_bench_prints_and_writes_the_result_before_the_storage_error(tmp_path, monkeypatch, capsys):
    from tuner import cli
    from tuner.runtime import bench as bench_module

    real_run_bench = bench_module.run_bench
    monkeypatch.setattr(bench_module, "run_bench",  # the command's own flags, the fake engine's launch
                        lambda spec, db=None: real_run_bench(_spec(tmp_path, num_prompts=4), db=db))
    out_json = tmp_path / "out" / "result.json"
    rc = cli.main(["--database-url", _read_only_db_url(tmp_path), "--data-dir", str(tmp_path / "data"),
                   "bench", "--engine", "sim", "--model", "GLM-4.7-FP8", "--json", str(out_json)])
    captured = capsys.readouterr()
    assert rc == 2
    assert "TTFT" in captured.out  # the table was printed
    assert json.loads(out_json.read_text())["client"]["completed"] == 4
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("tuner: error: the run above was not stored") and "read-only" in line


def test_client_and_engine_disagree_only_beyond_the_bucket_and_the_clients_own_stall():
    """ITL p99 seen 6.8 ms later by the client than the engine's 20-25 ms bucket: a disagreement, unless the client
    measured its own event loop stalling that long (then the lateness is the client's)."""
    import dataclasses

    from tuner.runtime.compare import Quantile, compare

    client = _client_summary(itl_p99_s=0.0303, loop_lag_max_ms=0.5)
    engine = _engine_figures(itl_p99=Quantile(0.0235, 0.020, 0.025))
    rows, warnings = compare(client, engine)
    itl = next(r for r in rows if r.metric == "itl_p99")
    assert itl.agrees is False and any(w.startswith("itl_p99: client 30.3 ms vs engine 23.5 ms") for w in warnings)
    stalled = dataclasses.replace(client, loop_lag_max_ms=8.0)
    rows, warnings = compare(stalled, engine)
    assert next(r for r in rows if r.metric == "itl_p99").agrees is True and not any("itl_p99" in w for w in warnings)


def _client_summary(**given):  # type: ignore[no-untyped-def]
    """A ClientSummary with only the `given` figures (the rest unmeasured)."""
    import dataclasses

    from tuner.runtime.loadgen.summary import ClientSummary

    return ClientSummary(**{f.name: None for f in dataclasses.fields(ClientSummary)} | given)


def _engine_figures(**given):  # type: ignore[no-untyped-def]
    import dataclasses

    from tuner.runtime.compare import EngineFigures

    return EngineFigures(**{f.name: None for f in dataclasses.fields(EngineFigures)} | {"missing": ()} | given)
