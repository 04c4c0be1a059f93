"""SLOs and objectives: parsing with units, engine time under the simulator's time scale, goodput values,
Optuna constraints, robust scores and crash learning."""

from __future__ import annotations

import pytest
from flag_fakes import step

from tuner.errors import TunerError
from tuner.runtime.loadgen.client import LoadResult, RequestRecord
from tuner.runtime.loadgen.summary import summarize
from tuner.search.flags.feasibility import MemoryFailure, memory_directions, needs_at_least, predicted_failure
from tuner.search.flags.load_search import LoadSearchResult
from tuner.search.flags.objective import Clock, Objective, parse_slo_text, step_figures
from tuner.search.flags.robust import gain, robust_score
from tuner.search.flags.space import Candidate


def test_slo_text_with_units():
    slos = parse_slo_text("ttft_p99<=2s, tpot_p99<=50ms,e2e_median<=900000us")
    assert [(s.metric, s.stat, pytest.approx(s.limit_s)) for s in slos] == [
        ("ttft", "p99", 2.0), ("tpot", "p99", 0.05), ("e2e", "median", 0.9)]
    with pytest.raises(TunerError, match="at least one SLO"):
        parse_slo_text("")
    with pytest.raises(TunerError, match="cannot read SLO"):
        parse_slo_text("ttft_p99<2")
    with pytest.raises(TunerError, match="given twice"):
        parse_slo_text("ttft_p99<=2s,ttft_p99<=1s")


def _load(ttfts_s, tpot_s=0.01, out=11, dur=2.0):
    recs = []
    for i, ttft in enumerate(ttfts_s):
        e2e = ttft + tpot_s * (out - 1)
        recs.append(RequestRecord(i, i, 0, None, 0.0, e2e, ttft, (), e2e, 10, out, True))
    return LoadResult(tuple(recs), len(recs), dur, (), ())


def test_step_figures_are_in_engine_time_under_a_time_scale():
    clock = Clock(10.0)  # the simulator runs 10x faster: the client sees 0.15 s for 1.5 s
    slos = parse_slo_text("ttft_p99<=2s,tpot_p99<=50ms")
    summary = summarize(_load([0.15] * 20, tpot_s=0.003), clock.wall_slos(slos))
    fig = step_figures(summary, slos, clock)
    assert fig.latency_s["ttft_p99"] == pytest.approx(1.5) and fig.latency_s["tpot_p99"] == pytest.approx(0.03)
    assert fig.meets_slo and fig.slo_ratios["ttft_p99"] == pytest.approx(0.75)
    assert fig.goodput_tok_s == pytest.approx(20 * 11 / 2.0 / 10)  # per engine second
    late = step_figures(summarize(_load([0.15] * 19 + [0.25]), clock.wall_slos(slos)), slos, clock)
    assert not late.meets_slo and late.slo_ratios["ttft_p99"] > 1


def test_values_and_constraints():
    obj = Objective("goodput", parse_slo_text("ttft_p99<=2s,tpot_p99<=50ms"))
    ok = LoadSearchResult((step(1, goodput=50), step(2, goodput=90, ttft=1.0), step(4, ok=False, ttft=3.0)))
    assert obj.values(ok) == [90] and obj.constraints(ok) == [pytest.approx(-0.5), pytest.approx(-0.6), 0.0]
    bad = LoadSearchResult((step(1, ok=False, ttft=2.5, tpot=0.04),))
    assert obj.values(bad) == [0.0] and obj.constraints(bad)[0] == pytest.approx(0.25)
    assert obj.constraints(None) == [1.0, 1.0, 1.0]  # a launch failure violates everything
    req = Objective("goodput-req", obj.slos)
    assert req.values(ok) == [pytest.approx(0.9)]
    pareto = Objective("pareto", obj.slos, "tpot_p99")
    assert pareto.directions == ["maximize", "minimize"] and pareto.values(ok) == [90, 0.02]
    with pytest.raises(TunerError, match="unknown latency"):
        Objective("pareto", obj.slos, "speed_p99")


def test_robust_score_is_median_minus_scaled_mad_and_gain_has_a_spread():
    s = robust_score([100, 110, 90, 300])
    assert s.median == 105 and s.mad == 10 and s.sigma == pytest.approx(14.826)
    assert s.score == pytest.approx(105 - 14.826)  # the outlier 300 barely moves it
    base = robust_score([50, 52, 48])
    g = gain(s, base)
    assert g.ratio == pytest.approx(105 / 50 - 1) and g.low < g.ratio < g.high
    assert gain(s, robust_score([0.0])) is None


def test_a_config_needing_more_memory_than_one_that_failed_is_predicted_to_fail():
    d = memory_directions()
    failed = {"tp-size": 8, "mem-fraction-static": 0.93, "cuda-graph-max-bs": 256, "chunked-prefill-size": 8192,
              "schedule-policy": "fcfs"}
    bigger = {**failed, "mem-fraction-static": 0.95, "chunked-prefill-size": -1, "schedule-policy": "lpm"}
    assert needs_at_least(bigger, failed, d)
    assert not needs_at_least({**failed, "cuda-graph-max-bs": 128}, failed, d)  # smaller graphs may fit
    assert not needs_at_least({**failed, "tp-size": 4}, failed, d)  # other parallelism: unknown
    assert not needs_at_least({k: v for k, v in bigger.items() if k != "cuda-graph-max-bs"}, failed, d)
    failures = [MemoryFailure(3, "oom", failed, {})]
    assert predicted_failure(Candidate({}, bigger, {}), failures, d).trial_number == 3
    assert predicted_failure(Candidate({}, bigger, {"SGLANG_X": "1"}), failures, d) is None
