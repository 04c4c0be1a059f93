"""One batch size's search with up and down configs, and the never-worse rule, on a fake timer.

The fake kernel's latency is an up-GEMM part plus a down-GEMM part with different optima (and USE_TMA helping
the down GEMM), as in SGLang's kernel; every measurement goes to a real SQLite database."""

import pytest

from tuner.kernels.base import KernelConfig, MoeConfigs, MoeShape, Quant
from tuner.kernels.fused_moe.backends import EngineChoice
from tuner.kernels.fused_moe.space import default_config
from tuner.kernels.timing import TimingResult
from tuner.search.moe_batch import (
    FINAL_ROUND_REPLAYS,
    FINAL_ROUNDS,
    BatchPlan,
    BatchSweeper,
    sweep_batch_size,
)
from tuner.store.db import open_database
from tuner.store.kernels import MeasurementContext, load_measurements

SHAPE = MoeShape(257, 256, 7168, 8, Quant.FP8_BLOCK, block_shape=(128, 128), fused_shared_experts=1)
CTX = MeasurementContext("fused_moe", "sglang", "Fake GPU", "3.6.0", "test-method")
M = 16


def up_part(c: KernelConfig) -> float:
    return (50 + 6 * abs(c.block_size_m - 16) / 16 + 5 * abs(c.block_size_n - 64) / 32 + 2 * (c.num_warps != 4)
            + 2 * abs(c.num_stages - 5) + 0.5 * (c.group_size_m != 1) + 1 * (c.block_size_k != 128))


def down_part(c: KernelConfig) -> float:
    return (40 + 5 * abs(c.block_size_n - 128) / 32 + 2 * abs(c.num_stages - 2) + 1 * (c.num_warps != 4)
            + 0.5 * (c.group_size_m != 16) - (6 if c.use_tma else 0))


class FakeKernel:
    def __init__(self, jitter=0.0, overrides=None):
        self.timed: list[MoeConfigs] = []
        self.replays: list[int] = []
        self.jitter = jitter
        self.overrides = overrides or {}

    def latency(self, configs: MoeConfigs) -> float:
        if configs in self.overrides:
            return self.overrides[configs]
        return up_part(configs.up) + down_part(configs.effective_down)

    def check(self, configs):
        return 1e-3

    def is_correct(self, err):
        return err < 0.03

    def time(self, configs, replays):
        self.timed.append(configs)
        self.replays.append(replays)
        return TimingResult(self.latency(configs), self.jitter, replays)


SHIPPED = MoeConfigs(KernelConfig(16, 64, 128, 1, 4, 5), KernelConfig(16, 128, 128, 16, 4, 2, use_tma=True))


def _plan(engine=None, down=True, tma=True, **kw):
    engine = engine or EngineChoice(MoeConfigs(default_config(SHAPE, M)), "default")
    return BatchPlan(SHAPE, M, engine, down_configs=down, tma=tma, up_budget=24, down_budget=16, **kw)


def _sweep(tmp_path, kernel, plan):
    db = open_database(f"sqlite:///{tmp_path / 't.db'}")
    return db, sweep_batch_size(BatchSweeper(db, CTX, SHAPE, kernel, None, M), plan)


def test_the_down_gemm_gets_its_own_config_with_tma_at_the_up_block_m(tmp_path):
    kernel = FakeKernel()
    db, r = _sweep(tmp_path, kernel, _plan())
    assert r.best.down is not None and r.best.down.block_size_m == r.best.up.block_size_m
    assert any(c.down is not None and c.down.use_tma for c in kernel.timed)  # USE_TMA is searched where supported
    assert r.best_latency_us < r.single_latency_us  # the separate down config is worth having
    assert r.single is not None and r.best_latency_us < r.default_latency_us
    assert not r.kept_engine_choice and r.gain_over_engine > 1
    # every pair measured obeys SGLang's rule; every one is stored
    stored = load_measurements(db, CTX, SHAPE.key, M)
    assert {m.config_key for m in stored} >= {c.key for c in kernel.timed}
    for m in stored:
        pair = MoeConfigs.from_key(m.config_key)
        assert pair.effective_down.block_size_m == pair.up.block_size_m


def test_without_down_files_one_config_serves_both_gemms(tmp_path):
    kernel = FakeKernel()
    _, r = _sweep(tmp_path, kernel, _plan(down=False, tma=False))
    assert r.best.down is None and r.best == MoeConfigs(r.single)
    assert all(c.down is None for c in kernel.timed)


def test_a_shipped_tma_down_config_seeds_the_down_search(tmp_path):
    kernel = FakeKernel()
    _, r = _sweep(tmp_path, kernel, _plan(down_seeds=(SHIPPED.down,)))
    assert r.best.down is not None and r.best.down.use_tma


def test_a_shipped_file_nothing_beats_is_kept_not_replaced(tmp_path):
    engine = EngineChoice(SHIPPED, "triton_3_5_1/E=257,...json + triton_3_5_1/_down")
    # the shipped pair is faster than anything else the kernel can do
    kernel = FakeKernel(overrides={SHIPPED: 1.0})
    _, r = _sweep(tmp_path, kernel, _plan(engine))
    assert r.kept_engine_choice and r.best == SHIPPED
    assert r.gain_over_engine == pytest.approx(1.0)


def test_a_gain_inside_the_noise_is_no_gain(tmp_path):
    engine = EngineChoice(SHIPPED, "shipped")
    best_possible = up_part(SHIPPED.up) + down_part(SHIPPED.down)
    # the shipped pair is 0.3% slower than the true optimum, and every timing is +-1 us noisy
    kernel = FakeKernel(jitter=1.0, overrides={SHIPPED: best_possible * 1.003})
    _, r = _sweep(tmp_path, kernel, _plan(engine))
    assert r.kept_engine_choice and r.best == SHIPPED and r.noise_us >= 2.0


def test_a_clear_gain_over_the_shipped_file_is_taken(tmp_path):
    engine = EngineChoice(SHIPPED, "shipped")
    kernel = FakeKernel(overrides={SHIPPED: 200.0})
    _, r = _sweep(tmp_path, kernel, _plan(engine))
    assert not r.kept_engine_choice and r.best != SHIPPED
    assert r.engine_latency_us == 200.0 and r.gain_over_engine > 1.5


def test_shipped_configs_seed_the_search_even_outside_the_pruned_space(tmp_path):
    odd = KernelConfig(256, 64, 128, 64, 8, 3)  # BLOCK_SIZE_M 256 is pruned at M=16
    kernel = FakeKernel()
    _sweep(tmp_path, kernel, _plan(up_seeds=(odd,)))
    assert MoeConfigs(odd) in kernel.timed


def test_finals_interleave_rounds_so_drift_hits_every_finalist(tmp_path):
    kernel = FakeKernel()
    _, r = _sweep(tmp_path, kernel, _plan())
    finals = [c for c, n in zip(kernel.timed, kernel.replays) if n == FINAL_ROUND_REPLAYS]
    per_round = len(finals) // FINAL_ROUNDS
    assert per_round >= 3  # the best few, the engine's choice, the default
    # each finalist once per round, in the same order, round after round
    assert finals[:per_round] == finals[per_round: 2 * per_round] == finals[2 * per_round:]
    assert kernel.timed[-len(finals):] == finals
    assert r.best in finals


# ---------------------------------------------------------------------------------------------- second pass


def _finalist_elsewhere(db, configs, batch_size, latency_us):
    """A first pass at another batch size that re-timed `configs` in its finals."""
    from tuner.search.moe_batch import FINAL_REPLAYS
    from tuner.store.kernels import Measurement, record_measurement

    record_measurement(db, CTX, SHAPE.key, Measurement(batch_size, configs.key, "ok", latency_us, 0.1, 1e-3, None,
                                                       0.1, FINAL_REPLAYS))


def test_second_pass_takes_a_pair_another_batch_size_found_when_it_is_faster_here(tmp_path):
    from tuner.search.moe_batch import cross_batch_candidates, refine_batch_size

    # a pair the first pass at M cannot reach from its seeds and budget, but which another M's search found
    hidden = MoeConfigs(KernelConfig(32, 256, 64, 64, 8, 2), KernelConfig(32, 32, 64, 1, 8, 3))
    kernel = FakeKernel(overrides={hidden: 10.0})
    db, first = _sweep(tmp_path, kernel, _plan())
    assert first.best != hidden
    _finalist_elsewhere(db, hidden, 4 * M, 99.0)
    candidates = cross_batch_candidates(db, CTX, SHAPE, M)
    assert hidden in candidates
    kernel.timed.clear()
    kernel.replays.clear()
    second = refine_batch_size(BatchSweeper(db, CTX, SHAPE, kernel, None, M), _plan(), candidates)
    assert second.best == hidden and second.best_latency_us == pytest.approx(10.0)
    # the finals ran again in one window: the first pass's winner and the baselines were re-timed beside it
    retimed = [c for c, r in zip(kernel.timed, kernel.replays) if r == FINAL_ROUND_REPLAYS]
    assert first.best in retimed and hidden in retimed and _plan().engine.configs in retimed


def test_second_pass_keeps_the_first_pass_result_when_nothing_elsewhere_is_faster_here(tmp_path):
    from tuner.search.moe_batch import cross_batch_candidates, refine_batch_size

    engine = EngineChoice(SHIPPED, "shipped")
    kernel = FakeKernel(overrides={SHIPPED: 1.0})  # nothing beats what the engine ships
    db, first = _sweep(tmp_path, kernel, _plan(engine))
    slow_elsewhere = MoeConfigs(KernelConfig(64, 64, 64, 1, 4, 3))
    _finalist_elsewhere(db, slow_elsewhere, 2 * M, 5.0)  # fast at its own M, slow here
    second = refine_batch_size(BatchSweeper(db, CTX, SHAPE, kernel, None, M), _plan(engine),
                               cross_batch_candidates(db, CTX, SHAPE, M))
    assert first.kept_engine_choice and second.kept_engine_choice and second.best == SHIPPED


def test_second_pass_skips_pairs_this_engine_cannot_read(tmp_path):
    from tuner.search.moe_batch import refine_batch_size

    kernel = FakeKernel()
    db, _ = _sweep(tmp_path, kernel, _plan(down=False, tma=False))
    pair = MoeConfigs(KernelConfig(16, 64, 128, 1, 4, 5), KernelConfig(16, 128, 128, 16, 4, 2, use_tma=True))
    kernel.timed.clear()
    refine_batch_size(BatchSweeper(db, CTX, SHAPE, kernel, None, M), _plan(down=False, tma=False), [pair])
    assert pair not in kernel.timed and all(c.down is None for c in kernel.timed)


def test_second_pass_recombines_a_neighbours_down_config_with_this_batch_sizes_best_up_config():
    from tuner.search.moe_batch import recombined

    best = MoeConfigs(KernelConfig(32, 64, 128, 16, 4, 2), KernelConfig(32, 64, 64, 32, 4, 2))
    neighbour = MoeConfigs(KernelConfig(16, 128, 128, 1, 4, 2), KernelConfig(16, 128, 64, 16, 4, 4))
    out = recombined(best, [neighbour])
    moved_down = KernelConfig(32, 128, 64, 16, 4, 4)
    assert MoeConfigs(KernelConfig(32, 128, 128, 1, 4, 2), moved_down) in out  # moved to this M's BLOCK_SIZE_M
    assert MoeConfigs(best.up, moved_down) in out  # its down config under the best up config
    assert MoeConfigs(KernelConfig(32, 128, 128, 1, 4, 2), best.down) in out
    assert all(c.up.block_size_m == c.effective_down.block_size_m == 32 for c in out)  # SGLang's rule holds
