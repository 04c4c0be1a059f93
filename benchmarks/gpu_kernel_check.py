"""GPU correctness check of our fused-MoE kernel for each dtype against the float32 reference, with a
negative control, plus the parallel-compile throughput of the sweep's compile pool.

    python benchmarks/gpu_kernel_check.py
"""

from __future__ import annotations

import random
import time

import torch

from tuner.kernels.fused_moe.backends import TunerBackend
from tuner.kernels.fused_moe.family import FusedMoe
from tuner.kernels.fused_moe.problem import MAX_REL_ERROR, MoeProblem
from tuner.kernels.fused_moe.space import candidate_space, default_config
from tuner.models.config import load_model_config
from tuner.models.shapes import derive_moe_shape
from tuner.search.compile_pool import CompilePool

MODELS = [("GLM-4.7-FP8", 8), ("DeepSeek-V3", 8), ("Qwen3-30B-A3B", 1)]


def main() -> None:
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(), torch.__version__, __import__("triton").__version__)
    bad = 0
    for name, tp in MODELS:
        shape = derive_moe_shape(load_model_config(name), tp=tp)
        for m in (1, 37, 512):
            prob = MoeProblem(shape, m, TunerBackend(), dev)
            rng = random.Random(m)
            configs = [default_config(shape, m)] + rng.sample(candidate_space(shape, m), 3)
            for c in configs:
                err = prob.check(c)
                ok = prob.is_correct(err)
                bad += not ok
                print(f"{name:14s} M={m:4d} {c.key:26s} rel.err {err:.2e} {'ok' if ok else 'WRONG'}")
            # negative control: a corrupted output must fail the same check
            out = prob.backend.run(*prob.check_input[:1], prob.weights[0], *prob.check_input[1:], shape, configs[0])
            out[0, :] += out.abs().max() * 10
            err = float((out.float() - prob.reference).norm() / prob.reference.norm())
            print(f"{name:14s} M={m:4d} negative control rel.err {err:.2e} rejected={err > MAX_REL_ERROR[shape.quant]}")
            del prob
    shape = derive_moe_shape(load_model_config("GLM-4.7-FP8"), tp=8)
    cands = random.Random(0).sample(candidate_space(shape, 1024), 30)
    t0 = time.perf_counter()
    pool = CompilePool(device_index=0, warm=[("fused_moe", "tuner")])
    pool.target("fused_moe", FusedMoe().shape_to_json(shape), "tuner")
    pool.batch_size = 1024
    pool.submit(cands)
    statuses = [pool.wait(c)[0] for c in cands]
    dt = time.perf_counter() - t0
    pool.close()
    print(f"compile pool: {len(cands)} configs in {dt:.1f} s with {pool.workers} workers; "
          f"{statuses.count('ok')} ok, {len(cands) - statuses.count('ok')} failed")
    print("ALL CORRECT" if not bad else f"{bad} WRONG")


if __name__ == "__main__":
    main()
