"""The block-FP8 GEMM's launch configs: the six keys of the engines' GEMM files plus SGLang's sm90 keys, the
search space and SGLang's default.

SGLang 0.5.23 (`sglang/kernels/ops/gemm/fp8_kernel.py`, `w8a8_block_fp8_matmul_triton`): a config with
`SWAP_AB: true` or `SPLIT_K > 1` selects its Hopper kernel on sm90 (MMA transposed so the weight tile fills the
MMA's M at small M; split-K with fp32 partials reduced afterwards; SPLIT_K a power of two). Without a file it
runs `{BLOCK_SIZE_M 64, BLOCK_SIZE_N bn, BLOCK_SIZE_K bk, GROUP_SIZE_M 32, num_warps 4, num_stages 3}`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from tuner.kernels.base import KernelConfig

BLOCK_M = (16, 32, 64, 128)
BLOCK_N = (32, 64, 128)
GROUP_M = (1, 16, 32, 64)
WARPS = (4, 8)
STAGES = (2, 3, 4, 5)
SPLIT_K = (1, 2, 4, 8, 16)


@dataclass(frozen=True, order=True)
class GemmConfig:
    """One GEMM launch config: `base` (the six file keys) plus SGLang's sm90 `SWAP_AB` and `SPLIT_K`."""

    base: KernelConfig
    swap_ab: bool = False
    split_k: int = 1

    def __post_init__(self) -> None:
        if self.split_k < 1 or self.split_k & (self.split_k - 1):
            raise ValueError(f"SPLIT_K must be a power of two, got {self.split_k}")

    @property
    def hopper(self) -> bool:
        """Whether SGLang runs its sm90 variant for this config."""
        return self.swap_ab or self.split_k > 1

    def to_json_dict(self) -> dict[str, Any]:
        """The entry of an engine GEMM file, keys in the order SGLang's tuner writes them."""
        data: dict[str, Any] = dict(self.base.to_json_dict())
        if self.swap_ab:
            data["SWAP_AB"] = True
        if self.split_k > 1:
            data["SPLIT_K"] = self.split_k
        return data

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> GemmConfig:
        return cls(KernelConfig.from_json_dict(data), bool(data.get("SWAP_AB", False)), int(data.get("SPLIT_K", 1)))

    @property
    def key(self) -> str:
        """'M64_N128_K128_G32_w4_s3' plus '_swap' and '_k<n>' where set (a database key)."""
        return self.base.key + ("_swap" if self.swap_ab else "") + (f"_k{self.split_k}" if self.split_k > 1 else "")

    @classmethod
    def from_key(cls, key: str) -> GemmConfig:
        parts = key.split("_")
        split = int(parts.pop()[1:]) if parts[-1].startswith("k") and parts[-1][1:].isdigit() else 1
        swap = parts[-1] == "swap"
        if swap:
            parts.pop()
        return cls(KernelConfig.from_key("_".join(parts)), swap, split)


def default_config(block_shape: tuple[int, int]) -> GemmConfig:
    """SGLang 0.5.23's config when no file exists, for every M."""
    return GemmConfig(KernelConfig(64, block_shape[0], block_shape[1], 32, 4, 3))


def gemm_space(block_shape: tuple[int, int], hopper: bool) -> list[GemmConfig]:
    """SGLang's tuner space for the block GEMM (BLOCK_SIZE_K = bk, so one scale pair per K tile) and, on sm90
    (`hopper`), its SWAP_AB / SPLIT_K variants."""
    bk = block_shape[1]
    configs = [GemmConfig(KernelConfig(m, n, bk, g, w, s))
               for m, n, g, w, s in itertools.product(BLOCK_M, BLOCK_N, GROUP_M, WARPS, STAGES)]
    if hopper:
        configs += [GemmConfig(c.base, swap, split) for c in configs for swap, split in
                    itertools.product((False, True), SPLIT_K) if swap or split > 1]
    return configs
