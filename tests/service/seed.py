"""Seed a database with what the service shows: a kernel sweep (measurements at every batch size, best configs with
the engine's and the default's latencies), a flag study with many trials, jobs with units. Used by the service
tests, the browser test and benchmarks/service_latency.py. Latencies follow a simple made-up model (bigger M,
slower; each config a fixed factor off the best), so heat maps and speed-ups have structure to show."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from typing import Any

import sqlalchemy as sa

from tuner.kernels.base import KernelConfig, MoeShape, Quant
from tuner.search.flags.figures import StepFigures
from tuner.search.flags.load_search import LoadSearchResult, LoadStep
from tuner.store import flag_results as results
from tuner.store import flags as flag_store
from tuner.store import kernels
from tuner.store.db import Database
from tuner.store.flag_models import FlagTrial
from tuner.store.kernels import BestConfig, Measurement, MeasurementContext

DEVICE = "NVIDIA H200"
SHAPE = MoeShape(num_experts=161, intermediate_size=192, hidden_size=5120, top_k=8, quant=Quant.FP8_PER_CHANNEL,
                 fused_shared_experts=1)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def configs(n: int) -> list[KernelConfig]:
    grid = itertools.product((16, 32, 64, 128), (32, 64, 128), (64, 128), (1, 16), (4, 8), (3, 4))
    return [KernelConfig(*values) for values in itertools.islice(grid, n)]


def seed_sweep(db: Database, *, n_configs: int = 24, model: str = "zai-org/GLM-4.7-FP8", tp: int = 8,
               seed: int = 0) -> int:
    """A finished fused-MoE sweep on an H200 with `n_configs` configs measured at every batch size."""
    rng = random.Random(seed)
    ctx = MeasurementContext("fused_moe", "sglang", DEVICE, "3.4.0", "cuda_graph_v1")
    sweep_id = kernels.get_or_create_sweep(
        db, model=model, tp=tp, ep=1, shared_experts_fusion=True, dtype="fp8_w8a8_per_channel", kernel="fused_moe",
        kernel_source="sglang", device_name=DEVICE, triton_version="3.4.0", torch_version="2.8.0",
        bench_method="cuda_graph_v1", shape=SHAPE, shape_key=SHAPE.key, batch_sizes=list(BATCH_SIZES),
        strategy="adaptive", engine_version="sglang 0.5.23")
    cfgs = configs(n_configs)
    factor = {c.key: 1.0 + 0.6 * rng.random() for c in cfgs}
    best = []
    for m in BATCH_SIZES:
        base = 20.0 + 0.4 * m
        latencies = {c.key: base * factor[c.key] * (1 + 0.05 * rng.random()) for c in cfgs}
        for c in cfgs:
            kernels.record_measurement(db, ctx, SHAPE.key, Measurement(m, c.key, "ok", latencies[c.key], 0.1, 1e-3,
                                                                       None, 0.5, 100))
        winner = min(cfgs, key=lambda c: latencies[c.key])
        fastest = latencies[winner.key]
        best.append(BestConfig(m, winner.to_json_dict(), winner.key, fastest, default_latency_us=fastest * 1.3,
                               engine_config={"up": cfgs[0].to_json_dict(), "down": None},
                               engine_source="triton_3_4_0/E=161,N=192,device_name=NVIDIA_H200,dtype=fp8_w8a8.json",
                               engine_latency_us=fastest * 1.08, kept_engine_choice=False, noise_us=0.1))
    kernels.save_best_configs(db, sweep_id, best)
    kernels.set_sweep_status(db, sweep_id, "finished")
    return sweep_id


def seed_study(db: Database, name: str, n_trials: int, *, seed: int = 0, batch: int = 5000) -> int:
    """A finished flag study on the simulated engine with `n_trials` search trials (bulk inserted), each with one
    load search of three steps (what the Pareto chart plots), and a best config and gain in its result."""
    rng = random.Random(seed)
    study = flag_store.create_study(
        db, name=name, engine="sim", engine_version="sim 0.1", gpu="H200", model="zai-org/GLM-4.7-FP8",
        workload={"kind": "random", "input_len": 4096, "output_len": 256},
        objective={"kind": "goodput", "slos": ["ttft_p99<=2s", "tpot_p99<=50ms"], "pareto_metric": "tpot_p99"},
        sampler="tpe", space={"name": "sglang"}, load_search={"mode": "rate"}, settings={"trials": n_trials},
        status="finished")
    now = dt.datetime.now(dt.UTC)
    rows: list[dict[str, Any]] = []
    best = (0.0, 0)
    for number in range(n_trials):
        chunk = rng.choice([2048, 4096, 8192, 16384])
        goodput = 1500 + 1500 * rng.random() + chunk / 20
        if goodput > best[0]:
            best = (goodput, number)
        rows.append({
            "study_id": study.id, "trial_number": number, "kind": "search", "attempt": 0,
            "is_baseline": number == 0, "created_at": now, "finished_at": now, "status": "ok",
            "params": {"chunked-prefill-size": chunk}, "flags": {"chunked-prefill-size": chunk, "tp-size": 8},
            "env": {}, "values": [goodput], "goodput_tok_s": goodput, "goodput_req_s": goodput / 256,
            "max_load": goodput / 300, "searches": [_search(rng, goodput)], "log_tail": f"trial {number} ready\n",
            "log_path": f"/tmp/logs/trial-{number}.log", "stage_seconds": {"launch": 1.0, "ready": 4.0 + rng.random()},
        })
        if len(rows) >= batch:
            _insert(db, rows)
            rows = []
    if rows:
        _insert(db, rows)
    baseline = rows[0]["goodput_tok_s"] if n_trials and n_trials <= batch else 1800.0
    best_score, base_score = _one_sample(best[0]), _one_sample(baseline)
    flag_store.update_study(db, study.id, result=results.StudyResult(
        objective={"kind": "goodput"}, robust=False,
        ranking=(results.RankedConfig(best[1], {"chunked-prefill-size": 16384}, best_score, False),),
        baseline=results.BaselineResult(0, "ok", None, {"tp-size": 8}, {}, base_score),
        best=results.BestConfig(best[1], {"chunked-prefill-size": 16384}, {"chunked-prefill-size": 16384, "tp-size": 8}, {},
                        None, best_score),
        gain=results.GainRecord(best[0] / baseline - 1, best[0] / baseline - 1, best[0] / baseline - 1)))
    return study.id


def _one_sample(goodput_tok_s: float) -> results.ScoreRecord:
    return results.ScoreRecord((goodput_tok_s,), goodput_tok_s, 0.0, 0.0, goodput_tok_s)


def _search(rng: random.Random, goodput: float) -> dict[str, Any]:
    """One load search of three steps (the third misses the SLOs), as the flag search stores it."""
    steps = []
    for index, load in enumerate((2.0, 6.0, 12.0)):
        through = goodput * (0.3 + 0.3 * index) * (1 + 0.1 * rng.random())
        meets = index < 2
        figures = StepFigures(
            latency_s={"tpot_p99": 0.01 + 0.02 * index + 0.01 * rng.random(), "ttft_p99": 0.5 + index},
            output_throughput_tok_s=through, request_throughput_req_s=through / 256,
            goodput_tok_s=through if meets else through * 0.4, goodput_req_s=through / 256,
            slo_attainment=1.0 if meets else 0.4, slo_ratios={"tpot_p99": 0.5 + 0.4 * index}, meets_slo=meets)
        steps.append(LoadStep(index=index, load=load, mode="rate", requests=24, completed=24, failed=0,
                              duration_s=10.0, figures=figures))
    return LoadSearchResult(tuple(steps)).to_dict()


def _insert(db: Database, rows: list[dict[str, Any]]) -> None:
    def work(session: Any) -> None:
        session.execute(sa.insert(FlagTrial), rows)

    db.transaction(work)
