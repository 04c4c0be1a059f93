"""Correctness-only pass on the CPU: our fused-MoE kernel under TRITON_INTERPRET=1 at a tiny version of the
model's shape (same dtype scheme, fused shared expert and block structure), against the float32 reference.

No timing, nothing written to the database: this answers "would these configs compute the right thing".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

from tuner.kernels.base import KernelConfig, MoeShape, Quant

# Small configs from the real space: interpreter time grows with the tile sizes.
INTERPRET_CONFIGS = (
    KernelConfig(16, 32, 64, 1, 4, 2),
    KernelConfig(32, 64, 32, 16, 4, 3),
    KernelConfig(16, 64, 128, 1, 8, 4),
)
INTERPRET_BATCH_SIZES = (1, 3, 16)


def tiny_shape(shape: MoeShape) -> MoeShape:
    """Keep the quantization scheme and fusion, shrink E, N, K (block quant keeps its block size)."""
    if shape.quant is Quant.FP8_BLOCK:
        n, k = 128, 256
    else:
        n, k = 48, 128
    routed = min(shape.routed_experts, 6)
    return replace(shape, num_experts=routed + shape.fused_shared_experts, intermediate_size=n, hidden_size=k,
                   top_k=min(shape.top_k, 3))


def run_interpret_check(shape: MoeShape, print_fn: Callable[[str], None] = print) -> int:
    os.environ["TRITON_INTERPRET"] = "1"  # must be set before the kernels are imported
    import torch

    from tuner.kernels.fused_moe.kernel import fused_moe, make_weights, random_routing, reference_fused_moe
    from tuner.kernels.fused_moe.problem import MAX_REL_ERROR

    small = tiny_shape(shape)
    print_fn(f"interpreter check of our kernel at {small.key} (model shape {shape.key})")
    failures = 0
    for batch_size in INTERPRET_BATCH_SIZES:
        g = torch.Generator().manual_seed(batch_size)
        weights = make_weights(small, torch.float16, "cpu", batch_size)
        x = torch.randn((batch_size, small.hidden_size), generator=g).half()
        tw, ti = random_routing(batch_size, small, "cpu", g)
        ref = reference_fused_moe(x, weights, tw, ti, small)
        for config in INTERPRET_CONFIGS:
            if small.quant is Quant.FP8_BLOCK and small.block_shape and small.block_shape[1] % config.block_size_k:
                continue
            out = fused_moe(x, weights, tw, ti, small, config)
            err = float((out.float() - ref).norm() / ref.norm())
            ok = err <= MAX_REL_ERROR[small.quant]
            failures += not ok
            print_fn(f"  M={batch_size:3d} {config.key:<24} rel.err {err:.2e}  {'ok' if ok else 'WRONG'}")
    print_fn("all configs correct" if not failures else f"{failures} config(s) WRONG")
    return 0 if not failures else 1
