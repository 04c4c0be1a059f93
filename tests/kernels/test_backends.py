"""The kernel-source choice: the engine's own fused_experts (a fake sglang module here) under override_config."""

import contextlib
import sys
import types

import pytest
import torch

from tuner.errors import TunerError
from tuner.kernels.backends import EngineBackend, TunerBackend, get_backend
from tuner.kernels.base import KernelConfig, MoeShape, Quant
from tuner.kernels.fused_moe import MoeWeights


@pytest.fixture
def fake_sglang(monkeypatch):
    calls = []
    active = []

    @contextlib.contextmanager
    def override_config(config):
        active.append(config)
        yield
        active.pop()

    def fused_experts(x, w1, w2, topk_weights, topk_ids, **kwargs):
        calls.append({"config": dict(active[-1]) if active else None, **kwargs})
        return torch.zeros_like(x)

    pkg = types.ModuleType("sglang")
    pkg.__version__ = "0.5.23"
    triton_pkg = types.ModuleType("sglang.srt.layers.moe.fused_moe_triton")
    triton_pkg.override_config = override_config
    mod = types.ModuleType("sglang.srt.layers.moe.fused_moe_triton.fused_moe")
    mod.fused_experts = fused_experts
    for name in ("sglang.srt", "sglang.srt.layers", "sglang.srt.layers.moe"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "sglang", pkg)
    monkeypatch.setitem(sys.modules, "sglang.srt.layers.moe.fused_moe_triton", triton_pkg)
    monkeypatch.setitem(sys.modules, "sglang.srt.layers.moe.fused_moe_triton.fused_moe", mod)
    return calls


def _weights():
    return MoeWeights(torch.zeros(2, 8, 4), torch.zeros(2, 4, 4), torch.ones(2, 8), torch.ones(2, 4))


def test_engine_kernel_is_the_default_when_importable(fake_sglang):
    backend = get_backend(None)
    assert isinstance(backend, EngineBackend) and backend.name == "sglang"
    assert backend.version == "sglang 0.5.23"


def test_engine_kernel_runs_under_the_candidate_config_with_per_channel_scales(fake_sglang):
    shape = MoeShape(2, 4, 4, 1, Quant.FP8_PER_CHANNEL)
    config = KernelConfig(16, 32, 64, 1, 4, 3)
    get_backend("sglang").run(torch.zeros(3, 4), _weights(), torch.ones(3, 1), torch.zeros(3, 1, dtype=torch.int32),
                              shape, config)
    (call,) = fake_sglang
    assert call["config"] == config.to_json_dict()
    assert call["use_fp8_w8a8"] is True and call["per_channel_quant"] is True
    assert "block_shape" not in call


def test_block_quant_passes_the_block_shape(fake_sglang):
    shape = MoeShape(2, 128, 128, 1, Quant.FP8_BLOCK, block_shape=(128, 128))
    get_backend("sglang").run(torch.zeros(1, 4), _weights(), torch.ones(1, 1), torch.zeros(1, 1, dtype=torch.int32),
                              shape, KernelConfig(16, 32, 64, 1, 4, 3))
    assert fake_sglang[0]["block_shape"] == [128, 128]
    assert "per_channel_quant" not in fake_sglang[0]


def test_without_engines_ours_is_used_and_asking_for_one_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sglang", None)
    monkeypatch.setitem(sys.modules, "vllm", None)
    assert isinstance(get_backend(None), TunerBackend)
    with pytest.raises(TunerError, match="not importable"):
        get_backend("vllm")
    with pytest.raises(TunerError, match="unknown --kernel-source"):
        get_backend("tensorrt")
