"""Search spaces: presets and YAML files, what is rejected before any launch (and why), the coupling rules
every candidate goes through, conditional parameters, and grids."""

from __future__ import annotations

import optuna
import pytest

from tuner.errors import TunerError
from tuner.runtime.engines import UnknownFlagError, get_engine
from tuner.runtime.launcher import read_supported_flags
from tuner.search.flags.coupling import apply_coupling
from tuner.search.flags.presets import preset_names, preset_space
from tuner.search.flags.space import (
    InvalidSpaceError,
    baseline_candidate,
    candidate_from_values,
    check_supported,
    grid,
    load_space,
    space_from_mapping,
    suggest,
)


def _reject(data, *fragments):
    with pytest.raises(InvalidSpaceError) as err:
        space_from_mapping(data)
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)
    return str(err.value)


def test_every_preset_is_a_valid_space():
    assert set(preset_names()) == {"sglang", "sglang-demo", "sglang-eagle", "sglang-suffix", "vllm"}
    for name in preset_names():
        space = preset_space(name)
        assert space.params, name
    assert preset_space("vllm").family == "vllm"


def test_a_yaml_file_with_env_parameters_base_flags_and_a_preset(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "preset: sglang-eagle\n"
        "remove: [mem-fraction-static]\n"
        "base_flags: {tp_size: 8}\n"
        "params:\n"
        "  - {name: chunked-prefill-size, type: int, low: 1024, high: 8192, step: 1024}\n"
    )
    space = load_space(path)
    assert space.name == "sglang-eagle"
    keys = [p.key for p in space.params]
    assert "mem-fraction-static" not in keys and "env:SGLANG_ENABLE_SPEC_V2" in keys
    assert space.param("chunked-prefill-size").values()[-1] == 8192
    assert space.base_flags == {"speculative-algorithm": "NEXTN", "tp-size": 8}


@pytest.mark.parametrize(("data", "fragments"), [
    ({"params": {"x": {"type": "int", "low": 8, "high": 2}}}, ["x: low (8) must be below high (2)"]),
    ({"params": {"mem-fraction-static": {"type": "float", "low": 0.7, "high": 0.9, "step": 0.03}}},
     ["not a multiple of step 0.03; use high: 0.88"]),
    ({"base_flags": {"speculative-algorithm": "SUFFIX"},
      "params": {"speculative-suffix-cache-max-depth": {"choices": [16, 64]}}},
     ["SUFFIX needs --speculative-num-draft-tokens"]),
    ({"params": {"speculative-num-steps": {"type": "int", "low": 1, "high": 4}}},
     ["need --speculative-algorithm"]),
    ({"base_flags": {"chunked-prefill-size": 4096},
      "params": {"chunked-prefill-size": {"choices": [2048, 8192]}}}, ["both searched and fixed"]),
    ({"base_flags": {"port": 1234}, "params": {"a": {"choices": [1, 2]}}}, ["--port is set by the tuner"]),
    ({"preset": "sglang-eagle", "remove": ["env:SGLANG_ENABLE_SPEC_V2"], "base_env": {"SGLANG_ENABLE_SPEC_V2": 1}},
     ["SGLANG_ENABLE_SPEC_V2=1 allows only --speculative-eagle-topk 1", "searched up to 8"]),
    ({"params": {"a": {"choices": [1, 2], "when": {"b": [1]}}}}, ["'when' names 'b'"]),
    ({"params": {"a": {"choices": [1, 2], "when": {"b": [1]}}, "b": {"choices": [1, 2], "when": {"a": [1]}}}},
     ["conditions form a cycle"]),
    ({"params": {"a": {"type": "float", "low": 0, "high": 1, "log": True}}}, ["log-scaled parameter needs low > 0"]),
    ({"params": {"a": {"choices": [4]}}}, ["only one choice"]),
    ({"params": {}}, ["no parameters"]),
])
def test_invalid_spaces_are_rejected_with_the_reason(data, fragments):
    _reject(data, *fragments)


def test_all_problems_are_listed_at_once():
    text = _reject({"base_flags": {"host": "x"}, "params": {"a": {"type": "int", "low": 3, "high": 1},
                                                           "b": {"type": "int", "low": 1, "high": 9, "step": 3}}},
                   "a: low", "b: (high - low)", "--host")
    assert text.count("\n  - ") == 3


def test_flags_the_engine_does_not_list_are_rejected_with_close_matches():
    supported = read_supported_flags(get_engine("sim", sglang="seed"))  # the forks' SUFFIX surface
    preset_space("sglang-suffix")  # valid on its own...
    fork = space_from_mapping({
        "base_flags": {"speculative-algorithm": "SUFFIX", "speculative-num-draft-tokens": 8},
        "params": {"speculative-suffix-max-tree-depth": {"choices": [16, 32]}}})
    with pytest.raises(UnknownFlagError, match=r"--speculative-suffix-max-tree-depth.*did you mean "
                                               r"--speculative-suffix-cache-max-depth"):
        check_supported(fork, supported)
    check_supported(preset_space("sglang-eagle"), supported)  # every preset flag exists in the simulator


def test_coupling_rules_on_candidates():
    # topk 1 forces draft tokens = steps + 1
    flags, _, notes = apply_coupling("sglang", {"speculative-algorithm": "NEXTN", "speculative-num-steps": 2,
                                                "speculative-eagle-topk": 1,
                                                "speculative-num-draft-tokens": 9}, {})
    assert flags["speculative-num-draft-tokens"] == 3 and any("forces" in n for n in notes)
    # setting one of the triple fills in the others
    flags, _, _ = apply_coupling("sglang", {"speculative-algorithm": "EAGLE", "speculative-num-steps": 5}, {})
    assert (flags["speculative-num-steps"], flags["speculative-eagle-topk"],
            flags["speculative-num-draft-tokens"]) == (5, 1, 6)
    # SPEC_V2 allows only topk 1
    flags, _, notes = apply_coupling("sglang", {"speculative-algorithm": "NEXTN", "speculative-num-steps": 3,
                                                  "speculative-eagle-topk": 4,
                                                  "speculative-num-draft-tokens": 8},
                                       {"SGLANG_ENABLE_SPEC_V2": "1"})
    assert flags["speculative-eagle-topk"] == 1 and flags["speculative-num-draft-tokens"] == 4
    # topk > 1 keeps the searched draft tokens; suffix flags only with SUFFIX
    flags, _, _ = apply_coupling("sglang", {"speculative-algorithm": "NEXTN", "speculative-num-steps": 3,
                                            "speculative-eagle-topk": 4, "speculative-num-draft-tokens": 8,
                                            "speculative-suffix-cache-max-depth": 32}, {})
    assert flags["speculative-num-draft-tokens"] == 8 and "speculative-suffix-cache-max-depth" not in flags
    with pytest.raises(TunerError, match="SUFFIX needs"):
        apply_coupling("sglang", {"speculative-algorithm": "SUFFIX"}, {})
    # vLLM has none of these rules
    assert apply_coupling("vllm", {"max-num-seqs": 8}, {})[0] == {"max-num-seqs": 8}


def test_speculative_parameters_are_only_sampled_with_an_algorithm():
    space = space_from_mapping({"params": {
        "speculative-algorithm": {"choices": [None, "NEXTN", "SUFFIX"]},
        "speculative-num-steps": {"type": "int", "low": 1, "high": 4},
        "speculative-num-draft-tokens": {"type": "int", "low": 2, "high": 8},
        "speculative-suffix-cache-max-depth": {"choices": [16, 64]},
    }})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        cand = suggest(space, trial)
        alg = cand.params["speculative-algorithm"]
        seen.add(alg)
        assert set(trial.params) == set(cand.params)
        if alg is None:
            assert set(cand.params) == {"speculative-algorithm"} and not any(
                k.startswith("speculative") for k in cand.flags)
        elif alg == "NEXTN":
            assert "speculative-suffix-cache-max-depth" not in cand.params
            assert cand.flags["speculative-num-draft-tokens"] == cand.flags["speculative-num-steps"] + 1
        else:
            assert "speculative-num-steps" not in cand.params
            assert cand.flags["speculative-num-draft-tokens"] == cand.params["speculative-num-draft-tokens"]
        study.tell(trial, 1.0)
    assert seen == {None, "NEXTN", "SUFFIX"}


def test_eagle_preset_searches_draft_tokens_only_when_topk_exceeds_one():
    space = preset_space("sglang-eagle")
    base = {"chunked-prefill-size": 4096, "cuda-graph-max-bs": 64, "max-running-requests": 64,
            "mem-fraction-static": 0.85, "speculative-num-steps": 3, "env:SGLANG_ENABLE_SPEC_V2": "0"}
    one = candidate_from_values(space, {**base, "speculative-eagle-topk": 1})
    assert "speculative-num-draft-tokens" not in one.params and one.flags["speculative-num-draft-tokens"] == 4
    four = candidate_from_values(space, {**base, "speculative-eagle-topk": 4, "speculative-num-draft-tokens": 10})
    assert four.flags["speculative-num-draft-tokens"] == 10 and four.env == {"SGLANG_ENABLE_SPEC_V2": "0"}
    with pytest.raises(TunerError, match="outside its domain"):
        candidate_from_values(space, {**base, "speculative-eagle-topk": 3})


def test_baseline_is_the_engine_defaults_plus_base_flags():
    space = preset_space("sglang").with_base({"tp_size": 8}, {"X": "1"})
    base = baseline_candidate(space)
    assert base.is_baseline and base.params == {} and base.flags == {"tp-size": 8} and base.env == {"X": "1"}


def test_the_benchmark_grid_has_240_distinct_points():
    from pathlib import Path

    space = load_space(Path(__file__).parents[3] / "benchmarks" / "flag_search_space.yaml")
    points = list(grid(space))
    assert len(points) == 240 and len({p.key for p in points}) == 240
