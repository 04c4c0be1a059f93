"""One fused-MoE problem on the device: rotating inputs, the float32 reference, check and timing of a config.

This is the fused-MoE implementation of the problem protocol the sweep drives (`moe_batch.TunableProblem`); it owns
input generation and correctness, while timing itself is the shared harness in `timing.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tuner.errors import TunerError
from tuner.kernels.base import MoeConfigs, MoeShape, Quant
from tuner.kernels.fused_moe.backends import MoeKernelBackend
from tuner.kernels.fused_moe.kernel import MoeWeights, make_weights, random_routing, reference_fused_moe
from tuner.kernels.timing import L2Flusher, TimingResult, time_calls

# Relative L2 error above which a config's output is declared wrong. Correct kernels land near 1e-3 (FP8 with
# the matched reference) and ~4e-3 (bf16 output rounding); a wrong tile or mask lands far above 0.1.
MAX_REL_ERROR = {Quant.BF16: 2e-2, Quant.FP8_PER_CHANNEL: 3e-2, Quant.FP8_BLOCK: 3e-2}
CALLS_PER_GRAPH = 10
WEIGHT_COPIES_MAX = 4
WEIGHT_BYTES_BUDGET = 12 * 2**30


@dataclass(frozen=True)
class RoutingTrace:
    """Recorded top-k ids ([T, k] int) to sample routing from instead of uniform random."""

    topk_ids: torch.Tensor

    def sample(self, num_tokens: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, self.topk_ids.shape[0], (num_tokens,), generator=generator)
        return self.topk_ids[idx]


def load_routing_trace(path: str, shape: MoeShape) -> RoutingTrace:
    """Read a `torch.save`d int tensor [T, k] of routed expert ids; k >= the model's routed top-k and every id
    a routed expert of this shape (ids past it would index past the weights). Errors say what to fix."""
    where = f"--routing {path}"
    try:
        ids = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TunerError(f"{where}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise TunerError(f"{where}: not a torch.save'd tensor ({type(exc).__name__}: {exc})") from None
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype.is_floating_point or ids.numel() == 0:
        raise TunerError(f"{where}: expected a non-empty integer tensor of shape [tokens, top_k]")
    if ids.shape[1] < shape.top_k:
        raise TunerError(f"{where}: {ids.shape[1]} experts per token recorded, the model routes to {shape.top_k}")
    ids = ids[:, : shape.top_k]
    if int(ids.min()) < 0 or int(ids.max()) >= shape.routed_experts:
        raise TunerError(f"{where}: expert ids must lie in 0..{shape.routed_experts - 1} (routed experts of "
                         f"{shape.key}); found {int(ids.min())}..{int(ids.max())}")
    return RoutingTrace(ids.to(torch.int32))


def weight_bytes(shape: MoeShape) -> int:
    per = 1 if shape.quant.is_fp8 else 2
    return shape.num_experts * 3 * shape.intermediate_size * shape.hidden_size * per


def expected_distinct_experts(shape: MoeShape, batch_size: int) -> float:
    """Expected number of experts a batch touches under uniform routing (+ the fused shared expert)."""
    p_untouched = (1 - shape.top_k / shape.routed_experts) ** batch_size
    return shape.routed_experts * (1 - p_untouched) + shape.fused_shared_experts


def touched_weight_bytes(shape: MoeShape, batch_size: int) -> float:
    return weight_bytes(shape) / shape.num_experts * expected_distinct_experts(shape, batch_size)


def make_weight_copies(shape: MoeShape, device: torch.device, act_dtype: torch.dtype = torch.bfloat16,
                       seed: int = 0) -> list[MoeWeights]:
    """Up to WEIGHT_COPIES_MAX independent weight sets (within WEIGHT_BYTES_BUDGET); shared by every batch size."""
    copies = max(1, min(WEIGHT_COPIES_MAX, WEIGHT_BYTES_BUDGET // max(weight_bytes(shape), 1)))
    return [make_weights(shape, act_dtype, device, seed + i) for i in range(copies)]


class MoeProblem:
    """Inputs for `CALLS_PER_GRAPH` calls with fresh routing each, cycling over several weight copies so a
    replay never finds the previous call's experts in L2; plus one check input with its reference."""

    def __init__(
        self, shape: MoeShape, batch_size: int, backend: MoeKernelBackend, device: torch.device,
        act_dtype: torch.dtype = torch.bfloat16, seed: int = 0, routing: RoutingTrace | None = None,
        weights: list[MoeWeights] | None = None,
    ) -> None:
        self.shape, self.batch_size, self.backend = shape, batch_size, backend
        g = torch.Generator().manual_seed(seed + batch_size)
        self.weights = weights if weights is not None else make_weight_copies(shape, device, act_dtype, seed)
        self.inputs = [self._make_input(g, device, act_dtype, routing) for _ in range(CALLS_PER_GRAPH)]
        self.check_input = self._make_input(g, device, act_dtype, routing)
        x, tw, ti = self.check_input
        self.reference = reference_fused_moe(x, self.weights[0], tw, ti, shape)
        self._ref_norm = float(self.reference.norm())
        self.flusher = L2Flusher(device)

    def _make_input(self, g, device, dtype, routing):  # type: ignore[no-untyped-def]
        x = torch.randn((self.batch_size, self.shape.hidden_size), generator=g).to(device=device, dtype=dtype)
        tw, ti = random_routing(self.batch_size, self.shape, device, g)
        if routing is not None:
            recorded = routing.sample(self.batch_size, g).to(device=device, dtype=torch.int32)
            ti = torch.cat([recorded[:, : self.shape.top_k], ti[:, self.shape.top_k:]], dim=1)
        return x, tw, ti

    def _call(self, configs: MoeConfigs, i: int) -> torch.Tensor:
        x, tw, ti = self.inputs[i]
        return self.backend.run(x, self.weights[i % len(self.weights)], tw, ti, self.shape, configs)

    def check(self, configs: MoeConfigs) -> float:
        """Relative L2 error of the configs' output against the float32 reference (NaN counts as infinite)."""
        x, tw, ti = self.check_input
        out = self.backend.run(x, self.weights[0], tw, ti, self.shape, configs)
        torch.cuda.synchronize()
        err = float((out.float() - self.reference).norm()) / max(self._ref_norm, 1e-30)
        return err if math.isfinite(err) else float("inf")

    def is_correct(self, rel_error: float) -> bool:
        return rel_error <= MAX_REL_ERROR[self.shape.quant]

    def time(self, configs: MoeConfigs, replays: int) -> TimingResult:
        """Median per-call latency of `configs` over `replays` replays of a CUDA graph of CALLS_PER_GRAPH calls."""
        return time_calls(lambda i: self._call(configs, i), CALLS_PER_GRAPH, replays, flusher=self.flusher)


