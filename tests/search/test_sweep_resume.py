"""The sweep loop over one batch size, with a fake timed problem and a real SQLite database:
every measurement is written as it arrives, an interrupted sweep resumes without re-measuring,
wrong configs are recorded and never chosen."""

import pytest

from tuner.kernels.base import KernelConfig, MoeConfigs, MoeShape, Quant
from tuner.kernels.fused_moe.backends import EngineChoice
from tuner.kernels.fused_moe.space import candidate_space, default_config
from tuner.kernels.timing import TimingResult
from tuner.search.moe_batch import FINAL_REPLAYS, BatchPlan, BatchSweeper, sweep_batch_size
from tuner.store.db import open_database
from tuner.store.kernels import MeasurementContext, load_measurements

SHAPE = MoeShape(161, 192, 5120, 8, Quant.FP8_PER_CHANNEL, fused_shared_experts=1)
CTX = MeasurementContext("fused_moe", "tuner", "Fake GPU", "3.6.0", "test-method")
M = 64


def latency(c: KernelConfig) -> float:
    """A smooth synthetic landscape with its optimum at (M32, N128, K128, w4, s4)."""
    return (100 + 10 * abs(c.block_size_m - 32) / 16 + 8 * abs(c.block_size_n - 128) / 32
            + 6 * abs(c.block_size_k - 128) / 64 + 3 * (c.num_warps != 4) + 2 * abs(c.num_stages - 4)
            + 0.5 * (c.group_size_m != 1))


class FakeProblem:
    """Times a pair as the up config's latency (down configs are studied in test_moe_batch.py)."""

    def __init__(self, wrong=frozenset(), interrupt_after=None):
        self.wrong = wrong
        self.timed: list[KernelConfig] = []
        self.interrupt_after = interrupt_after

    def check(self, configs):
        return 0.5 if configs.up in self.wrong else 1e-3

    def is_correct(self, err):
        return err < 0.03

    def time(self, configs, replays):
        if self.interrupt_after is not None and len(self.timed) >= self.interrupt_after:
            raise KeyboardInterrupt
        self.timed.append(configs.up)
        return TimingResult(latency(configs.up), 0.1, replays)


def _plan(seeds=(), strategy="adaptive"):
    engine = EngineChoice(MoeConfigs(default_config(SHAPE, M)), "default")
    return BatchPlan(SHAPE, M, engine, down_configs=False, tma=False, up_seeds=tuple(seeds), strategy=strategy,
                     up_budget=24)


def _run(db, problem, seeds=(), pool=None, strategy="adaptive"):
    sweeper = BatchSweeper(db, CTX, SHAPE, problem, pool, M)
    return sweep_batch_size(sweeper, _plan(seeds, strategy))


def test_every_measurement_is_stored_and_a_rerun_measures_nothing(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 't.db'}")
    first = FakeProblem()
    result = _run(db, first)
    stored = load_measurements(db, CTX, SHAPE.key, M)
    assert {m.config_key for m in stored} == {c.key for c in first.timed}  # every timed config, nothing else
    assert all(m.status == "ok" and m.latency_us == latency(KernelConfig.from_key(m.config_key)) for m in stored)
    again = FakeProblem()
    result2 = _run(db, again)
    assert again.timed == []  # nothing re-measured
    assert result2.best == result.best
    assert result2.reused == len(stored)


def test_interrupted_sweep_resumes_where_it_stopped(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 't.db'}")
    with pytest.raises(KeyboardInterrupt):
        _run(db, FakeProblem(interrupt_after=10))
    kept = {m.config_key for m in load_measurements(db, CTX, SHAPE.key, M)}
    assert len(kept) == 10  # nothing measured was lost, nothing half-written
    resumed = FakeProblem()
    result = _run(db, resumed)
    retimed = {c.key for c in resumed.timed if c.key in kept}
    # configs measured before the interruption are only re-timed as finalists (in interleaved rounds)
    assert len(retimed) <= 6
    assert result.best is not None


def test_search_finds_a_config_close_to_the_best_of_the_space(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 't.db'}")
    result = _run(db, FakeProblem())
    true_best = min(latency(c) for c in candidate_space(SHAPE, M))
    assert result.best_latency_us <= true_best * 1.03
    assert result.measured <= 24 + 6  # budget + finalists and default, far below the ~1100 candidates


def test_fast_but_wrong_configs_are_recorded_and_never_chosen(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 't.db'}")
    fastest = min(candidate_space(SHAPE, M), key=latency)
    # seeded, so it is certainly measured: it must be recorded as wrong and never picked
    result = _run(db, FakeProblem(wrong=frozenset({fastest})), seeds=[fastest])
    assert result.best.up != fastest
    assert result.rejected_wrong == 1
    rows = {m.config_key: m for m in load_measurements(db, CTX, SHAPE.key, M)}
    assert rows[fastest.key].status == "wrong" and rows[fastest.key].latency_us is None
    assert rows[fastest.key].max_rel_error == 0.5


def test_finalists_are_retimed_with_full_replays(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 't.db'}")
    result = _run(db, FakeProblem())
    best = next(m for m in load_measurements(db, CTX, SHAPE.key, M) if m.config_key == result.best.key)
    assert best.replays == FINAL_REPLAYS
    assert result.default_latency_us == latency(default_config(SHAPE, M))
    assert result.best_latency_us <= result.default_latency_us


class RecordingPool:
    """Stands in for the compile pool: remembers what was submitted, in order, and when."""

    workers = 4

    def __init__(self, problem):
        self.problem = problem
        self.submitted: list[MoeConfigs] = []
        self.timed_at_first_submit: int | None = None
        self.timed_when_submitted: dict[MoeConfigs, int] = {}

    def submit(self, configs):
        if self.timed_at_first_submit is None:
            self.timed_at_first_submit = len(self.problem.timed)
        self.submitted.extend(c for c in configs if c not in self.submitted)
        for c in configs:
            self.timed_when_submitted.setdefault(c, len(self.problem.timed))

    def wait(self, config):
        self.submit([config])
        return "ok", ""


def test_exhaustive_sweep_compiles_its_whole_list_ahead_of_timing_and_skips_what_a_killed_run_measured(tmp_path):
    from tuner.kernels.fused_moe.space import fits_device, full_space

    db = open_database(f"sqlite:///{tmp_path / 't.db'}")
    everything = [c for c in full_space(SHAPE) if fits_device(c, SHAPE)]
    with pytest.raises(KeyboardInterrupt):
        problem = FakeProblem(interrupt_after=30)
        _run(db, problem, pool=RecordingPool(problem), strategy="exhaustive")
    measured = {m.config_key for m in load_measurements(db, CTX, SHAPE.key, M)}
    problem = FakeProblem()
    pool = RecordingPool(problem)
    _run(db, problem, pool=pool, strategy="exhaustive")
    assert pool.timed_at_first_submit == 0
    remaining = [c for c in everything if c.key not in measured]
    # the whole remaining list went to the compile workers first, in the order it is then timed
    assert [c.up for c in pool.submitted[: len(remaining)]] == remaining
    assert problem.timed[: len(remaining)] == remaining


def test_baselines_and_seeds_start_compiling_together_before_anything_is_timed(tmp_path):
    # each baseline used to wait for its own compile before the next was submitted: one more compile round per
    # batch size on the critical path
    db = open_database(f"sqlite:///{tmp_path / 't.db'}")
    problem = FakeProblem()
    pool = RecordingPool(problem)
    seeds = [KernelConfig(16, 64, 128, 1, 4, 3), KernelConfig(64, 128, 128, 1, 8, 4)]
    engine = KernelConfig(32, 64, 64, 1, 4, 3)
    plan = BatchPlan(SHAPE, M, EngineChoice(MoeConfigs(engine), "shipped"), down_configs=False, tma=False,
                     up_seeds=tuple(seeds), up_budget=24)
    sweep_batch_size(BatchSweeper(db, CTX, SHAPE, problem, pool, M), plan)
    assert [c.up for c in pool.submitted[:4]] == [engine, default_config(SHAPE, M), *seeds]
    assert [pool.timed_when_submitted[c] for c in pool.submitted[:4]] == [0, 0, 0, 0]
