"""End to end against the simulated engine as a real subprocess: readiness, `tuner bench`, client/engine
agreement, an engine killed mid-load, OOM at launch, flags a fork renamed."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import threading
import time

import httpx
import pytest

from tuner.cli import main
from tuner.runtime.bench import BenchSpec, run_bench
from tuner.runtime.engines import get_engine
from tuner.runtime.launcher import group_members, launch, live_engines
from tuner.runtime.loadgen.arrivals import PoissonArrivals
from tuner.runtime.loadgen.client import LoadOptions
from tuner.runtime.loadgen.workloads import RandomWorkload
from tuner.store.bench import list_bench_runs
from tuner.store.db import open_database

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tuner.runtime.sim.server") is None,
    reason="the simulated engine is not built yet",
)

MODEL = "zai-org/GLM-4.7-FP8"
FAST = {"tp-size": 8, "startup-seconds": 2}  # with --time-scale 20: about 0.1 s of simulated loading


def _bench_args(tmp_path, *extra: str, time_scale: str = "20") -> list[str]:
    return ["--database-url", f"sqlite:///{tmp_path / 'tuner.db'}", "--data-dir", str(tmp_path), "bench",
            "--engine", "sim", "--model", MODEL, "--flag", "tp-size=8", "--flag", "startup-seconds=2",
            "--time-scale", time_scale, *extra]


def test_launch_returns_only_once_the_sim_is_healthy(tmp_path):
    sim = get_engine("sim", time_scale=20)
    with launch(sim, MODEL, FAST, log_dir=tmp_path, ready_timeout_s=60) as running:
        log = running.log_path.read_text()
        assert "Load weight begin" in log and "The server is fired up and ready to roll!" in log
        assert httpx.get(running.base_url + "/health", timeout=10).status_code == 200
        info = running.server_info()
        assert info is not None and info["tp_size"] == 8
        assert running.flush_cache() is True
        pgid = running.pgid
    assert group_members(pgid) == []


def test_tuner_bench_on_the_sim_prints_stores_and_agrees_with_the_engine(tmp_path, capsys):
    out = tmp_path / "run.json"
    # time scale 2: inter-token gaps of ~10 ms, so a millisecond of client jitter on this small machine
    # stays well inside the engine's 5 ms ITL buckets; few CUDA graphs keep the simulated start short.
    # Rates and SLOs are in engine time: 20 req/s here is 40 req/s on the wall clock.
    rc = main(_bench_args(tmp_path, "--num-prompts", "40", "--input-len", "256", "--output-len", "32",
                          "--request-rate", "20", "--slo", "ttft_p99<=2s,tpot_p99<=50ms", "--json", str(out),
                          "--flag", "cuda-graph-max-bs=16", time_scale="2"))
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "TTFT p99 (ms)" in printed and "stored as bench run" in printed
    result = json.loads(out.read_text())
    assert result["status"] == "ok"
    client, engine = result["client"], result["engine_figures"]
    assert client["completed"] == 40 and client["failed"] == 0
    assert client["total_output_tokens"] == engine["generation_tokens"] == 40 * 32
    assert client["total_input_tokens"] == engine["prompt_tokens"]  # the server's usage, not our guess
    assert client["goodput_req_s"] > 0
    rows = {row["metric"]: row for row in result["comparison"]}
    assert set(rows) == {"ttft_p50", "ttft_p99", "itl_p50", "itl_p99", "e2e_p50", "e2e_p99"}
    for row in rows.values():  # within the width of the engine's bucket
        assert abs(row["client_s"] - row["engine_s"]) <= row["bucket_high_s"] - row["bucket_low_s"], row
    db = open_database(f"sqlite:///{tmp_path / 'tuner.db'}")
    try:
        runs = list_bench_runs(db)
    finally:
        db.dispose()
    assert len(runs) == 1 and runs[0].status == "ok"
    assert runs[0].flags == {"tp-size": 8, "startup-seconds": 2, "cuda-graph-max-bs": 16}
    assert set(runs[0].stage_seconds) == {"validate", "launch", "ready", "warmup", "load", "scrape", "teardown"}


def test_an_oom_at_launch_is_reported_and_stored_not_a_traceback(tmp_path, capsys):
    args = _bench_args(tmp_path, "--num-prompts", "5")
    args[args.index("tp-size=8")] = "tp-size=1"  # 330 GiB of weights on one GPU
    rc = main(args)
    captured = capsys.readouterr()
    assert rc == 1
    assert "bench failed (oom)" in captured.out and "CUDA out of memory" in captured.out
    assert "Traceback" not in captured.out + captured.err
    db = open_database(f"sqlite:///{tmp_path / 'tuner.db'}")
    try:
        (run,) = list_bench_runs(db)
    finally:
        db.dispose()
    assert run.status == "failed" and run.failure_kind == "oom" and run.log_path


def test_a_flag_named_as_in_another_fork_is_refused_before_launch(tmp_path):
    spec = BenchSpec(engine="sim", model=MODEL, workload=RandomWorkload(2, 16, 4),
                     arrivals=PoissonArrivals(1.0), flags={**FAST, "speculative-suffix-max-tree-depth": 24},
                     log_dir=tmp_path, engine_options={"time_scale": 20})
    result = run_bench(spec)
    assert result.failure_kind == "invalid_argument" and "launch" not in result.stage_seconds
    assert "--speculative-suffix-max-tree-depth" in result.error
    assert "exist only in SGLang forks" in result.error  # 0.5.23 has no SUFFIX speculation


def test_an_engine_killed_mid_load_gives_a_clear_error_and_no_orphan(tmp_path):
    killed: dict[str, int] = {}

    def finished_requests(base_url: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = httpx.get(f"{base_url}/metrics", timeout=2).text
        except httpx.HTTPError:
            return 0.0
        return sum(s.value for f in text_string_to_metric_families(text)
                   for s in f.samples if s.name == "sglang:e2e_request_latency_seconds_count")

    def killer() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = [e for e in live_engines() if e.ready_s is not None]
            # into the load: the warm-up request and a few of the load's have finished (not a fixed sleep, which
            # a busy machine can spend before the load starts)
            if ready and finished_requests(ready[0].base_url) >= 4:
                killed["pgid"] = ready[0].pgid
                os.kill(ready[0].pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    spec = BenchSpec(engine="sim", model=MODEL, workload=RandomWorkload(400, 128, 32),
                     arrivals=PoissonArrivals(40.0), load=LoadOptions(num_warmup=1), flags=FAST,
                     log_dir=tmp_path, engine_options={"time_scale": 20}, ready_timeout_s=60)
    result = run_bench(spec)
    thread.join(timeout=5)
    assert result.status == "failed" and result.failure_kind == "crash"
    assert "exited with code -9 during the load" in result.error
    # stopped mid-load: the load did not complete (how many finished before the kill depends on the machine's load)
    assert result.client is not None and result.client.completed < 400
    assert group_members(killed["pgid"]) == []
