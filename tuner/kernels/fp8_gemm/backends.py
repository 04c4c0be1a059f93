"""Whose block-FP8 GEMM is timed: the engine's own `w8a8_block_fp8_matmul_triton` (the truth), or ours.

SGLang reads GEMM config files only from its installed package folder (`sglang/kernels/ops/gemm/configs/` in
0.5.23; no environment variable), through `get_w8a8_block_fp8_configs(N, K, bn, bk)`, which the matmul looks
up by module global on every call. A candidate therefore reaches SGLang's kernel by standing in for that lookup
while the call runs (`{M: candidate}`); everything after the lookup (nearest M, the sm90 SWAP_AB / SPLIT_K
variant, the split-K reduction) is SGLang's own. What the engine runs today comes from the real lookup.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from tuner.errors import TunerError
from tuner.kernels.base import nearest_entry
from tuner.kernels.fp8_gemm.kernel import block_fp8_gemm
from tuner.kernels.fp8_gemm.space import GemmConfig, default_config

# Newest first: SGLang 0.5.23 (its wheel, kernels.md), then the path older SGLang releases used.
SGLANG_GEMM_MODULES = ("sglang.kernels.ops.gemm.fp8_kernel", "sglang.srt.layers.quantization.fp8_kernel")
LOOKUP = "get_w8a8_block_fp8_configs"
MATMUL = "w8a8_block_fp8_matmul_triton"


@dataclass(frozen=True)
class GemmChoice:
    """What the engine runs for (N, K) at one M before tuning; `source` names the file or says 'default'."""

    config: GemmConfig
    source: str


@dataclass(frozen=True)
class TunerGemmBackend:
    name: str = "tuner"
    version: str = "tuner-fp8-gemm-v1"
    hopper_keys: bool = False  # our kernel has no SWAP_AB / SPLIT_K variant
    proxy_for: str | None = None

    def run(self, a: torch.Tensor, a_scale: torch.Tensor, b: torch.Tensor, b_scale: torch.Tensor,
            block_shape: tuple[int, int], config: GemmConfig) -> torch.Tensor:
        if config.hopper:
            raise ValueError(f"SWAP_AB / SPLIT_K are SGLang's sm90 variant; tuner's own GEMM has none ({config.key})")
        return block_fp8_gemm(a, a_scale, b, b_scale, block_shape, config.base)

    def engine_choice(self, n: int, k: int, block_shape: tuple[int, int], m: int) -> GemmChoice:
        return GemmChoice(default_config(block_shape), "default (SGLang's, engine not importable)")

    def config_folder(self) -> Path | None:
        return None


@dataclass
class SglangGemmBackend:
    module: ModuleType
    version: str
    name: str = "sglang"
    proxy_for: str | None = None

    @property
    def hopper_keys(self) -> bool:
        """SWAP_AB / SPLIT_K select a different kernel only on sm90."""
        return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)

    @contextlib.contextmanager
    def _serving(self, config: GemmConfig, m: int) -> Iterator[None]:
        real = getattr(self.module, LOOKUP)

        @functools.lru_cache
        def candidate(n: int, k: int, bn: int, bk: int) -> dict[int, dict[str, Any]]:
            return {m: config.to_json_dict()}

        setattr(self.module, LOOKUP, candidate)
        try:
            yield
        finally:
            setattr(self.module, LOOKUP, real)

    def run(self, a: torch.Tensor, a_scale: torch.Tensor, b: torch.Tensor, b_scale: torch.Tensor,
            block_shape: tuple[int, int], config: GemmConfig) -> torch.Tensor:
        with self._serving(config, a.shape[0]):
            return getattr(self.module, MATMUL)(a, b, a_scale, b_scale, list(block_shape), torch.bfloat16)

    def engine_choice(self, n: int, k: int, block_shape: tuple[int, int], m: int) -> GemmChoice:
        lookup = getattr(self.module, LOOKUP)
        if hasattr(lookup, "cache_clear"):
            lookup.cache_clear()
        table = lookup(n, k, block_shape[0], block_shape[1])
        if not table:
            return GemmChoice(default_config(block_shape), "default")
        return GemmChoice(GemmConfig.from_json_dict(nearest_entry(table, m)), "shipped file")

    def config_folder(self) -> Path | None:
        """Where SGLang reads (and `tuner export --install` writes) GEMM config files."""
        return Path(os.path.realpath(self.module.__file__ or "")).parent / "configs"


def load_sglang_gemm(import_module: Callable[[str], ModuleType] = importlib.import_module) -> SglangGemmBackend | None:
    for name in SGLANG_GEMM_MODULES:
        try:
            module = import_module(name)
        except ImportError:
            continue
        if hasattr(module, MATMUL) and hasattr(module, LOOKUP):
            try:
                version = str(import_module("sglang").__version__)
            except (ImportError, AttributeError):
                version = "unknown"
            return SglangGemmBackend(module, f"sglang {version}")
    return None


def get_gemm_backend(name: str | None) -> Any:
    """'auto'/None: SGLang's GEMM when importable, else ours as a proxy; 'tuner' ours; 'sglang' requires it."""
    if name in (None, "auto"):
        return load_sglang_gemm() or TunerGemmBackend(proxy_for="sglang")
    if name == "tuner":
        return TunerGemmBackend()
    if name == "sglang":
        backend = load_sglang_gemm()
        if backend is None:
            raise TunerError("--kernel-source sglang: SGLang's block-FP8 GEMM (w8a8_block_fp8_matmul_triton) is not "
                             "importable here; install sglang or use --kernel-source tuner")
        return backend
    raise TunerError(f"unknown --kernel-source {name!r} for the FP8 GEMM; choose auto, tuner or sglang")
