"""Loading a model config from a file, a folder or the catalog, and the errors a user sees when it goes wrong."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tuner.errors import ModelConfigError
from tuner.models.builtin import find_catalog_entry
from tuner.models.config import load_model_config


def _glm_bytes() -> bytes:
    return find_catalog_entry("zai-org/GLM-4.5").read_bytes()


def test_load_from_file_folder_and_catalog_agree(tmp_path):
    folder = tmp_path / "GLM-4.5-local"
    folder.mkdir()
    (folder / "config.json").write_bytes(_glm_bytes())
    from_folder = load_model_config(str(folder))
    from_file = load_model_config(folder / "config.json")
    from_catalog = load_model_config("GLM-4.5")
    assert from_folder.raw == from_file.raw == from_catalog.raw
    assert from_folder.name == from_file.name == "GLM-4.5-local"
    assert from_file.source == str(folder / "config.json")
    assert from_catalog.name == "zai-org/GLM-4.5" and from_catalog.source.startswith(
        "catalog:zai-org/GLM-4.5"
    )


def test_file_not_named_config_json_is_named_after_its_stem(tmp_path):
    path = tmp_path / "my-glm.json"
    path.write_bytes(_glm_bytes())
    assert load_model_config(str(path)).name == "my-glm"


def test_model_config_is_immutable():
    cfg = load_model_config("GLM-4.5")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.raw["hidden_size"] = 1  # type: ignore[index]


def test_existing_local_folder_wins_over_catalog_name(tmp_path, monkeypatch):
    local = tmp_path / "zai-org" / "GLM-4.7-FP8"
    local.mkdir(parents=True)
    (local / "config.json").write_bytes(find_catalog_entry("Mixtral-8x7B-v0.1").read_bytes())
    monkeypatch.chdir(tmp_path)
    assert load_model_config("zai-org/GLM-4.7-FP8").raw["model_type"] == "mixtral"


def test_folder_without_config_json(tmp_path):
    with pytest.raises(ModelConfigError, match="has no config.json"):
        load_model_config(str(tmp_path))


def test_missing_path_says_no_such_file(tmp_path):
    with pytest.raises(ModelConfigError, match="no such file or folder") as info:
        load_model_config(str(tmp_path / "missing" / "config.json"))
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("GLM-4.7-FP9", "zai-org/GLM-4.7-FP8"),
        ("deepseek-v4", "deepseek-ai/DeepSeek-V3"),
        ("qwen3-235b", "Qwen/Qwen3-235B-A22B"),
    ],
)
def test_unknown_name_suggests_catalog_names(typed, expected):
    with pytest.raises(ModelConfigError, match="did you mean") as info:
        load_model_config(typed)
    assert expected in str(info.value)


def test_invalid_json_gives_line_and_column(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "hidden_size": 5120,\n  "num_experts": 8\n  "oops": 1\n}\n')
    with pytest.raises(ModelConfigError) as info:
        load_model_config(str(path))
    message = str(info.value)
    assert str(path) in message and "line 4, column 3" in message


@pytest.mark.parametrize(("text", "kind"), [("[1, 2]", "array"), ('"GLM"', "string"), ("null", "null")])
def test_top_level_must_be_an_object(tmp_path, text, kind):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ModelConfigError, match=f"JSON {kind}, not an object"):
        load_model_config(str(path))


def test_dense_model_is_rejected_naming_the_fields_looked_for(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "hidden_size": 4096,
                "intermediate_size": 14336,
            }
        )
    )
    with pytest.raises(ModelConfigError) as info:
        load_model_config(str(path))
    message = str(info.value)
    for word in (
        "LlamaForCausalLM",
        "llama",
        "n_routed_experts",
        "num_experts",
        "num_local_experts",
        "dense",
    ):
        assert word in message


def test_unknown_moe_architecture_lists_supported_ones(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "architectures": ["FancyMoeForCausalLM"],
                "model_type": "fancy_moe",
                "num_experts": 64,
                "hidden_size": 2048,
            }
        )
    )
    with pytest.raises(ModelConfigError) as info:
        load_model_config(str(path))
    message = str(info.value)
    assert (
        "FancyMoeForCausalLM" in message
        and "Glm4MoeForCausalLM" in message
        and "DeepseekV3ForCausalLM" in message
    )


def test_model_type_alone_identifies_the_family(tmp_path):
    raw = json.loads(_glm_bytes())
    del raw["architectures"]
    path = Path(tmp_path / "config.json")
    path.write_text(json.dumps(raw))
    assert load_model_config(str(path)).family.name == "glm4_moe"


def test_empty_spec():
    with pytest.raises(ModelConfigError, match="no model given"):
        load_model_config("  ")


def test_a_name_longer_than_a_file_name_is_one_clear_error_not_an_os_error(capsys):
    from tuner.cli import main

    name = "a-very-long-model-name-" * 15  # ~345 characters: more than a file name can be (ENAMETOOLONG)
    with pytest.raises(ModelConfigError, match="neither a file, a folder, nor a catalog name") as info:
        load_model_config(name)
    assert "\n" not in str(info.value) and "characters" in str(info.value)
    assert main(["models", "shape", name, "--tp", "8"]) == 2
    err = capsys.readouterr().err
    assert "neither a file, a folder, nor a catalog name" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
