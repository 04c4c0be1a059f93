"""The block-FP8 GEMM's search at one batch size on a fake timer, with a real SQLite database: never worse than
SGLang's shipped config, its sm90 variants tried only where they exist, shipped files for any device as seeds."""

import json

from tuner.kernels.base import GemmShape, KernelConfig
from tuner.kernels.fp8_gemm.backends import GemmChoice
from tuner.kernels.fp8_gemm.space import GemmConfig, default_config
from tuner.kernels.timing import TimingResult
from tuner.search.batch import BatchSweeper
from tuner.search.gemm_batch import GemmPlan, gemm_best_row, shipped_gemm_seeds, sweep_gemm_batch
from tuner.store.db import open_database
from tuner.store.kernels import MeasurementContext

SHAPE = GemmShape(576, 7168, (128, 128))
CTX = MeasurementContext("fp8_gemm", "sglang", "Fake GPU", "3.6.0", "test")
M = 16
BLOCK = (128, 128)


class FakeGemm:
    def __init__(self, overrides=None):
        self.overrides = overrides or {}
        self.timed: list[GemmConfig] = []

    def latency(self, c: GemmConfig) -> float:
        if c in self.overrides:
            return self.overrides[c]
        b = c.base
        return (20 + 3 * abs(b.block_size_m - 16) / 16 + 2 * abs(b.block_size_n - 64) / 32 + (b.num_warps != 4)
                + abs(b.num_stages - 4) - 4 * c.swap_ab - (2 if c.split_k == 4 else 0))

    def check(self, c):
        return 1e-3

    def is_correct(self, err):
        return err < 0.02

    def time(self, c, replays):
        self.timed.append(c)
        return TimingResult(self.latency(c), 0.05, replays)


def _run(tmp_path, kernel, engine=None, hopper=True, seeds=()):
    db = open_database(f"sqlite:///{tmp_path / 't.db'}")
    engine = engine or GemmChoice(default_config(BLOCK), "default")
    plan = GemmPlan(SHAPE, M, engine, hopper=hopper, seeds=tuple(seeds), budget=20)
    return sweep_gemm_batch(BatchSweeper(db, CTX, SHAPE, kernel, None, M, parse_key=GemmConfig.from_key), plan)


def test_on_sm90_the_swap_ab_and_split_k_variants_are_found(tmp_path):
    kernel = FakeGemm()
    r = _run(tmp_path, kernel)
    assert r.best.swap_ab and r.best.split_k == 4 and r.gain_over_default > 1
    row = gemm_best_row(r)
    assert row.config["SWAP_AB"] is True and row.config["SPLIT_K"] == 4 and row.config_key == r.best.key


def test_without_the_sm90_variant_only_plain_configs_are_measured(tmp_path):
    kernel = FakeGemm()
    r = _run(tmp_path, kernel, hopper=False)
    assert not any(c.hopper for c in kernel.timed) and not r.best.hopper


def test_a_shipped_config_nothing_beats_is_kept(tmp_path):
    shipped = GemmConfig(KernelConfig(16, 64, 128, 1, 4, 4), True, 4)
    kernel = FakeGemm(overrides={shipped: 1.0})
    r = _run(tmp_path, kernel, engine=GemmChoice(shipped, "shipped file"))
    assert r.kept_engine_choice and r.best == shipped and r.gain_over_engine == 1.0


def test_shipped_files_of_any_device_seed_the_search(tmp_path):
    entry = {"BLOCK_SIZE_M": 32, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 16, "num_warps": 8,
             "num_stages": 2, "SWAP_AB": True, "SPLIT_K": 2}
    name = "N=576,K=7168,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128, 128].json"
    (tmp_path / name).write_text(json.dumps({"1": entry, "4096": {**entry, "BLOCK_SIZE_M": 128}}))
    (tmp_path / "N=576,K=5120,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128, 128].json").write_text("{}")
    seeds = shipped_gemm_seeds(tmp_path, SHAPE, M)
    assert seeds == [GemmConfig.from_json_dict(entry)]
    kernel = FakeGemm()
    _run(tmp_path, kernel, seeds=seeds)
    assert seeds[0] in kernel.timed


def test_the_best_plain_config_is_kept_for_engines_without_the_sm90_keys(tmp_path):
    r = _run(tmp_path, FakeGemm())
    row = gemm_best_row(r)
    assert r.best.hopper and r.plain is not None and not r.plain.hopper
    assert "SWAP_AB" not in row.single_config and row.single_latency_us >= row.latency_us


def test_second_pass_takes_another_batch_sizes_finalist_when_it_is_faster_here(tmp_path):
    from tuner.search.batch import FINAL_REPLAYS
    from tuner.search.gemm_batch import cross_batch_gemm_candidates, refine_gemm_batch
    from tuner.store.kernels import Measurement, record_measurement

    hidden = GemmConfig(KernelConfig(256, 256, 128, 64, 8, 2), True, 8)
    kernel = FakeGemm(overrides={hidden: 1.0})
    db = open_database(f"sqlite:///{tmp_path / 't.db'}")
    plan = GemmPlan(SHAPE, M, GemmChoice(default_config(BLOCK), "default"), hopper=True, budget=20)
    first = sweep_gemm_batch(BatchSweeper(db, CTX, SHAPE, kernel, None, M, parse_key=GemmConfig.from_key), plan)
    assert first.best != hidden
    record_measurement(db, CTX, SHAPE.key, Measurement(1024, hidden.key, "ok", 50.0, 0.1, 1e-3, None, 0.1,
                                                       FINAL_REPLAYS))
    candidates = cross_batch_gemm_candidates(db, CTX, SHAPE, M)
    assert candidates == [hidden]
    second = refine_gemm_batch(BatchSweeper(db, CTX, SHAPE, kernel, None, M, parse_key=GemmConfig.from_key), plan,
                               candidates)
    assert second.best == hidden and not second.kept_engine_choice
    # without the sm90 variant the engine could not read it: not measured, the first result stands
    db2 = open_database(f"sqlite:///{tmp_path / 'plain.db'}")
    plain = GemmPlan(SHAPE, M, GemmChoice(default_config(BLOCK), "default"), hopper=False, budget=20)
    sweep_gemm_batch(BatchSweeper(db2, CTX, SHAPE, kernel, None, M, parse_key=GemmConfig.from_key), plain)
    kernel.timed.clear()
    third = refine_gemm_batch(BatchSweeper(db2, CTX, SHAPE, kernel, None, M, parse_key=GemmConfig.from_key), plain,
                              candidates)
    assert hidden not in kernel.timed and third.best != hidden and not third.best.hopper
