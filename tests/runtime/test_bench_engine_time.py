"""`tuner bench --time-scale` reports engine time, and a simulator that cannot keep up with its time scale is
caught: the run says so instead of reporting inflated latencies as the engine's."""

from __future__ import annotations

from tuner.runtime.bench import BenchSpec, run_bench
from tuner.runtime.loadgen.arrivals import PoissonArrivals
from tuner.runtime.loadgen.client import LoadOptions
from tuner.runtime.loadgen.summary import parse_slos
from tuner.runtime.loadgen.workloads import RandomWorkload

MODEL = "zai-org/GLM-4.7-FP8"
FLAGS = {"tp-size": 8, "startup-seconds": 1, "cuda-graph-max-bs": 16}


def _bench(tmp_path, scale: float, prompts: int, rate: float, output_len: int = 32):
    return run_bench(BenchSpec(
        engine="sim", model=MODEL, workload=RandomWorkload(prompts, 256, output_len),
        arrivals=PoissonArrivals(rate), load=LoadOptions(num_warmup=1, seed=3), flags=FLAGS,
        slos=parse_slos("tpot_p99<=100ms"), engine_options={"time_scale": scale, "seed": 3},
        log_dir=tmp_path / f"logs-{scale:g}"))


def test_figures_and_slos_are_in_engine_time_whatever_the_time_scale(tmp_path):
    slow, fast = _bench(tmp_path, 2, 12, 2.0), _bench(tmp_path, 4, 12, 2.0)
    assert slow.ok and fast.ok, (slow.error, fast.error)
    # the wall clock differs 2x; engine-time figures do not (a light load: no queueing, no lag)
    for a, b in ((slow.client.tpot_median_s, fast.client.tpot_median_s),
                 (slow.engine_figures.itl_mean_s, fast.engine_figures.itl_mean_s)):
        assert 0.7 < a / b < 1.4, (a, b)
    assert 0.01 < fast.client.tpot_median_s < 0.05  # a GLM-4.7 TP8 decode step, not a quarter of one
    assert fast.client.slos == ("tpot_p99<=100ms",) and fast.client.slo_checks[0].limit_s == 0.1
    assert fast.client.slo_checks[0].slo == "tpot_p99<=100ms"  # the row a user reads, not the wall-clock 25ms
    assert fast.workload["arrivals"]["request_rate"] == 2.0  # what was asked, in engine time


def test_a_deliberately_overloaded_simulator_is_flagged(tmp_path):
    result = _bench(tmp_path, 400, 48, float("inf"), output_len=64)
    assert result.ok, result.error
    assert any("behind its model" in w and "--time-scale 400" in w for w in result.warnings), result.warnings
