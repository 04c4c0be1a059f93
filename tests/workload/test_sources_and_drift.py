"""Workload sources from files and the drift arithmetic, without Prometheus: `/metrics` snapshots written by
the simulator's own metrics (an engine restart between two of them is refused), request logs, JS distances,
the replay's rate profile, and the store's name rules."""

from __future__ import annotations

import json
import random

import pytest

from tuner.cli import main
from tuner.errors import WorkloadError, WorkloadSourceError
from tuner.runtime.loadgen.learned import profile_offsets_s
from tuner.runtime.sim.metrics import SimMetrics
from tuner.store.db import open_database
from tuner.store.workloads import list_workloads, save_workload
from tuner.workload.drift import DriftThresholds, compare
from tuner.workload.files import fit_request_log, read_snapshots
from tuner.workload.fit import fit_workload
from tuner.workload_model import LengthBin, LengthDistribution, histogram_from_values, js_divergence


def _serve(metrics: SimMetrics, n: int, prompt: int, output: int, cached: int = 0) -> None:
    for _ in range(n):
        metrics.observe_finished(prompt, output, cached, 0.5)


def _snapshot(folder, t: float, metrics: SimMetrics) -> None:  # type: ignore[no-untyped-def]
    (folder / f"{t:.1f}.prom").write_bytes(metrics.exposition())


def test_snapshots_give_lengths_rate_and_prefix_hits(tmp_path) -> None:
    m = SimMetrics("glm")
    _snapshot(tmp_path, 1000.0, m)
    _serve(m, 30, prompt=250, output=40, cached=100)
    _snapshot(tmp_path, 1010.0, m)
    _serve(m, 10, prompt=250, output=40, cached=100)
    _snapshot(tmp_path, 1020.0, m)
    model = fit_workload(read_snapshots(tmp_path, '{model_name="glm"}'))
    assert model.engine == "sglang" and model.num_requests == 40
    assert model.rate_profile_rps == (3.0, 1.0) and model.rate_rps == 2.0
    assert model.prompt_tokens.mean_tokens == 250 and model.output_tokens.mean_tokens == 40
    assert model.prefix_cache_hit_ratio == pytest.approx(0.4)
    assert model.burstiness == pytest.approx(5.0)  # counts 30 and 10 per step: variance 100 / mean 20


def test_a_restart_inside_the_window_is_refused_and_nothing_is_stored(tmp_path, capsys) -> None:
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    before = SimMetrics("glm")
    _serve(before, 50, 250, 40)
    _snapshot(snaps, 1000.0, before)
    _serve(before, 20, 250, 40)
    _snapshot(snaps, 1010.0, before)
    restarted = SimMetrics("glm")  # a new process: counters from zero
    _serve(restarted, 5, 250, 40)
    _snapshot(snaps, 1020.0, restarted)
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    assert main(["--database-url", url, "workload", "learn", "--snapshots", str(snaps), "--name", "x"]) == 2
    err = capsys.readouterr().err
    assert "engine restarted inside the window" in err and len(err.strip().splitlines()) == 1
    with open_database(url) as db:
        assert list_workloads(db) == []


def test_request_log_gives_exact_lengths(tmp_path) -> None:
    rng = random.Random(0)
    rows = [{"timestamp": 100 + i * 0.5, "prompt_tokens": rng.randint(500, 700), "completion_tokens": 64,
             "cached_tokens": 250} for i in range(200)]
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    model = fit_request_log(path)
    assert model.num_requests == 200
    assert model.rate_rps == pytest.approx(2.0, rel=0.02)
    assert model.prompt_tokens.mean_tokens == pytest.approx(sum(r["prompt_tokens"] for r in rows) / 200)
    assert model.output_tokens.bins == (LengthBin(64, 64, 200),)
    assert model.prefix_cache_hit_ratio == pytest.approx(250 / model.prompt_tokens.mean_tokens)
    path.write_text('{"timestamp": 1, "prompt_tokens": 3}\n')
    with pytest.raises(WorkloadSourceError, match=r"requests.jsonl:1: bad request line"):
        fit_request_log(path)


def test_js_divergence_separates_different_lengths_and_not_resamples() -> None:
    rng = random.Random(1)
    a1 = histogram_from_values([rng.randint(100, 300) for _ in range(300)], "request-log")
    a2 = histogram_from_values([rng.randint(100, 300) for _ in range(300)], "request-log")
    b = histogram_from_values([rng.randint(1000, 2000) for _ in range(300)], "request-log")
    assert js_divergence(a1, b) > 0.95
    assert js_divergence(a1, a2) < 0.1
    # a histogram with other edges is compared on the union of edges
    coarse = LengthDistribution((LengthBin(100, 300, 1.0),), 200, "histogram")
    assert js_divergence(coarse, a1) < 0.1


def test_drift_rules_name_what_moved() -> None:
    rng = random.Random(2)

    def model(rate: float, lo: int, hi: int, accept: float | None):  # type: ignore[no-untyped-def]
        lengths = [rng.randint(lo, hi) for _ in range(200)]
        return fit_request_log_like(rate, lengths, accept)

    base = model(10, 100, 300, 3.0)
    assert not compare(base, model(11, 100, 300, 2.9), DriftThresholds()).drifted
    report = compare(base, model(30, 100, 300, 2.0), DriftThresholds())
    assert report.drifted and report.drift_score >= 1
    assert any("arrival rate changed" in r for r in report.reasons)
    assert any("accept length dropped" in r for r in report.reasons)
    assert not any("prompt lengths" in r for r in report.reasons)


def fit_request_log_like(rate: float, lengths: list[int], accept: float | None):  # type: ignore[no-untyped-def]
    from tuner.workload_model import WorkloadModel

    dist = histogram_from_values(lengths, "request-log")
    return WorkloadModel("sglang", 0.0, 100.0, 1.0, int(rate * 100), rate, (rate,) * 100, 1.0, dist, dist,
                         None, accept)


def test_replay_arrivals_follow_the_rate_profile() -> None:
    offsets = profile_offsets_s((10.0, 0.0, 30.0), 10.0, 4000, random.Random(3))
    first_cycle = [t for t in offsets if t < 30]
    in_step = [sum(1 for t in first_cycle if 10 * i <= t < 10 * (i + 1)) for i in range(3)]
    assert in_step[1] == 0
    assert in_step[0] == pytest.approx(100, rel=0.3) and in_step[2] == pytest.approx(300, rel=0.2)
    with pytest.raises(WorkloadError, match="no traffic"):
        profile_offsets_s((0.0,), 1.0, 5, random.Random(0))


def test_a_taken_name_is_refused_unless_replaced(db) -> None:  # type: ignore[no-untyped-def]
    one = fit_request_log_like(1.0, [100, 200], None)
    two = fit_request_log_like(2.0, [100, 200], None)
    save_workload(db, "prod", one, "request-log", "a.jsonl")
    assert save_workload(db, "prod", one, "request-log", "a.jsonl").fingerprint == one.fingerprint()
    with pytest.raises(WorkloadError, match="exists"):
        save_workload(db, "prod", two, "request-log", "b.jsonl")
    assert save_workload(db, "prod", two, "request-log", "b.jsonl", replace=True).model.rate_rps == 2.0
    with pytest.raises(WorkloadError, match="must not contain"):
        save_workload(db, "learned:x", one, "request-log", "a.jsonl")
