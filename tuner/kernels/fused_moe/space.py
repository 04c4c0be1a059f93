"""The fused-MoE config space, the engines' default configs, and pruning that needs no compile.

Pruning drops configs that cannot fit the SM (shared memory, registers) and configs that cannot help at a
given batch size (a BLOCK_SIZE_M larger than any expert's rows, GROUP_SIZE_M values that act alike).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

from tuner.kernels.base import KernelConfig, MoeShape, Quant

# SGLang's tuner space (kernels.md): 4 x 5 x 3 x 4 x 2 x 4 = 1920 configs.
STAGES = (2, 3, 4, 5)
BLOCK_M = (16, 32, 64, 128, 256)
BLOCK_K = (64, 128, 256)
BLOCK_N = (32, 64, 128, 256)
WARPS = (4, 8)
GROUP_M = (1, 16, 32, 64)


@dataclass(frozen=True)
class DeviceLimits:
    """Per-SM limits that decide whether a config can launch at all (H100/H200 values by default)."""

    shared_memory_bytes: int = 232448  # 227 KiB opt-in per block on sm_90
    registers_per_sm: int = 65536
    max_registers_per_thread: int = 255


def full_space(shape: MoeShape) -> list[KernelConfig]:
    """Every config SGLang's exhaustive tuner would try for this shape."""
    configs = []
    for s, m, k, n, w, g in itertools.product(STAGES, BLOCK_M, BLOCK_K, BLOCK_N, WARPS, GROUP_M):
        if shape.quant is Quant.FP8_BLOCK:
            assert shape.block_shape is not None
            if shape.block_shape[1] % k:
                continue  # BLOCK_SIZE_K must divide the quantization group
        configs.append(KernelConfig(m, n, k, g, w, s))
    return configs


def default_config(shape: MoeShape, batch_size: int) -> KernelConfig:
    """What SGLang runs when no tuned file exists (kernels.md): the baseline users actually get."""
    if shape.quant is Quant.FP8_BLOCK:
        assert shape.block_shape is not None
        return KernelConfig(64, shape.block_shape[0], shape.block_shape[1], 32, 4, 3)
    if shape.quant.is_fp8:
        if batch_size <= shape.num_experts:
            return KernelConfig(64, 128, 128, 1, 4, 4)
        return KernelConfig(128, 256, 128, 32, 8, 4)
    # bf16: SGLang passes no warps/stages; Triton's launch defaults are num_warps=4, num_stages=3
    if batch_size <= shape.num_experts:
        return KernelConfig(16, 32, 64, 1, 4, 3)
    return KernelConfig(64, 64, 32, 8, 4, 3)


def _elem_bytes(shape: MoeShape) -> int:
    return 1 if shape.quant.is_fp8 else 2


def shared_memory_bytes(config: KernelConfig, shape: MoeShape) -> int:
    """Pipelined A and B tiles: (stages - 1) buffers in flight plus the one being consumed, as Triton lays
    them out on Hopper; an estimate that matches the compiler's report to within its scratch space."""
    e = _elem_bytes(shape)
    tile = (config.block_size_m * config.block_size_k + config.block_size_k * config.block_size_n) * e
    return tile * max(config.num_stages - 1, 1)


def accumulator_registers_per_thread(config: KernelConfig) -> int:
    return config.block_size_m * config.block_size_n // (32 * config.num_warps)


def fits_device(config: KernelConfig, shape: MoeShape, limits: DeviceLimits = DeviceLimits()) -> bool:
    if shared_memory_bytes(config, shape) > limits.shared_memory_bytes:
        return False
    # fp32 accumulators alone above ~60% of the per-thread budget spill once operands and addresses are added
    return accumulator_registers_per_thread(config) <= 0.6 * limits.max_registers_per_thread


def expected_max_rows_per_expert(shape: MoeShape, batch_size: int) -> int:
    """The most rows any one expert gets: every token with a fused shared expert; otherwise a high quantile
    of the binomial load of a routed expert under uniform routing."""
    if shape.fused_shared_experts:
        return batch_size
    p = shape.top_k / shape.routed_experts
    mean = batch_size * p
    return min(batch_size, math.ceil(mean + 4 * math.sqrt(mean * (1 - p)) + 1))


def expected_blocks(shape: MoeShape, batch_size: int, block_size_m: int) -> int:
    """Upper bound on BLOCK_SIZE_M row blocks after alignment (what GROUP_SIZE_M swizzles over)."""
    pairs = batch_size * shape.runtime_top_k
    touched = min(shape.num_experts, pairs)
    return math.ceil(pairs / block_size_m) + touched


def prune_for_batch(configs: list[KernelConfig], shape: MoeShape, batch_size: int,
                    keep_block_m: int | None = None) -> list[KernelConfig]:
    """Drop configs that cannot help at this batch size; keep one representative of equivalent ones.
    `keep_block_m`: a BLOCK_SIZE_M fixed elsewhere (the up GEMM's), never pruned."""
    rows = expected_max_rows_per_expert(shape, batch_size)
    max_block_m = max(16, 1 << math.ceil(math.log2(max(rows, 1))), keep_block_m or 0)
    kept = []
    for c in configs:
        if c.block_size_m > max_block_m:
            continue
        # GROUP_SIZE_M values at or above the number of row blocks all give the same program order:
        # keep only the smallest of them.
        blocks = expected_blocks(shape, batch_size, c.block_size_m)
        alike = [g for g in GROUP_M if g >= blocks]
        if alike and c.group_size_m >= blocks and c.group_size_m != min(alike):
            continue
        kept.append(c)
    return kept


def candidate_space(shape: MoeShape, batch_size: int, limits: DeviceLimits = DeviceLimits()) -> list[KernelConfig]:
    """The up GEMM's candidates at one batch size: the engine's space, minus what cannot fit or cannot help."""
    return prune_for_batch([c for c in full_space(shape) if fits_device(c, shape, limits)], shape, batch_size)


def down_space(shape: MoeShape, block_size_m: int, tma: bool, limits: DeviceLimits = DeviceLimits()) -> list[KernelConfig]:
    """Every down-GEMM config of the engine's space at the up config's BLOCK_SIZE_M (SGLang makes both GEMMs
    share it), each with and without USE_TMA where the engine has that path (`tma`)."""
    configs = [c.with_block_m(block_size_m) for c in full_space(shape) if c.block_size_m == BLOCK_M[0]]
    configs = [c for c in configs if fits_device(c, shape, limits)]
    if tma:
        configs += [dataclasses.replace(c, use_tma=True) for c in configs]
    return configs


def down_candidate_space(shape: MoeShape, batch_size: int, block_size_m: int, tma: bool,
                         limits: DeviceLimits = DeviceLimits()) -> list[KernelConfig]:
    """`down_space`, pruned for the batch size like the up GEMM's (GROUP_SIZE_M values that act alike)."""
    return prune_for_batch(down_space(shape, block_size_m, tma, limits), shape, batch_size, keep_block_m=block_size_m)
