"""Engine descriptions: exact command lines, flag checks against --help, acceptance-length formulas."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tuner.errors import TunerError
from tuner.runtime.engines import UnknownFlagError, get_engine, validate_flags
from tuner.runtime.engines.base import flags_to_argv
from tuner.runtime.scraper import delta, parse_metrics

HELP = (Path(__file__).parent / "data" / "sglang_fork_help.txt").read_text()


def test_sglang_argv_is_an_exact_list():
    engine = get_engine("sglang", python="/opt/py/bin/python")
    argv = engine.build_argv("zai-org/GLM-4.6", 30000, {
        "chunked-prefill-size": 4096,
        "mem_fraction_static": 0.85,
        "disable-cuda-graph": True,
        "enable-dp-attention": False,
        "cuda-graph-bs": [1, 2, 4, 8],
        "speculative-algorithm": "EAGLE",
        "max-running-requests": None,
    })
    assert argv == [
        "/opt/py/bin/python", "-m", "sglang.launch_server", "--model-path", "zai-org/GLM-4.6",
        "--host", "127.0.0.1", "--port", "30000", "--enable-metrics",
        "--chunked-prefill-size", "4096", "--mem-fraction-static", "0.85", "--disable-cuda-graph",
        "--cuda-graph-bs", "1", "2", "4", "8", "--speculative-algorithm", "EAGLE",
    ]


def test_vllm_argv_puts_speculative_config_in_one_json_argument():
    engine = get_engine("vllm")
    argv = engine.build_argv("Qwen/Qwen3-30B-A3B", 8000, {
        "max-num-seqs": 128,
        "enable-chunked-prefill": False,
        "enforce-eager": True,
        "speculative-config.method": "suffix",
        "speculative-config.num_speculative_tokens": 32,
        "speculative-config.suffix-decoding-max-tree-depth": 24,
    })
    assert argv[:7] == ["vllm", "serve", "Qwen/Qwen3-30B-A3B", "--host", "127.0.0.1", "--port", "8000"]
    assert argv[7:13] == ["--max-num-seqs", "128", "--no-enable-chunked-prefill", "--enforce-eager",
                          "--speculative-config", argv[12]]
    assert len(argv) == 13
    assert json.loads(argv[12]) == {"method": "suffix", "num_speculative_tokens": 32,
                                    "suffix_decoding_max_tree_depth": 24}


def test_vllm_accepts_a_whole_mapping_for_a_json_flag():
    argv = get_engine("vllm").build_argv("m", 1, {"speculative_config": {"method": "ngram",
                                                                          "num_speculative_tokens": 4}})
    assert argv[-2:] == ["--speculative-config", '{"method":"ngram","num_speculative_tokens":4}']


def test_sim_argv_runs_this_interpreter_with_sglang_flags_and_sim_options():
    engine = get_engine("sim", gpu="H100", time_scale=10, seed=3)
    argv = engine.build_argv("zai-org/GLM-4.6", 4242, {"chunked-prefill-size": 2048})
    assert argv == [sys.executable, "-m", "tuner.runtime.sim", "--model-path", "zai-org/GLM-4.6",
                    "--host", "127.0.0.1", "--port", "4242", "--enable-metrics",
                    "--chunked-prefill-size", "2048", "--seed", "3", "--time-scale", "10", "--gpu", "H100"]


@pytest.mark.parametrize("flag", ["port", "--model-path", "host", "enable_metrics"])
def test_flags_the_launcher_owns_are_refused(flag):
    with pytest.raises(TunerError, match="set by the tuner"):
        get_engine("sglang").build_argv("m", 1, {flag: "x"})


def test_floats_that_are_whole_numbers_print_as_ints_and_empty_lists_vanish():
    assert flags_to_argv({"max-prefill-tokens": 16384.0, "cuda-graph-bs": [], "x": 0.5}) == [
        "--max-prefill-tokens", "16384", "--x", "0.5"]


def test_help_text_parsing_finds_the_forks_flags():
    supported = get_engine("sglang").parse_supported_flags(HELP)
    assert {"chunked-prefill-size", "speculative-suffix-max-tree-depth", "cuda-graph-bs",
            "disable-cuda-graph", "model"} <= supported
    validate_flags({"chunked_prefill_size": 1, "speculative-suffix-max-tree-depth": 24}, supported)


def test_a_flag_renamed_by_the_fork_is_rejected_with_close_matches():
    supported = get_engine("sglang").parse_supported_flags(HELP)
    with pytest.raises(UnknownFlagError) as info:
        validate_flags({"speculative-suffix-cache-max-depth": 64, "page-size": 1}, supported)
    message = str(info.value)
    assert "--speculative-suffix-cache-max-depth" in message
    assert "did you mean" in message and "--speculative-suffix-max-" in message
    assert "page-size" not in message  # known flags are not reported


def test_unknown_engine_names_the_choices():
    with pytest.raises(TunerError, match="sglang, sim, vllm"):
        get_engine("trt")


def _snap(text: str):
    return parse_metrics(text, "http://x/metrics")


def test_vllm_accept_length_is_one_plus_accepted_over_drafts_in_the_window():
    before = _snap("vllm:spec_decode_num_drafts_total 100\nvllm:spec_decode_num_accepted_tokens_total 150\n")
    after = _snap("vllm:spec_decode_num_drafts_total 300\nvllm:spec_decode_num_accepted_tokens_total 550\n")
    assert get_engine("vllm").spec_accept_length(delta(before, after), None) == pytest.approx(3.0)
    assert get_engine("vllm").spec_accept_length(delta(before, before), None) is None


def test_sglang_accept_length_prefers_server_info_then_the_gauge():
    engine = get_engine("sglang")
    snap = _snap('sglang:spec_accept_length{tp_rank="0"} 2.5\n')
    d = delta(snap, snap)
    info = {"speculative_algorithm": "EAGLE",
            "internal_states": [{"avg_spec_accept_length": 3.0}, {"avg_spec_accept_length": 4.0}]}
    assert engine.spec_accept_length(d, info) == pytest.approx(3.5)
    assert engine.spec_accept_length(d, {"speculative_algorithm": "EAGLE", "internal_states": [{}]}) == 2.5
    assert engine.spec_accept_length(d, {"speculative_algorithm": None}) is None
