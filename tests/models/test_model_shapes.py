"""Shape derivation: the worked examples of kernels.md for every catalog model, EP, fusion, quant, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuner.errors import ModelConfigError
from tuner.export.naming import sglang_moe_file_name, vllm_moe_file_name
from tuner.kernels.base import MoeShape, Quant
from tuner.models.builtin import find_catalog_entry
from tuner.models.config import load_model_config
from tuner.models.fusion import FusionDevice
from tuner.models.shapes import (
    default_shared_experts_fusion,
    derive_moe_shape,
    dtype_label,
    shared_experts_fusion_decision,
)

BLOCK = (128, 128)

# (model, tp, ep) -> (E, N, K, top_k, fused, quant, block_shape)
WORKED = [
    ("GLM-4.5", 8, 1, (161, 192, 5120, 8, 1, Quant.BF16, None)),
    ("GLM-4.6", 8, 1, (161, 192, 5120, 8, 1, Quant.BF16, None)),
    ("GLM-4.7", 8, 1, (161, 192, 5120, 8, 1, Quant.BF16, None)),
    ("GLM-4.5-FP8", 8, 1, (161, 192, 5120, 8, 1, Quant.FP8_PER_CHANNEL, None)),
    ("GLM-4.6-FP8", 8, 1, (161, 192, 5120, 8, 1, Quant.FP8_PER_CHANNEL, None)),
    ("GLM-4.7-FP8", 8, 1, (161, 192, 5120, 8, 1, Quant.FP8_PER_CHANNEL, None)),
    ("GLM-4.7-FP8", 4, 1, (161, 384, 5120, 8, 1, Quant.FP8_PER_CHANNEL, None)),
    ("GLM-4.5-Air", 4, 1, (129, 352, 4096, 8, 1, Quant.BF16, None)),
    ("GLM-4.5-Air-FP8", 4, 1, (129, 352, 4096, 8, 1, Quant.FP8_PER_CHANNEL, None)),
    ("DeepSeek-V3", 8, 1, (257, 256, 7168, 8, 1, Quant.FP8_BLOCK, BLOCK)),
    ("DeepSeek-R1", 8, 1, (257, 256, 7168, 8, 1, Quant.FP8_BLOCK, BLOCK)),
    ("DeepSeek-V3", 16, 1, (257, 128, 7168, 8, 1, Quant.FP8_BLOCK, BLOCK)),
    # DeepseekV3 architecture, but 384 routed experts in block FP8: SGLang 0.5.23 does not fuse it
    ("Kimi-K2-Instruct", 8, 1, (384, 256, 7168, 8, 0, Quant.FP8_BLOCK, BLOCK)),
    ("Qwen3-235B-A22B", 4, 1, (128, 384, 4096, 8, 0, Quant.BF16, None)),
    ("Qwen3-235B-A22B-FP8", 4, 1, (128, 384, 4096, 8, 0, Quant.FP8_BLOCK, BLOCK)),
    ("Qwen3-30B-A3B", 1, 1, (128, 768, 2048, 8, 0, Quant.BF16, None)),
    ("Qwen3-30B-A3B-FP8", 2, 1, (128, 384, 2048, 8, 0, Quant.FP8_BLOCK, BLOCK)),
    ("Mixtral-8x7B-v0.1", 2, 1, (8, 7168, 4096, 2, 0, Quant.BF16, None)),
    # expert parallelism: experts split by ep, N by tp/ep; on NVIDIA both GLM and DeepSeek drop fusion under EP
    ("GLM-4.7-FP8", 8, 2, (80, 384, 5120, 8, 0, Quant.FP8_PER_CHANNEL, None)),
    ("GLM-4.7-FP8", 8, 8, (20, 1536, 5120, 8, 0, Quant.FP8_PER_CHANNEL, None)),
    ("DeepSeek-V3", 8, 8, (32, 2048, 7168, 8, 0, Quant.FP8_BLOCK, BLOCK)),
    ("Qwen3-235B-A22B", 8, 4, (32, 768, 4096, 8, 0, Quant.BF16, None)),
]


@pytest.mark.parametrize(
    ("model", "tp", "ep", "expected"), WORKED, ids=[f"{m}-tp{t}-ep{e}" for m, t, e, _ in WORKED]
)
def test_worked_examples(model, tp, ep, expected):
    shape = derive_moe_shape(load_model_config(model), tp=tp, ep=ep)
    E, N, K, top_k, fused, quant, block = expected
    assert shape == MoeShape(E, N, K, top_k, quant, block, fused)
    assert shape.runtime_top_k == top_k + fused


def test_fusion_can_be_turned_off():
    shape = derive_moe_shape(load_model_config("DeepSeek-V3"), tp=8, shared_experts_fusion=False)
    assert (shape.num_experts, shape.top_k, shape.runtime_top_k) == (256, 8, 8)
    glm = derive_moe_shape(load_model_config("GLM-4.7-FP8"), tp=8, shared_experts_fusion=False)
    assert glm.num_experts == 160 and glm.fused_shared_experts == 0


def test_explicit_fusion_equals_default_where_the_engine_fuses():
    cfg = load_model_config("GLM-4.5")
    assert derive_moe_shape(cfg, tp=8, shared_experts_fusion=True) == derive_moe_shape(cfg, tp=8)
    assert default_shared_experts_fusion(cfg) is True
    assert default_shared_experts_fusion(cfg, ep=2) is False
    assert default_shared_experts_fusion(load_model_config("Qwen3-30B-A3B")) is False


def test_fusion_on_a_model_without_shared_expert_is_an_error():
    with pytest.raises(ModelConfigError, match="no shared expert"):
        derive_moe_shape(load_model_config("Qwen3-235B-A22B"), tp=4, shared_experts_fusion=True)
    with pytest.raises(ModelConfigError, match="no shared expert"):
        derive_moe_shape(load_model_config("Mixtral-8x7B-v0.1"), shared_experts_fusion=True)


def test_kimi_k2_is_not_fused_and_names_the_file_sglang_ships():
    cfg = load_model_config("Kimi-K2-Instruct")
    shape = derive_moe_shape(cfg, tp=8)
    assert (shape.num_experts, shape.runtime_top_k) == (384, 8)
    assert sglang_moe_file_name(shape, "NVIDIA H200") == (
        "E=384,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128, 128].json"
    )
    assert "Quark" in shared_experts_fusion_decision(cfg).reason


def test_asking_for_fusion_is_sglangs_enforce_flag_for_deepseek_class_models():
    # --enforce-shared-experts-fusion skips the expert-count, GPU and EP checks of DeepseekV3ForCausalLM
    assert derive_moe_shape(load_model_config("Kimi-K2-Instruct"), tp=8, shared_experts_fusion=True).num_experts == 385
    assert derive_moe_shape(load_model_config("DeepSeek-V3"), tp=8, ep=8, shared_experts_fusion=True).num_experts == 33


@pytest.mark.parametrize(
    ("model", "ep", "device_name", "fused"),
    [
        ("DeepSeek-V3", 1, "NVIDIA H100 80GB HBM3", True),
        ("DeepSeek-V3", 8, "NVIDIA H200", False),  # EP turns it off on NVIDIA
        ("DeepSeek-V3", 8, "AMD Instinct MI300X", True),  # but not on MI300-series
        ("DeepSeek-V3", 1, "AMD Instinct MI250X", False),  # below gfx942
        ("GLM-4.7-FP8", 1, "Tesla V100-SXM2-32GB", False),  # below sm80
        ("GLM-4.7-FP8", 4, "AMD Instinct MI325X", True),
        ("GLM-4.7-FP8", 4, "NVIDIA H200", False),
    ],
)
def test_default_fusion_follows_the_gpu_and_ep(model, ep, device_name, fused):
    device = FusionDevice.from_device_name(device_name)
    assert default_shared_experts_fusion(load_model_config(model), ep=ep, device=device) is fused


def test_deepseek_v2_architecture_is_not_fused_even_with_v3_numbers(tmp_path):
    raw = _catalog_raw("DeepSeek-V3")
    raw["architectures"] = ["DeepseekV2ForCausalLM"]
    decision = shared_experts_fusion_decision(load_model_config(str(_write(tmp_path, raw))))
    assert decision.fused_shared_experts == 0 and "DeepseekV2ForCausalLM" in decision.reason


def test_glm45v_fuses_on_cuda_without_ep_only(tmp_path):
    text = dict(_catalog_raw("GLM-4.5-Air"), model_type="glm4v_moe_text")
    raw = {"architectures": ["Glm4vMoeForConditionalGeneration"], "model_type": "glm4v_moe", "text_config": text}
    cfg = load_model_config(str(_write(tmp_path, raw)))
    assert derive_moe_shape(cfg, tp=4).num_experts == 129
    assert derive_moe_shape(cfg, tp=4, ep=2).num_experts == 64
    assert not default_shared_experts_fusion(cfg, device=FusionDevice.from_device_name("AMD Instinct MI300X"))


def test_glm_fusion_with_expert_parallelism_is_refused():
    with pytest.raises(ModelConfigError, match="expert parallelism"):
        derive_moe_shape(load_model_config("GLM-4.7-FP8"), tp=8, ep=2, shared_experts_fusion=True)


@pytest.mark.parametrize(
    ("tp", "ep", "pattern"),
    [
        (0, 1, "--tp must be a positive integer"),
        (8, 0, "--ep must be a positive integer"),
        (-2, 1, "--tp must be a positive integer"),
        (8, 3, "not divisible by --ep 3"),
        (7, 1, "not divisible by tp/ep"),
    ],
)
def test_parallelism_validation(tp, ep, pattern):
    with pytest.raises(ModelConfigError, match=pattern):
        derive_moe_shape(load_model_config("GLM-4.5"), tp=tp, ep=ep)


def test_experts_not_divisible_by_ep():
    with pytest.raises(ModelConfigError, match="160 routed experts .* ep=3"):
        derive_moe_shape(load_model_config("GLM-4.5"), tp=6, ep=3)


def test_block_fp8_layout_the_engines_refuse():
    # Qwen3-235B-A22B-FP8 at TP8: N = 192 is not a multiple of the 128-wide weight block
    with pytest.raises(ModelConfigError, match="N=192"):
        derive_moe_shape(load_model_config("Qwen3-235B-A22B-FP8"), tp=8)


def test_dtype_labels():
    assert dtype_label(derive_moe_shape(load_model_config("GLM-4.7"), tp=8)) == "bf16"
    assert dtype_label(derive_moe_shape(load_model_config("GLM-4.7-FP8"), tp=8)) == "fp8_w8a8_per_channel"
    assert dtype_label(derive_moe_shape(load_model_config("DeepSeek-V3"), tp=8)) == "fp8_w8a8_block128x128"


# --- hand-written configs ----------------------------------------------------------------------------------


def _catalog_raw(name: str) -> dict:
    return json.loads(find_catalog_entry(name).read_bytes())


def _write(tmp_path: Path, data: dict, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "field", ["hidden_size", "moe_intermediate_size", "n_routed_experts", "num_experts_per_tok"]
)
def test_missing_required_field_names_field_and_file(tmp_path, field):
    raw = _catalog_raw("GLM-4.5")
    del raw[field]
    path = _write(tmp_path, raw)
    with pytest.raises(ModelConfigError) as info:
        derive_moe_shape(load_model_config(str(path)))
    assert repr(field) in str(info.value) and str(path) in str(info.value)


def test_mixtral_needs_intermediate_size(tmp_path):
    raw = _catalog_raw("Mixtral-8x7B-v0.1")
    del raw["intermediate_size"]
    with pytest.raises(ModelConfigError, match="'intermediate_size'"):
        derive_moe_shape(load_model_config(str(_write(tmp_path, raw))))


def test_non_integer_field_is_reported(tmp_path):
    raw = _catalog_raw("GLM-4.5")
    raw["moe_intermediate_size"] = "1536"
    with pytest.raises(ModelConfigError, match="must be a positive integer"):
        derive_moe_shape(load_model_config(str(_write(tmp_path, raw))))


def test_two_shared_experts_cannot_be_fused(tmp_path):
    raw = _catalog_raw("DeepSeek-V3")
    raw["n_shared_experts"] = 2
    cfg = load_model_config(str(_write(tmp_path, raw)))
    assert derive_moe_shape(cfg, tp=8).num_experts == 256  # the engine does not fuse by default
    with pytest.raises(ModelConfigError, match="2 shared experts"):
        derive_moe_shape(cfg, tp=8, shared_experts_fusion=True)


def test_vl_model_reads_text_config(tmp_path):
    text = {k: v for k, v in _catalog_raw("Qwen3-30B-A3B").items() if k != "architectures"}
    text["model_type"] = "qwen3_vl_moe_text"
    raw = {
        "architectures": ["Qwen3VLMoeForConditionalGeneration"],
        "model_type": "qwen3_vl_moe",
        "text_config": text,
        "vision_config": {"hidden_size": 1152},
    }
    shape = derive_moe_shape(load_model_config(str(_write(tmp_path, raw))), tp=2)
    assert (shape.num_experts, shape.intermediate_size, shape.hidden_size) == (128, 384, 2048)


def test_vl_missing_field_says_text_config(tmp_path):
    text = dict(_catalog_raw("Qwen3-30B-A3B"))
    del text["hidden_size"]
    raw = {"architectures": ["Qwen3VLMoeForConditionalGeneration"], "text_config": text}
    with pytest.raises(ModelConfigError, match="in text_config"):
        derive_moe_shape(load_model_config(str(_write(tmp_path, raw))))


def _with_quant(tmp_path: Path, quantization_config: dict) -> Path:
    raw = _catalog_raw("GLM-4.5")
    raw["quantization_config"] = quantization_config
    return _write(tmp_path, raw)


def test_compressed_tensors_block_fp8(tmp_path):
    qc = json.loads(json.dumps(_catalog_raw("GLM-4.5-FP8")["quantization_config"]))
    qc["config_groups"]["group_0"]["weights"].update(strategy="block", block_structure=[128, 128])
    shape = derive_moe_shape(load_model_config(str(_with_quant(tmp_path, qc))), tp=4)
    assert (shape.quant, shape.block_shape, shape.intermediate_size) == (Quant.FP8_BLOCK, (128, 128), 384)


@pytest.mark.parametrize(
    ("qc", "pattern"),
    [
        ({"quant_method": "fp8", "activation_scheme": "dynamic"}, "per-tensor FP8"),
        ({"quant_method": "awq", "bits": 4}, "'awq' is not supported"),
        ({"quant_method": "gptq", "bits": 4}, "'gptq' is not supported"),
        ({"quant_method": "fp8", "weight_block_size": [128]}, "two positive integers"),
        (
            {
                "quant_method": "compressed-tensors",
                "config_groups": {
                    "group_0": {
                        "weights": {"num_bits": 8, "type": "int", "strategy": "channel"},
                        "input_activations": {"num_bits": 8, "type": "int", "strategy": "token"},
                    }
                },
            },
            "type 'int'",
        ),
        (
            {
                "quant_method": "compressed-tensors",
                "config_groups": {
                    "group_0": {
                        "weights": {"num_bits": 8, "type": "float", "strategy": "tensor"},
                        "input_activations": {"num_bits": 8, "type": "float", "strategy": "tensor"},
                    }
                },
            },
            "strategy 'tensor'",
        ),
        (
            {
                "quant_method": "compressed-tensors",
                "config_groups": {
                    "group_0": {"weights": {"num_bits": 8, "type": "float", "strategy": "channel"}}
                },
            },
            "weight-only FP8",
        ),
        ({"quant_method": "compressed-tensors"}, "lacks config_groups"),
    ],
)
def test_unsupported_quantization_names_what_is_unsupported(tmp_path, qc, pattern):
    with pytest.raises(ModelConfigError, match=pattern):
        derive_moe_shape(load_model_config(str(_with_quant(tmp_path, qc))), tp=8)


def _qwen3_omni_config() -> dict:
    thinker_text = {
        "model_type": "qwen3_omni_moe_text", "hidden_size": 2048, "intermediate_size": 768,
        "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8, "num_hidden_layers": 48,
    }
    return {
        "architectures": ["Qwen3OmniMoeForConditionalGeneration"],
        "model_type": "qwen3_omni_moe",
        "thinker_config": {
            "model_type": "qwen3_omni_moe_thinker",
            "audio_config": {"d_model": 1280, "num_hidden_layers": 32},
            "vision_config": {"hidden_size": 1152, "depth": 27},
            "text_config": thinker_text,
        },
        # the speech talker is a second, smaller MoE that the engines do not serve as the language model
        "talker_config": {"text_config": {"hidden_size": 1024, "moe_intermediate_size": 384, "num_experts": 128,
                                          "num_experts_per_tok": 6}},
    }


def test_qwen3_omni_reads_the_thinkers_text_config(tmp_path):
    cfg = load_model_config(str(_write(tmp_path, _qwen3_omni_config())))
    shape = derive_moe_shape(cfg)
    assert (shape.num_experts, shape.intermediate_size, shape.hidden_size, shape.top_k) == (128, 768, 2048, 8)
    assert vllm_moe_file_name(shape, "NVIDIA H200") == "E=128,N=768,device_name=NVIDIA_H200.json"


def test_missing_field_names_the_nested_section(tmp_path):
    raw = _qwen3_omni_config()
    del raw["thinker_config"]["text_config"]["hidden_size"]
    with pytest.raises(ModelConfigError, match=r"in thinker_config\.text_config.*'hidden_size'"):
        derive_moe_shape(load_model_config(str(_write(tmp_path, raw))))


@pytest.mark.parametrize(
    "raw",
    [
        {"architectures": ["Llama4ForConditionalGeneration"], "model_type": "llama4",
         "text_config": {"num_local_experts": 16, "hidden_size": 5120}, "vision_config": {"hidden_size": 1408}},
        {"architectures": ["FancyOmniForConditionalGeneration"],
         "brain_config": {"text_config": {"num_experts": 64, "hidden_size": 2048}}},
    ],
    ids=["llama4-text_config", "two-levels-deep"],
)
def test_unknown_composite_moe_says_which_architecture_is_unsupported_never_dense(tmp_path, raw):
    with pytest.raises(ModelConfigError) as info:
        load_model_config(str(_write(tmp_path, raw)))
    message = str(info.value)
    assert f"architecture {raw['architectures'][0]} is not supported" in message
    assert "dense" not in message and "Qwen3OmniMoeForConditionalGeneration" in message
