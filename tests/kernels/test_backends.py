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


def _recording_override(active: list):
    """A stand-in for the engine's override_config: the config in force is active[-1]."""

    @contextlib.contextmanager
    def override_config(config):
        active.append(config)
        yield
        active.pop()

    return override_config


@pytest.fixture
def fake_sglang(monkeypatch):
    calls = []
    active = []

    override_config = _recording_override(active)

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


# ---- the entry points as the engines' 2025+ releases shape them (signatures as documented, bodies fake) ----


@pytest.fixture
def fake_sglang_runner_api(monkeypatch):
    """SGLang >= 0.5: fused_experts(x, w1, w2, topk_output, moe_runner_config, ...)."""
    import dataclasses
    from typing import NamedTuple

    calls = []
    active = []

    override_config = _recording_override(active)

    class StandardTopKOutput(NamedTuple):
        topk_weights: torch.Tensor
        topk_ids: torch.Tensor
        router_logits: torch.Tensor

    @dataclasses.dataclass
    class MoeRunnerConfig:
        num_experts: int | None = None
        num_local_experts: int | None = None
        hidden_size: int | None = None
        intermediate_size_per_partition: int | None = None
        top_k: int | None = None
        activation: str = "silu"
        inplace: bool = True

    def fused_experts(hidden_states, w1, w2, topk_output, moe_runner_config, b1=None, b2=None,
                      use_fp8_w8a8=False, per_channel_quant=False, w1_scale=None, w2_scale=None, block_shape=None):
        _weights, _ids, _ = topk_output  # the engine unpacks it into three
        calls.append({"config": dict(active[-1]), "topk_output": topk_output, "runner": moe_runner_config,
                      "use_fp8_w8a8": use_fp8_w8a8, "per_channel_quant": per_channel_quant,
                      "block_shape": block_shape, "w1_scale": w1_scale})
        return torch.zeros_like(hidden_states)

    modules = {
        "sglang": types.ModuleType("sglang"),
        "sglang.srt.layers.moe.fused_moe_triton": types.ModuleType("sglang.srt.layers.moe.fused_moe_triton"),
        "sglang.srt.layers.moe.fused_moe_triton.fused_moe": types.ModuleType("f"),
        "sglang.srt.layers.moe.moe_runner": types.ModuleType("sglang.srt.layers.moe.moe_runner"),
        "sglang.srt.layers.moe.topk": types.ModuleType("sglang.srt.layers.moe.topk"),
    }
    modules["sglang"].__version__ = "0.5.9"
    modules["sglang.srt.layers.moe.fused_moe_triton"].override_config = override_config
    modules["sglang.srt.layers.moe.fused_moe_triton.fused_moe"].fused_experts = fused_experts
    modules["sglang.srt.layers.moe.moe_runner"].MoeRunnerConfig = MoeRunnerConfig
    modules["sglang.srt.layers.moe.topk"].StandardTopKOutput = StandardTopKOutput
    for name in ("sglang.srt", "sglang.srt.layers", "sglang.srt.layers.moe"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    for name, mod in modules.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setitem(sys.modules, "vllm", None)
    return calls


def test_current_sglang_gets_a_topk_output_and_a_runner_config_that_leaves_the_input_alone(fake_sglang_runner_api):
    shape = MoeShape(9, 192, 5120, 8, Quant.FP8_PER_CHANNEL, fused_shared_experts=1)
    config = KernelConfig(16, 128, 128, 1, 4, 3)
    tw, ti = torch.ones(3, 9), torch.zeros(3, 9, dtype=torch.int32)
    backend = get_backend(None)
    assert backend.style == "topk_output"
    backend.run(torch.zeros(3, 5120), _weights(), tw, ti, shape, config)
    (call,) = fake_sglang_runner_api
    assert call["config"] == config.to_json_dict()
    assert call["topk_output"].topk_weights is tw and call["topk_output"].topk_ids is ti
    runner = call["runner"]
    assert (runner.num_experts, runner.num_local_experts, runner.top_k) == (9, 9, 9)
    assert (runner.hidden_size, runner.intermediate_size_per_partition) == (5120, 192)
    assert runner.inplace is False  # timing replays reuse the inputs
    assert call["use_fp8_w8a8"] is True and call["per_channel_quant"] is True and call["block_shape"] is None


@pytest.fixture
def fake_vllm_quant_config_api(monkeypatch):
    """vLLM >= 0.11: fused_experts(x, w1, w2, topk_weights, topk_ids, activation, quant_config, ...)."""
    calls = []
    active = []

    override_config = _recording_override(active)

    def fp8_w8a8_moe_quant_config(w1_scale, w2_scale, a1_scale=None, a2_scale=None, per_act_token_quant=False,
                                  per_out_ch_quant=False, block_shape=None):
        return {"per_act_token_quant": per_act_token_quant, "per_out_ch_quant": per_out_ch_quant,
                "block_shape": block_shape, "w1_scale": w1_scale}

    def fused_experts(hidden_states, w1, w2, topk_weights, topk_ids, activation="silu", quant_config=None,
                      apply_router_weight_on_input=False, global_num_experts=-1, expert_map=None):
        calls.append({"config": dict(active[-1]), "quant_config": quant_config, "topk_ids": topk_ids})
        return torch.zeros_like(hidden_states)

    pkg = types.ModuleType("vllm")
    pkg.__version__ = "0.11.2"
    fm = types.ModuleType("vllm.model_executor.layers.fused_moe")
    fm.override_config = override_config
    fmf = types.ModuleType("vllm.model_executor.layers.fused_moe.fused_moe")
    fmf.fused_experts = fused_experts
    cfg = types.ModuleType("vllm.model_executor.layers.fused_moe.config")
    cfg.fp8_w8a8_moe_quant_config = fp8_w8a8_moe_quant_config
    for name in ("vllm.model_executor", "vllm.model_executor.layers"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    for mod in (pkg, fm, fmf, cfg):
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(sys.modules, "sglang", None)
    return calls


def test_current_vllm_gets_its_quant_config_object(fake_vllm_quant_config_api):
    backend = get_backend("vllm")
    assert backend.style == "quant_config" and backend.version == "vllm 0.11.2"
    weights = _weights()
    per_channel = MoeShape(2, 4, 4, 1, Quant.FP8_PER_CHANNEL)
    block = MoeShape(2, 128, 128, 1, Quant.FP8_BLOCK, block_shape=(128, 128))
    bf16 = MoeShape(2, 4, 4, 1, Quant.BF16)
    for shape in (per_channel, block, bf16):
        backend.run(torch.zeros(1, 4), weights, torch.ones(1, 1), torch.zeros(1, 1, dtype=torch.int32), shape,
                    KernelConfig(16, 32, 64, 1, 4, 3))
    pc, bl, plain = (c["quant_config"] for c in fake_vllm_quant_config_api)
    assert pc["per_act_token_quant"] and pc["per_out_ch_quant"] and pc["block_shape"] is None
    assert pc["w1_scale"] is weights.w1_scale
    assert bl["block_shape"] == [128, 128] and not bl["per_act_token_quant"]
    assert plain is None  # bf16: no quantization config at all


def test_an_engine_whose_new_entry_point_lacks_its_config_class_is_not_used(fake_sglang_runner_api, monkeypatch,
                                                                               caplog):
    # fused_experts wants a MoeRunnerConfig, but the module that holds it is missing: calling it with None would
    # fail every config, so the engine's kernel is not offered (auto falls back to ours, asking for it is an error)
    monkeypatch.setitem(sys.modules, "sglang.srt.layers.moe.moe_runner", types.ModuleType("empty"))
    assert isinstance(get_backend(None), TunerBackend)
    assert "MoeRunnerConfig is not importable" in caplog.text
    with pytest.raises(TunerError, match="not importable"):
        get_backend("sglang")
