"""The built-in catalog: every promised model is there, verbatim copies are intact, aliases find entries."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tuner.models.builtin import find_catalog_entry, list_catalog
from tuner.models.config import load_model_config

SHARED_HF_FIXTURES = Path("/work/shared/fixtures/hf-configs")

REQUIRED = {
    "deepseek-ai/DeepSeek-V3",
    "deepseek-ai/DeepSeek-R1",
    "Qwen/Qwen3-235B-A22B",
    "Qwen/Qwen3-235B-A22B-FP8",
    "Qwen/Qwen3-30B-A3B",
    "Qwen/Qwen3-30B-A3B-FP8",
    "mistralai/Mixtral-8x7B-v0.1",
    "moonshotai/Kimi-K2-Instruct",
    "zai-org/GLM-4.5",
    "zai-org/GLM-4.5-FP8",
    "zai-org/GLM-4.6",
    "zai-org/GLM-4.6-FP8",
    "zai-org/GLM-4.7",
    "zai-org/GLM-4.7-FP8",
    "zai-org/GLM-4.5-Air",
    "zai-org/GLM-4.5-Air-FP8",
}

CHANNEL_FP8 = {
    "quant_method": "compressed-tensors",
    "format": "float-quantized",
    "config_groups": {
        "group_0": {
            "weights": {
                "num_bits": 8,
                "type": "float",
                "strategy": "channel",
                "dynamic": False,
                "symmetric": True,
            },
            "input_activations": {
                "num_bits": 8,
                "type": "float",
                "strategy": "token",
                "dynamic": True,
                "symmetric": True,
            },
            "targets": ["Linear"],
        }
    },
    "ignore": ["lm_head"],
}


def _raw(name: str) -> dict:
    return json.loads(find_catalog_entry(name).read_bytes())


def test_catalog_lists_every_promised_model_once():
    names = [entry.name for entry in list_catalog()]
    assert len(names) == len(set(names))
    assert set(names) == REQUIRED


def test_verbatim_entries_match_their_recorded_digest():
    verbatim = [e for e in list_catalog() if e.origin == "verbatim"]
    assert len(verbatim) == 9
    for entry in verbatim:
        assert hashlib.sha256(entry.read_bytes()).hexdigest() == entry.sha256, entry.name


@pytest.mark.skipif(not SHARED_HF_FIXTURES.is_dir(), reason="shared fixtures only exist on the dev machine")
def test_verbatim_entries_are_byte_copies_of_the_shared_fixtures():
    for entry in list_catalog():
        if entry.origin == "verbatim":
            assert entry.read_bytes() == (SHARED_HF_FIXTURES / entry.file).read_bytes(), entry.name


def test_constructed_entries_say_what_they_changed_and_why():
    constructed = [e for e in list_catalog() if e.origin == "constructed"]
    assert {e.name for e in constructed} == REQUIRED - {
        e.name for e in list_catalog() if e.origin == "verbatim"
    }
    for entry in constructed:
        assert entry.derived_from == "zai-org/GLM-4.5"
        assert entry.changes and entry.notes and entry.sha256 is None


MOE_FIELDS = (
    "hidden_size",
    "moe_intermediate_size",
    "n_routed_experts",
    "n_shared_experts",
    "num_experts_per_tok",
    "num_hidden_layers",
    "first_k_dense_replace",
    "architectures",
    "model_type",
)


@pytest.mark.parametrize(
    "name", ["zai-org/GLM-4.6", "zai-org/GLM-4.7", "zai-org/GLM-4.6-FP8", "zai-org/GLM-4.7-FP8"]
)
def test_glm_46_47_share_glm45_moe_dims_with_longer_context(name):
    base, raw = _raw("zai-org/GLM-4.5"), _raw(name)
    assert {f: raw[f] for f in MOE_FIELDS} == {f: base[f] for f in MOE_FIELDS}
    assert raw["max_position_embeddings"] == 202752
    assert base["max_position_embeddings"] == 131072


def test_glm45_air_dimensions():
    raw = _raw("zai-org/GLM-4.5-Air")
    assert (
        raw["hidden_size"],
        raw["num_hidden_layers"],
        raw["n_routed_experts"],
        raw["n_shared_experts"],
        raw["moe_intermediate_size"],
        raw["num_experts_per_tok"],
        raw["first_k_dense_replace"],
    ) == (4096, 46, 128, 1, 1408, 8, 1)


@pytest.mark.parametrize("name", ["GLM-4.5-FP8", "GLM-4.6-FP8", "GLM-4.7-FP8", "GLM-4.5-Air-FP8"])
def test_glm_fp8_entries_are_channelwise_compressed_tensors(name):
    raw = _raw(name)
    assert raw["quantization_config"] == CHANNEL_FP8
    bf16 = _raw(name.removesuffix("-FP8"))
    assert {k: v for k, v in raw.items() if k != "quantization_config"} == bf16


@pytest.mark.parametrize(
    "spelling", ["zai-org/GLM-4.7-FP8", "GLM-4.7-FP8", "glm-4.7-fp8", "ZAI-ORG/glm-4.7-FP8"]
)
def test_catalog_names_match_case_insensitively(spelling):
    assert load_model_config(spelling).name == "zai-org/GLM-4.7-FP8"


def test_short_aliases_find_entries():
    assert load_model_config("DeepSeek-V3").name == "deepseek-ai/DeepSeek-V3"
    assert load_model_config("kimi-k2").name == "moonshotai/Kimi-K2-Instruct"
    assert load_model_config("Mixtral-8x7B").name == "mistralai/Mixtral-8x7B-v0.1"
    # a shorter name must not pick a longer one by prefix
    assert load_model_config("glm-4.5").name == "zai-org/GLM-4.5"
