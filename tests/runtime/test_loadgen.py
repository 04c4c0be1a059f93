"""Load generator: workloads, arrivals, the streaming client against a fake server, and the summary."""

from __future__ import annotations

import itertools
import json
import math
import statistics

import pytest
from runtime_fakes import FakeEngine

from tuner.errors import TunerError
from tuner.runtime.launcher import launch
from tuner.runtime.loadgen.arrivals import ConcurrencyArrivals, PoissonArrivals, TraceArrivals
from tuner.runtime.loadgen.client import (
    LoadOptions,
    LoadResult,
    RequestRecord,
    run_load_sync,
    run_warmup_sync,
)
from tuner.runtime.loadgen.summary import parse_slos, summarize
from tuner.runtime.loadgen.workloads import (
    MultiTurnAgentWorkload,
    RandomWorkload,
    SharedPrefixWorkload,
    TraceWorkload,
    fallback_make_text,
    warmup_sessions,
)


def words(n_tokens: int, seed: int) -> str:
    return fallback_make_text(n_tokens, seed)


# ---------------------------------------------------------------------------------------------- workloads

def test_random_workload_is_seeded_and_respects_the_range_ratio():
    wl = RandomWorkload(200, input_len=100, output_len=40, range_ratio=0.5, text_source=words)
    a, b, c = wl.sessions(1), wl.sessions(1), wl.sessions(2)
    assert a == b and a != c
    ins = [s.turns[0].input_len for s in a]
    assert min(ins) >= 50 and max(ins) <= 100 and len(set(ins)) > 10
    assert all(len(s.turns[0].text.split()) == s.turns[0].input_len for s in a)
    fixed = RandomWorkload(5, input_len=64, output_len=8, text_source=words).sessions(0)
    assert {(s.turns[0].input_len, s.turns[0].output_len) for s in fixed} == {(64, 8)}


def test_shared_prefix_workload_reuses_a_few_prefixes():
    wl = SharedPrefixWorkload(50, input_len=200, output_len=10, prefix_fraction=0.75, num_groups=3,
                              text_source=words)
    sessions = wl.sessions(0)
    prefixes = {s.system for s in sessions}
    assert len(prefixes) == 3
    assert all(len(p.split()) == 150 for p in prefixes)
    assert all(s.turns[0].input_len == 50 for s in sessions)
    with pytest.raises(TunerError, match="prefix-fraction"):
        SharedPrefixWorkload(1, prefix_fraction=1.0)


def test_multi_turn_sessions_ask_for_tool_calls_and_grow():
    wl = MultiTurnAgentWorkload(3, turns=4, system_len=30, first_input_len=20, turn_input_len=10,
                                output_len=16, text_source=words)
    sessions = wl.sessions(0)
    assert len(sessions) == 3 and all(len(s.turns) == 4 for s in sessions)
    assert len({s.system for s in sessions}) == 1 and '<tool_call>{"name"' in sessions[0].system
    assert all(t.text.startswith("Tool result") for t in sessions[0].turns[1:])


def test_trace_replay_reads_jsonl_and_reports_bad_lines(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(json.dumps(r) for r in [
        {"timestamp": 10.5, "input_len": 30, "output_len": 5},
        {"timestamp": 10.0, "prompt": "hello there", "output_len": 7},
    ]) + "\n")
    sessions = TraceWorkload(str(trace), text_source=words).sessions(0)
    assert [s.arrival_s for s in sessions] == [0.0, 0.5]
    assert sessions[0].turns[0].text == "hello there" and sessions[1].turns[0].input_len == 30
    assert TraceArrivals(speedup=2).offsets_s(sessions, 0) == [0.0, 0.25]
    trace.write_text('{"timestamp": 1, "output_len": 5}\n')
    with pytest.raises(TunerError, match=r"t.jsonl:1: .*needs input_len or prompt"):
        TraceWorkload(str(trace)).sessions(0)


def test_warmup_sessions_are_not_the_measured_prompts():
    wl = RandomWorkload(10, input_len=20, output_len=4, text_source=words)
    warm = warmup_sessions(wl, 2, seed=0)
    measured = {s.turns[0].text for s in wl.sessions(0)}
    assert len(warm) == 2 and not measured & {s.turns[0].text for s in warm}


# ---------------------------------------------------------------------------------------------- arrivals

def test_poisson_arrivals_have_the_requested_rate():
    sessions = RandomWorkload(4000, input_len=1, output_len=1, text_source=words).sessions(0)
    offsets = PoissonArrivals(20.0).offsets_s(sessions, 0)
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert statistics.mean(gaps) == pytest.approx(1 / 20, rel=0.05)
    assert statistics.stdev(gaps) == pytest.approx(1 / 20, rel=0.1)  # exponential: sd == mean
    assert PoissonArrivals(math.inf).offsets_s(sessions[:3], 0) == [0.0, 0.0, 0.0]
    with pytest.raises(TunerError):
        PoissonArrivals(0)
    with pytest.raises(TunerError):
        ConcurrencyArrivals(0)


# ---------------------------------------------------------------------------------------------- summary

def _rec(i: int, ttft: float, e2e: float, out: int, error: str | None = None) -> RequestRecord:
    gap = (e2e - ttft) / (out - 1) if out > 1 else 0.0
    return RequestRecord(i, i, 0, None, float(i), float(i) + e2e, ttft if not error else None,
                         tuple([gap] * (out - 1)) if not error else (), e2e if not error else None,
                         100, out if not error else 0, True, error=error)


def test_summary_tpot_excludes_the_first_token_and_goodput_counts_requests_meeting_slos():
    records = (_rec(0, 0.5, 1.5, 11), _rec(1, 3.0, 4.0, 11), _rec(2, 0.2, 2.2, 11), _rec(3, 0, 0, 1, "boom"))
    result = LoadResult(records, planned_sessions=4, duration_s=10.0, send_lags_s=(0.0001,) * 10,
                        loop_lags_s=(0.0002,) * 10)
    s = summarize(result, parse_slos("ttft_p99<=2s,tpot_p99<=150ms"))
    assert s.completed == 3 and s.failed == 1
    assert s.tpot_median_s == pytest.approx(0.1)  # (1.5 - 0.5) / 10, not / 11
    assert s.tpot_p99_s == pytest.approx(0.2, rel=0.02)
    # request 0 meets both; request 1 misses TTFT; request 2 misses TPOT (0.2 s); request 3 failed
    assert s.slo_attainment == pytest.approx(0.25)
    assert s.goodput_req_s == pytest.approx(0.1) and s.goodput_output_tok_s == pytest.approx(1.1)
    assert [c.met for c in s.slo_checks] == [False, False]
    assert s.output_throughput_tok_s == pytest.approx(3.3)
    assert s.request_throughput_req_s == pytest.approx(0.3)
    assert s.errors == ("boom",) and any("1 of 4 requests failed" in w for w in s.warnings)
    assert s.itl_max_s == pytest.approx(0.2)


def test_summary_warns_when_the_client_lags():
    result = LoadResult((_rec(0, 0.1, 0.2, 2),), 1, 1.0, send_lags_s=(0.0001,) * 98 + (0.004, 0.005),
                        loop_lags_s=(0.0001,))
    s = summarize(result)
    assert s.send_lag_p99_ms > 1.0 and any("sent late" in w for w in s.warnings)


def test_slo_parsing():
    slos = parse_slos("ttft_p99<=2s, tpot<=50ms,e2e_mean<=1500ms")
    assert [(s.metric, s.stat, s.limit_s) for s in slos] == [
        ("ttft", "p99", 2.0), ("tpot", "p99", 0.05), ("e2e", "mean", 1.5)]
    for bad in ("ttft_p99<2s", "latency<=2s", "ttft<=2", "ttft<=0ms"):
        with pytest.raises(TunerError, match="SLO"):
            parse_slos(bad)


# ---------------------------------------------------------------------------------------------- client

@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    engine = FakeEngine(extra=("--ttft-s", "0.02", "--itl-s", "0.002", "--ready-after-s", "0"))
    with launch(engine, "fake-model", {}, log_dir=tmp_path_factory.mktemp("logs"), ready_timeout_s=20) as r:
        yield r


@pytest.mark.parametrize("endpoint", ["chat", "completions", "generate"])
def test_client_times_every_token_on_each_endpoint(fake_server, endpoint):
    wl = RandomWorkload(6, input_len=30, output_len=8, text_source=words)
    opts = LoadOptions(endpoint=endpoint, model="fake-model")
    assert run_warmup_sync(fake_server.base_url, wl, opts)
    result = run_load_sync(fake_server.base_url, wl, PoissonArrivals(100.0), opts)
    assert len(result.records) == 6 and all(r.ok for r in result.records), result.records[0].error
    for r in result.records:
        assert r.output_tokens == 8 and r.usage_from_server and r.input_tokens >= 30
        assert len(r.itl_s) == 7 and r.ttft_s is not None and r.ttft_s >= 0.02
        assert r.e2e_s is not None and r.e2e_s >= r.ttft_s + sum(r.itl_s) - 1e-6
    assert len(result.send_lags_s) == 6


def test_multi_turn_sends_the_next_turn_after_the_answer_with_the_history(fake_server):
    wl = MultiTurnAgentWorkload(2, turns=3, system_len=10, first_input_len=10, turn_input_len=5, output_len=6,
                                text_source=words)
    result = run_load_sync(fake_server.base_url, wl, ConcurrencyArrivals(2),
                           LoadOptions(endpoint="chat", model="fake-model"))
    assert len(result.records) == 6
    for sid in (0, 1):
        turns = sorted((r for r in result.records if r.session_id == sid), key=lambda r: r.turn)
        assert [t.turn for t in turns] == [0, 1, 2]
        for prev, nxt in itertools.pairwise(turns):
            assert nxt.start_s >= prev.end_s  # never before the previous answer completed
            assert nxt.input_tokens >= prev.input_tokens + prev.output_tokens  # context grows


def test_concurrency_cap_and_duration_bound(fake_server):
    wl = RandomWorkload(12, input_len=5, output_len=10, text_source=words)
    result = run_load_sync(fake_server.base_url, wl, ConcurrencyArrivals(3), LoadOptions(model="fake-model"))
    events = sorted([(r.start_s, 1) for r in result.records] + [(r.end_s, -1) for r in result.records])
    level, peak = 0, 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak <= 3 and len(result.records) == 12
    slow = RandomWorkload(50, input_len=5, output_len=400, text_source=words)
    bounded = run_load_sync(fake_server.base_url, slow, PoissonArrivals(20.0),
                            LoadOptions(model="fake-model", max_duration_s=0.6))
    assert bounded.aborted and "time limit" in bounded.aborted
    assert len(bounded.records) < 50
    assert any(r.error and r.error.startswith("cancelled") for r in bounded.records)


def test_summary_warns_when_prompts_do_not_come_out_at_the_intended_length():
    from dataclasses import replace

    records = tuple(replace(_rec(i, 0.1, 0.2, 2), intended_input_tokens=50) for i in range(3))  # server: 100
    s = summarize(LoadResult(records, 3, 1.0, (), ()))
    assert any("200% of the intended token count" in w for w in s.warnings)
    exact = tuple(replace(r, intended_input_tokens=100) for r in records)
    assert not any("intended" in w for w in summarize(LoadResult(exact, 3, 1.0, (), ())).warnings)


def test_a_request_slower_than_its_timeout_is_a_failed_record(tmp_path):
    engine = FakeEngine(extra=("--ttft-s", "2.0", "--ready-after-s", "0"))
    with launch(engine, "m", {}, log_dir=tmp_path, ready_timeout_s=20) as running:
        wl = RandomWorkload(2, input_len=5, output_len=2, text_source=words)
        result = run_load_sync(running.base_url, wl, PoissonArrivals(math.inf),
                               LoadOptions(model="m", request_timeout_s=0.3))
    assert [r.error for r in result.records] == ["timed out after 0.3 s"] * 2


def test_errors_are_recorded_not_raised(fake_server):
    wl = RandomWorkload(2, input_len=5, output_len=3, text_source=words)
    result = run_load_sync(fake_server.base_url + "/nope", wl, PoissonArrivals(math.inf), LoadOptions())
    assert all(r.error and "HTTP 404" in r.error for r in result.records)
    with pytest.raises(TunerError, match="every warm-up request"):
        run_warmup_sync(fake_server.base_url + "/nope", wl, LoadOptions(num_warmup=1))


def test_ctrl_c_during_a_load_step_that_swallows_its_cancellation_still_interrupts():
    """A load step cancels its requests and ends normally when stopped; Ctrl-C in the middle of one must still
    stop the command (a flag search once went on to its next trial after Ctrl-C)."""
    import asyncio
    import signal

    from tuner.runtime.loadgen.client import run_interruptibly

    finished_normally = []

    async def step() -> str:
        asyncio.get_running_loop().call_later(0.05, signal.raise_signal, signal.SIGINT)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            pass  # as the load generator does: a cancelled step returns what it has
        finished_normally.append(True)
        return "partial result"

    with pytest.raises(KeyboardInterrupt):
        run_interruptibly(step())
    assert finished_normally  # the step wound down first
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back

    async def quick() -> int:
        return 7

    assert run_interruptibly(quick()) == 7
