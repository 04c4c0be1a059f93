"""The maximum sustainable load within one launch: bisect and step strategies, infeasible configs found in
few steps, and the early stop of a step that can no longer meet its SLO."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flag_fakes import step

from tuner.errors import TunerError
from tuner.runtime.scraper import HistogramCounts, parse_metrics
from tuner.search.flags.early_stop import EarlyStop, count_above, violations_allowed
from tuner.search.flags.load_search import LoadSearchConfig, search_max_load


class Runner:
    """Meets the SLOs up to `max_rate`; goodput grows with the load it meets."""

    def __init__(self, max_rate: float, capacity: float | None = None):
        self.max_rate = max_rate
        self.capacity = capacity
        self.loads: list[float] = []

    def run_step(self, load: float, index: int):
        self.loads.append(load)
        ok = load <= self.max_rate
        s = step(load, ok=ok, goodput=min(load, 1e3) * 100, index=index)
        if math.isinf(load) and self.capacity:
            from dataclasses import replace

            s = replace(s, figures=replace(s.figures, request_throughput_req_s=self.capacity))
        return s


@pytest.mark.parametrize("max_rate", [0.7, 1.5, 3.0, 5.0, 11.0, 20.0])
def test_bisect_brackets_the_highest_load_meeting_the_slo(max_rate):
    cfg = LoadSearchConfig(low=0.5, high=32, tolerance=0.2, max_steps=10)
    runner = Runner(max_rate)
    result = search_max_load(runner, cfg)
    assert result.max_load is not None and result.max_load <= max_rate
    failing_above = min(s.load for s in result.steps if not s.meets_slo)
    assert failing_above <= result.max_load * 1.2 + 1e-9  # bracketed within the tolerance
    assert result.best.load == result.max_load and result.best.figures.goodput_tok_s == pytest.approx(
        result.max_load * 100)
    assert len(runner.loads) == len(set(runner.loads)) <= 10  # no load is measured twice


def test_a_config_meeting_the_slo_at_the_top_load_takes_one_step():
    runner = Runner(100.0)
    result = search_max_load(runner, LoadSearchConfig(low=0.5, high=32))
    assert runner.loads == [32] and result.max_load == 32 and result.stopped == "the highest load met the SLOs"


def test_an_infeasible_config_is_known_after_a_few_steps():
    runner = Runner(0.1)
    result = search_max_load(runner, LoadSearchConfig(low=0.5, high=32, max_steps=10))
    assert result.best is None and result.max_load is None and result.stopped == "no load met the SLOs"
    assert runner.loads[-1] == 0.5 and len(runner.loads) <= 4


def test_everything_at_once_bounds_the_rate_by_what_it_completed():
    runner = Runner(6.0, capacity=8.0)
    result = search_max_load(runner, LoadSearchConfig(low=0.5, high=math.inf, tolerance=0.15, max_steps=10))
    assert runner.loads[0] == math.inf and all(x <= 8.0 for x in runner.loads[1:])
    assert 6.0 / 1.15 <= result.max_load <= 6.0


def test_step_strategy_climbs_from_the_bottom_and_stops_at_the_first_failure():
    runner = Runner(5.0)
    result = search_max_load(runner, LoadSearchConfig(strategy="step", low=1, high=64, step_factor=2))
    assert runner.loads == [1, 2, 4, 8] and result.max_load == 4


def test_reference_step_measures_the_lightest_load_first():
    runner = Runner(5.0)
    result = search_max_load(runner, LoadSearchConfig(low=1, high=16, reference_step=True))
    assert runner.loads[:2] == [1, 16] and result.reference.load == 1


def test_concurrency_loads_are_whole_numbers():
    runner = Runner(13.0)
    result = search_max_load(runner, LoadSearchConfig(mode="concurrency", low=1, high=64, tolerance=0.05,
                                                      max_steps=12))
    assert all(x == int(x) for x in runner.loads) and result.max_load == 13


def test_bad_load_ranges_are_refused():
    with pytest.raises(TunerError, match="0 < low <= high"):
        LoadSearchConfig(low=4, high=2)
    with pytest.raises(TunerError, match="finite --rate-max"):
        LoadSearchConfig(mode="concurrency", high=math.inf)


def test_results_survive_a_json_round_trip():
    from tuner.search.flags.load_search import LoadSearchResult

    result = search_max_load(Runner(3.0), LoadSearchConfig(low=0.5, high=math.inf, max_steps=5))
    again = LoadSearchResult.from_dict(result.to_dict())
    assert again.max_load == result.max_load and [s.load for s in again.steps] == [s.load for s in result.steps]


@pytest.mark.parametrize("n", [1, 5, 24, 32, 100, 250])
@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_violations_allowed_matches_numpy_percentiles(n, q):
    # `allowed` late requests can still leave the percentile under the limit; one more never can.
    allowed = violations_allowed(q, n)
    limit = 1.0
    could_pass = np.array([0.0] * (n - allowed) + [limit * 1.0001] * allowed)
    assert np.percentile(could_pass, q * 100) <= limit
    if allowed + 1 <= n:
        fails = np.array([limit] * (n - allowed - 1) + [limit * 1.0001] * (allowed + 1))
        assert np.percentile(fails, q * 100) > limit


def test_counts_above_a_limit_use_the_next_bucket_edge():
    h = HistogramCounts((0.1, 0.2, 0.4, math.inf), (5, 8, 9, 12), 0.0, 12)
    assert count_above(h, 0.2) == 4 and count_above(h, 0.15) == 4  # (0.15 lies inside the 0.1-0.2 bucket)
    assert count_above(h, 0.5) == 0  # beyond the last finite edge nothing is known


def _ttft_metrics(counts: list[int]) -> str:
    edges = ["0.1", "0.2", "0.4", "+Inf"]
    lines = ["# TYPE sglang:time_to_first_token_seconds histogram"]
    for e, c in zip(edges, counts, strict=True):
        lines.append(f'sglang:time_to_first_token_seconds_bucket{{le="{e}"}} {c}')
    lines += [f"sglang:time_to_first_token_seconds_count {counts[-1]}",
              "sglang:time_to_first_token_seconds_sum 1.0"]
    return "\n".join(lines) + "\n"


def test_early_stop_fires_once_more_requests_are_late_than_p99_allows():
    from tuner.runtime.engines.sglang import SGLANG_METRICS
    from tuner.runtime.loadgen.summary import parse_slos

    before = parse_metrics(_ttft_metrics([3, 3, 3, 3]))
    slos = parse_slos("ttft_p99<=200ms")
    watch = EarlyStop("http://x/metrics", SGLANG_METRICS, slos, 32, before)
    assert watch.check(parse_metrics(_ttft_metrics([3, 13, 14, 14]))) is None  # one late: p99 can still hold
    reason = watch.check(parse_metrics(_ttft_metrics([3, 13, 14, 15])))
    assert reason is not None and "2 of 32" in reason
    # requests queued past the limit count too, on a timed schedule
    queued = EarlyStop("http://x/metrics", SGLANG_METRICS, slos, 32, before, send_offsets_s=[0.0] * 32)
    assert queued.check(parse_metrics(_ttft_metrics([3, 3, 3, 3])), now=queued.started + 0.1) is None
    assert queued.check(parse_metrics(_ttft_metrics([3, 13, 13, 13])),
                        now=queued.started + 5.0) is not None  # 22 sent 5 s ago, still without a token
