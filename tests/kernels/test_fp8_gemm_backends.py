"""Candidates reach SGLang's block-FP8 GEMM through its own lookup's place (a fake module laid out and called
as SGLang 0.5.23's `sglang.kernels.ops.gemm.fp8_kernel` is); the engine's current choice is its real lookup."""

import functools
import sys
import types

import pytest
import torch

from tuner.errors import TunerError
from tuner.kernels.base import KernelConfig
from tuner.kernels.fp8_gemm.backends import TunerGemmBackend, get_gemm_backend, load_sglang_gemm
from tuner.kernels.fp8_gemm.space import GemmConfig, default_config

SHIPPED = {1: {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1, "num_warps": 4,
               "num_stages": 4, "SWAP_AB": True, "SPLIT_K": 4},
           256: {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 32, "num_warps": 4,
                 "num_stages": 3}}


@pytest.fixture
def fake_sglang_gemm(monkeypatch):
    module = types.ModuleType("sglang.kernels.ops.gemm.fp8_kernel")
    module.__file__ = "/nonexistent/sglang/kernels/ops/gemm/fp8_kernel.py"
    launched = []

    @functools.lru_cache
    def get_w8a8_block_fp8_configs(n, k, bn, bk):
        return dict(SHIPPED) if (n, k) == (576, 7168) else None

    def w8a8_block_fp8_matmul_triton(a, b, a_s, b_s, block_size, output_dtype=torch.float16):
        configs = module.get_w8a8_block_fp8_configs(b.shape[0], b.shape[1], *block_size)  # looked up per call
        m = a.shape[0]
        launched.append(configs[min(configs, key=lambda x: abs(x - m))] if configs else "default")
        return torch.zeros((m, b.shape[0]), dtype=output_dtype)

    module.get_w8a8_block_fp8_configs = get_w8a8_block_fp8_configs
    module.w8a8_block_fp8_matmul_triton = w8a8_block_fp8_matmul_triton
    sglang = types.ModuleType("sglang")
    sglang.__version__ = "0.5.23"
    monkeypatch.setitem(sys.modules, "sglang", sglang)
    monkeypatch.setitem(sys.modules, "sglang.kernels.ops.gemm.fp8_kernel", module)
    return launched


def _operands(m=3, n=576, k=7168):
    return torch.zeros(m, k), torch.ones(m, k // 128), torch.zeros(n, k), torch.ones((n + 127) // 128, k // 128)


def test_candidates_reach_sglangs_gemm_and_the_real_lookup_comes_back(fake_sglang_gemm):
    backend = get_gemm_backend(None)
    assert backend.name == "sglang" and backend.version == "sglang 0.5.23"
    candidate = GemmConfig(KernelConfig(32, 64, 128, 16, 4, 2), swap_ab=True, split_k=2)
    backend.run(*_operands(), (128, 128), candidate)
    assert fake_sglang_gemm[-1] == candidate.to_json_dict()  # with its Hopper keys, as a file would carry them
    # after the call, the engine's own lookup is back: its choice is the shipped entry nearest M
    assert backend.engine_choice(576, 7168, (128, 128), 3).config == GemmConfig.from_json_dict(SHIPPED[1])
    assert backend.engine_choice(576, 7168, (128, 128), 200).config == GemmConfig.from_json_dict(SHIPPED[256])
    no_file = backend.engine_choice(4096, 512, (128, 128), 1)
    assert (no_file.config, no_file.source) == (default_config((128, 128)), "default")
    assert str(backend.config_folder()).endswith("sglang/kernels/ops/gemm/configs")


def test_without_sglang_ours_is_a_proxy_and_refuses_hopper_keys(monkeypatch):
    monkeypatch.setitem(sys.modules, "sglang", None)
    assert load_sglang_gemm() is None
    backend = get_gemm_backend("auto")
    assert isinstance(backend, TunerGemmBackend) and backend.proxy_for == "sglang"
    with pytest.raises(ValueError, match="sm90 variant"):
        backend.run(*_operands(1, 128, 256), (128, 128), GemmConfig(KernelConfig(16, 32, 128, 1, 4, 2), True))
    with pytest.raises(TunerError, match="not importable"):
        get_gemm_backend("sglang")
