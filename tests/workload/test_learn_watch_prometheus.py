"""End to end with a real Prometheus scraping the simulated engine (a subprocess at --time-scale 20) while
workload A, then a different workload B, then A again run: `learn` over A's window recovers its request
count, rate and length distributions; `watch` flags the switch to B and queues a re-tune, and does not flag
the repeat of A. Bad input (unreachable Prometheus, a selector matching nothing, a window without traffic)
is one clear message and stores nothing."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from prometheus_server import free_port, require_prometheus, running_prometheus

from tuner.cli import main
from tuner.errors import WorkloadSourceError
from tuner.jobs.units import list_jobs
from tuner.runtime.engines import get_engine
from tuner.runtime.launcher import launch
from tuner.runtime.loadgen.arrivals import PoissonArrivals
from tuner.runtime.loadgen.client import LoadOptions, run_load_sync
from tuner.runtime.loadgen.resolve import resolve_workload
from tuner.runtime.loadgen.workloads import RandomWorkload
from tuner.store.db import open_database
from tuner.store.workloads import drift_checks, list_workloads, load_workload
from tuner.workload.drift import DriftThresholds
from tuner.workload.prometheus import learn_from_prometheus
from tuner.workload.watch import WatchConfig, WatchMetrics, check_once

MODEL = "zai-org/GLM-4.7-FP8"
SELECTOR = '{job="sglang"}'
STEP_S = 0.25
A = RandomWorkload(120, input_len=300, output_len=64, range_ratio=0.34)  # prompts 102..300, outputs 21..64
A_RATE_RPS = 20.0
B = RandomWorkload(50, input_len=2000, output_len=256, range_ratio=0.5)  # prompts 1000..2000
B_RATE_RPS = 8.0


@dataclass(frozen=True)
class Phase:
    start_s: float  # just before the first request
    end_s: float  # after the last answer, plus two scrapes
    first_send_s: float
    last_send_s: float
    prompt_mean: float
    output_mean: float


@dataclass(frozen=True)
class Scenario:
    url: str
    idle: tuple[float, float]
    a: Phase
    b: Phase
    a_again: Phase


def _run(base_url: str, workload: RandomWorkload, rate: float, seed: int) -> Phase:
    sessions = workload.sessions(seed)
    start = time.time()
    result = run_load_sync(base_url, workload, PoissonArrivals(rate), LoadOptions(num_warmup=0, seed=seed))
    assert all(r.ok for r in result.records), "the simulator failed requests"
    time.sleep(2 * STEP_S + 0.3)  # let Prometheus scrape the final counts
    sends = sorted(start + r.start_s for r in result.records)
    return Phase(start - 0.1, time.time(), sends[0], sends[-1],
                 sum(s.turns[0].input_len for s in sessions) / len(sessions),
                 sum(s.turns[0].output_len for s in sessions) / len(sessions))


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Scenario:  # type: ignore[no-untyped-def]
    require_prometheus()
    folder = tmp_path_factory.mktemp("prom")
    sim = get_engine("sim", time_scale=20)
    with launch(sim, MODEL, {"tp-size": 8, "startup-seconds": 2}, log_dir=folder, ready_timeout_s=60) as engine:
        target = engine.base_url.split("//", 1)[1]
        with running_prometheus(folder, [target]) as url:
            idle_start = time.time()
            time.sleep(1.5)
            idle = (idle_start + 0.3, time.time())
            a = _run(engine.base_url, A, A_RATE_RPS, seed=1)
            b = _run(engine.base_url, B, B_RATE_RPS, seed=2)
            a_again = _run(engine.base_url, A, A_RATE_RPS, seed=3)
            # Prometheus goes on serving what it scraped after the engine stops; keep it up for the tests
            yield Scenario(url, idle, a, b, a_again)


def _db(tmp_path):  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'tuner.db'}"


def _learn_cli(tmp_path, url: str, phase: Phase, name: str, *extra: str) -> int:  # type: ignore[no-untyped-def]
    return main(["--database-url", _db(tmp_path), "--data-dir", str(tmp_path), "workload", "learn",
                 "--prometheus", url, "--selector", SELECTOR, "--window", f"{phase.end_s - phase.start_s:.3f}s",
                 "--end", f"{phase.end_s:.3f}", "--step", f"{STEP_S}", "--name", name, *extra])


def test_learn_recovers_rate_and_length_distributions(scenario: Scenario, tmp_path, capsys) -> None:
    a = scenario.a
    assert _learn_cli(tmp_path, scenario.url, a, "prod-a") == 0
    assert "replay it with --workload learned:prod-a" in capsys.readouterr().out
    with open_database(_db(tmp_path)) as db:
        record = load_workload(db, "prod-a")
    m = record.model
    assert record.engine == "sglang" and record.source == "prometheus"
    assert m.num_requests == A.num_prompts  # every finished request counted once, none from B
    # SGLang's default prompt buckets: every A prompt (102..300 tokens) lies in (100, 300]
    assert [(b.low_tokens, b.high_tokens, b.weight) for b in m.prompt_tokens.bins] == [(100, 300, 120)]
    assert m.prompt_tokens.mean_tokens == pytest.approx(a.prompt_mean, rel=0.01)
    assert m.output_tokens.mean_tokens == pytest.approx(a.output_mean, rel=0.01)
    # rate while sending: the profile over the sending span, within 25% of the Poisson rate (120 requests)
    i0 = int((a.first_send_s - m.window_start_s) / m.step_s)
    i1 = int((a.last_send_s - m.window_start_s) / m.step_s) + 1
    busy = m.rate_profile_rps[i0:i1]
    assert sum(busy) / len(busy) == pytest.approx(A_RATE_RPS, rel=0.25)
    assert m.rate_rps == pytest.approx(A.num_prompts / m.window_s, rel=0.01)
    # replayable: the learned workload resolves by name and draws lengths from A's range
    replay = resolve_workload("learned:prod-a", 200, database_url=_db(tmp_path))
    sessions = replay.sessions(seed=5)
    lengths = [s.turns[0].input_len + s.system_len for s in sessions]
    assert min(lengths) > 100 and max(lengths) <= 300
    assert all(s.arrival_s is not None for s in sessions)
    assert capsys.readouterr().out == ""
    assert main(["--database-url", _db(tmp_path), "--data-dir", str(tmp_path), "workload", "show", "prod-a",
                 "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "lengths.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "rate.png").stat().st_size > 1000


def test_watch_flags_the_switch_and_not_a_repeat(scenario: Scenario, tmp_path) -> None:
    assert _learn_cli(tmp_path, scenario.url, scenario.a, "prod-a") == 0
    cfg = WatchConfig("prod", "prod-a", DriftThresholds(), cooldown_s=3600,
                      retune_spec={"engine": "sim", "model": MODEL})
    metrics = WatchMetrics()

    def live(p: Phase):  # type: ignore[no-untyped-def]
        return learn_from_prometheus(scenario.url, SELECTOR, p.start_s, p.end_s, step_s=STEP_S)

    with open_database(_db(tmp_path)) as db:
        switched = check_once(db, cfg, live(scenario.b), source_ref="test", metrics=metrics)
        assert switched.drifted and switched.job_id is not None
        assert any("prompt lengths changed" in r for r in switched.reasons)
        jobs = list_jobs(db)
        assert [(j.kind, j.spec["workload"]) for j in jobs] == [("flag_search", f"learned:{switched.live_workload}")]
        assert jobs[0].spec["engine"] == "sim"
        retuned = load_workload(db, switched.live_workload or "")
        assert retuned.model.prompt_tokens.mean_tokens == pytest.approx(scenario.b.prompt_mean, rel=0.01)
        # the same drift again within the cool-down: recorded, but no second job
        again = check_once(db, cfg, live(scenario.b), source_ref="test", metrics=metrics)
        assert again.drifted and again.held_by_cooldown and again.job_id is None
        assert len(list_jobs(db)) == 1
        repeat = check_once(db, cfg, live(scenario.a_again), source_ref="test", metrics=metrics)
        assert not repeat.drifted, repeat.reasons
        assert repeat.job_id is None and repeat.drift_score < 1
        assert [c.drifted for c in drift_checks(db, "prod")] == [True, True, False]
    registry = metrics.registry
    assert registry.get_sample_value("tuner_workload_retunes_total", {"deployment": "prod"}) == 1
    assert registry.get_sample_value("tuner_workload_retunes_held_total", {"deployment": "prod"}) == 1
    assert registry.get_sample_value("tuner_workload_drift_score", {"deployment": "prod"}) == repeat.drift_score


def test_watch_once_cli_reports_no_drift_on_the_repeat(scenario: Scenario, tmp_path, capsys) -> None:
    assert _learn_cli(tmp_path, scenario.url, scenario.a, "prod-a") == 0
    # the repeat of A was the last traffic: a window reaching back over it only (as --once does at "now")
    rc = main(["--database-url", _db(tmp_path), "watch", "--prometheus", scenario.url, "--selector", SELECTOR,
               "--baseline", "prod-a", "--once", "--step", f"{STEP_S}",
               "--window", f"{time.time() - scenario.a_again.start_s:.3f}s"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "prod-a: ok" in out


@pytest.mark.parametrize("case", ["unreachable", "no-match", "no-traffic"])
def test_bad_input_is_one_line_and_stores_nothing(scenario: Scenario, tmp_path, capsys, case: str) -> None:
    a = scenario.a
    args = {"unreachable": ["--prometheus", f"http://127.0.0.1:{free_port()}", "--selector", SELECTOR,
                            "--window", "10s", "--end", f"{a.end_s}"],
            "no-match": ["--prometheus", scenario.url, "--selector", '{job="nope"}', "--window", "10s",
                         "--end", f"{a.end_s}"],
            "no-traffic": ["--prometheus", scenario.url, "--selector", SELECTOR, "--step", f"{STEP_S}",
                           "--window", f"{scenario.idle[1] - scenario.idle[0]:.3f}s",
                           "--end", f"{scenario.idle[1]:.3f}"]}[case]
    rc = main(["--database-url", _db(tmp_path), "workload", "learn", *args, "--name", "x"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    expected = {"unreachable": "cannot reach Prometheus at http://127.0.0.1:",
                "no-match": 'no series match {job="nope"}',
                "no-traffic": "no requests finished between"}[case]
    assert expected in err
    with open_database(_db(tmp_path)) as db:
        assert list_workloads(db) == []


def test_bad_selector_is_refused_before_querying(scenario: Scenario) -> None:
    with pytest.raises(WorkloadSourceError, match="not a label selector"):
        learn_from_prometheus(scenario.url, 'job="sglang"', scenario.a.start_s, scenario.a.end_s)
    with pytest.raises(WorkloadSourceError, match="refused the query"):
        learn_from_prometheus(scenario.url, '{job=~"("}', scenario.a.start_s, scenario.a.end_s)
