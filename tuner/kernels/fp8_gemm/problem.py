"""One block-FP8 GEMM problem on the device: rotating activations and weight copies, the float32 reference, and
the check and timing of a config at one M (the GEMM family's `TunableProblem`)."""

from __future__ import annotations

import math

import torch

from tuner.kernels.base import GemmShape
from tuner.kernels.fp8_gemm.kernel import (
    quantize_per_token_group,
    quantize_weight_blocks,
    reference_block_fp8_gemm,
)
from tuner.kernels.fp8_gemm.space import GemmConfig
from tuner.kernels.timing import L2Flusher, TimingResult, time_calls

CALLS_PER_GRAPH = 10
WEIGHT_COPIES_MAX = 4
WEIGHT_BYTES_BUDGET = 4 * 2**30
MAX_REL_ERROR = 2e-2  # bf16 output rounding lands near 4e-3; a wrong tile or scale lands far above


def make_weight_copies(shape: GemmShape, device: torch.device, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Up to WEIGHT_COPIES_MAX quantized B [N, K] with block scales, so a call rarely finds B in L2."""
    copies = max(1, min(WEIGHT_COPIES_MAX, WEIGHT_BYTES_BUDGET // max(shape.n * shape.k, 1)))
    out = []
    for i in range(copies):
        g = torch.Generator(device=device).manual_seed(seed + i)
        w = torch.randn((shape.n, shape.k), generator=g, device=device) / math.sqrt(shape.k)
        out.append(quantize_weight_blocks(w, shape.block_shape))
    return out


class GemmProblem:
    """Inputs for CALLS_PER_GRAPH calls (fresh activations each, weight copies in rotation) and one check input
    with its float32 reference; `backend.run(a, a_scale, b, b_scale, block_shape, config)` is what is timed."""

    def __init__(self, shape: GemmShape, batch_size: int, backend, device: torch.device,  # type: ignore[no-untyped-def]
                 weights: list[tuple[torch.Tensor, torch.Tensor]], seed: int = 0) -> None:
        self.shape, self.batch_size, self.backend, self.weights = shape, batch_size, backend, weights
        g = torch.Generator(device=device).manual_seed(seed + batch_size)

        def activations() -> tuple[torch.Tensor, torch.Tensor]:
            x = torch.randn((batch_size, shape.k), generator=g, device=device)
            return quantize_per_token_group(x, shape.block_shape[1])

        self.inputs = [activations() for _ in range(CALLS_PER_GRAPH)]
        a, a_s = self.check_input = activations()
        b, b_s = weights[0]
        self.reference = reference_block_fp8_gemm(a, a_s, b, b_s, shape.block_shape)
        self._ref_norm = float(self.reference.norm())
        self.flusher = L2Flusher(device)

    def _call(self, config: GemmConfig, i: int) -> torch.Tensor:
        a, a_s = self.inputs[i]
        b, b_s = self.weights[i % len(self.weights)]
        return self.backend.run(a, a_s, b, b_s, self.shape.block_shape, config)

    def check(self, config: GemmConfig) -> float:
        """Relative L2 error of the output against the float32 reference (NaN counts as infinite)."""
        a, a_s = self.check_input
        b, b_s = self.weights[0]
        out = self.backend.run(a, a_s, b, b_s, self.shape.block_shape, config)
        torch.cuda.synchronize()
        err = float((out.float() - self.reference).norm()) / max(self._ref_norm, 1e-30)
        return err if math.isfinite(err) else float("inf")

    def is_correct(self, rel_error: float) -> bool:
        return rel_error <= MAX_REL_ERROR

    def time(self, config: GemmConfig, replays: int) -> TimingResult:
        return time_calls(lambda i: self._call(config, i), CALLS_PER_GRAPH, replays, flusher=self.flusher)
