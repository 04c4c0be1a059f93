"""The simulator's command line: SGLang's names, defaults and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.runtime.sim.args import SimArgsError, SimServerArgs, build_parser, parse_cli, resolve_args

MODEL = ["--model-path", "zai-org/GLM-4.7-FP8"]


def resolve(*flags: str, env: dict[str, str] | None = None) -> SimServerArgs:
    return resolve_args(parse_cli([*MODEL, *flags]), env or {})


def test_defaults_follow_sglang() -> None:
    a = resolve()
    assert (a.tp_size, a.port, a.host) == (1, 30000, "127.0.0.1")
    assert a.chunked_prefill_size == 8192  # 80-160 GB GPUs
    assert resolve("--gpu", "H100").chunked_prefill_size == 8192
    assert a.cuda_graph_max_bs == 256 and resolve("--tp", "8").cuda_graph_max_bs == 512
    assert (a.max_prefill_tokens, a.schedule_conservativeness, a.schedule_policy, a.page_size) == (
        16384,
        1.0,
        "fcfs",
        1,
    )
    assert a.max_running_requests is None and a.mem_fraction_static is None  # fixed by the memory plan
    assert (
        a.speculative_suffix_cache_max_depth,
        a.speculative_suffix_max_spec_factor,
        a.speculative_suffix_max_spec_offset,
        a.speculative_suffix_min_token_prob,
        a.speculative_suffix_max_cached_requests,
    ) == (64, 1.0, 0.0, 0.1, 10000)
    assert a.sim_model_profile == "GLM-4.7-FP8" and a.gpu == "H200"


def test_cuda_graph_bs_list_overrides_max_bs() -> None:
    a = resolve("--cuda-graph-max-bs-decode", "512", "--cuda-graph-bs-decode", "1", "2", "4", "48")
    assert a.cuda_graph_max_bs == 48 and a.cuda_graph_bs == (1, 2, 4, 48)
    seed = resolve("--sim-sglang", "seed", "--cuda-graph-max-bs", "512", "--cuda-graph-bs", "1", "2", "4", "48")
    assert seed.cuda_graph_max_bs == 48 and seed.cuda_graph_bs == (1, 2, 4, 48)


def test_speculative_defaults_and_max_running_reset() -> None:
    a = resolve("--speculative-algorithm", "NEXTN")
    assert (a.speculative_num_steps, a.speculative_eagle_topk, a.speculative_num_draft_tokens) == (3, 1, 4)
    assert a.max_running_requests == 48
    assert (
        resolve("--speculative-algorithm", "EAGLE", "--max-running-requests", "256").max_running_requests
        == 256
    )


def test_setting_one_of_the_speculative_triple_needs_all_three() -> None:
    with pytest.raises(SimArgsError, match="set together"):
        resolve("--speculative-algorithm", "EAGLE", "--speculative-num-steps", "5")


def test_topk_one_forces_draft_tokens_to_steps_plus_one_with_a_warning() -> None:
    a = resolve(
        "--speculative-algorithm",
        "NEXTN",
        "--speculative-num-steps",
        "1",
        "--speculative-eagle-topk",
        "1",
        "--speculative-num-draft-tokens",
        "1",
    )
    assert a.speculative_num_draft_tokens == 2
    assert any("adjusted" in w for w in a.warnings)


def test_spec_v2_allows_only_topk_one() -> None:
    tree = [
        "--speculative-algorithm",
        "EAGLE",
        "--speculative-num-steps",
        "3",
        "--speculative-eagle-topk",
        "4",
        "--speculative-num-draft-tokens",
        "8",
    ]
    assert resolve(*tree).speculative_eagle_topk == 4
    with pytest.raises(SimArgsError, match="SGLANG_ENABLE_SPEC_V2"):
        resolve(*tree, env={"SGLANG_ENABLE_SPEC_V2": "1"})


def test_suffix_needs_num_draft_tokens_and_accepts_the_seed_command() -> None:
    with pytest.raises(SimArgsError, match="SUFFIX requires"):
        resolve("--sim-sglang", "seed", "--speculative-algorithm", "SUFFIX")
    a = resolve(
        "--sim-sglang",
        "seed",
        "--tp",
        "8",
        "--page-size",
        "128",
        "--mem-fraction-static",
        "0.8",
        "--max-running-requests",
        "128",
        "--chunked-prefill-size",
        "32768",
        "--speculative-algorithm",
        "SUFFIX",
        "--speculative-eagle-topk",
        "1",
        "--speculative-suffix-cache-max-depth",
        "64",
        "--speculative-suffix-max-spec-factor",
        "1.0",
        "--speculative-suffix-max-spec-offset",
        "0.0",
        "--speculative-suffix-min-token-prob",
        "0.1",
        "--speculative-num-draft-tokens",
        "8",
        "--kv-cache-dtype",
        "fp8_e4m3",
        "--trust-remote-code",
        "--attention-backend",
        "fa3",
        "--enable-metrics",
        "--context-length",
        "202752",
        "--watchdog-timeout",
        "1000000",
    )
    assert a.speculative_algorithm == "SUFFIX" and a.speculative_num_draft_tokens == 8


def test_unknown_flag_exits_2_like_sglang(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_cli([*MODEL, "--no-such-flag", "1"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_unknown_model_lists_the_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_cli(["--model-path", "meta-llama/Llama-3-8B"])
    err = capsys.readouterr().err
    assert "GLM-4.7-FP8" in err and "DeepSeek-V3" in err
    assert (
        resolve_args(
            parse_cli(["--model-path", "x", "--sim-model-profile", "deepseek-v3"]), {}
        ).sim_model_profile
        == "DeepSeek-V3"
    )


def test_seed_help_lists_every_flag_the_tuner_searches() -> None:
    text = build_parser("seed").format_help()
    for flag in (
        "--tp-size",
        "--tp",
        "--chunked-prefill-size",
        "--cuda-graph-max-bs",
        "--cuda-graph-bs",
        "--max-running-requests",
        "--mem-fraction-static",
        "--max-prefill-tokens",
        "--schedule-conservativeness",
        "--schedule-policy",
        "--page-size",
        "--disable-cuda-graph",
        "--speculative-algorithm",
        "--speculative-num-steps",
        "--speculative-eagle-topk",
        "--speculative-num-draft-tokens",
        "--speculative-suffix-cache-max-depth",
        "--speculative-suffix-max-spec-factor",
        "--speculative-suffix-max-spec-offset",
        "--speculative-suffix-min-token-prob",
        "--speculative-suffix-max-cached-requests",
        "--enable-metrics",
        "--bucket-time-to-first-token",
        "--bucket-inter-token-latency",
        "--bucket-e2e-request-latency",
        "--extra-metric-labels",
        "--config",
        "--gpu",
        "--sim-model-profile",
        "--seed",
        "--time-scale",
        "--startup-seconds",
    ):
        assert f"{flag} " in text or f"{flag}," in text or f"{flag}\n" in text, flag


def test_config_file_uses_sglang_semantics_and_command_line_wins(tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_text(
        "chunked_prefill_size: 4096\ndisable-cuda-graph: true\nenable_metrics: false\n"
        "cuda_graph_bs_decode: [1, 2, 4]\nextra_metric_labels: {trial: '42'}\ntp: 8\n"
    )
    a = resolve("--config", str(config), "--chunked-prefill-size", "2048")
    assert a.chunked_prefill_size == 2048
    assert a.disable_cuda_graph and not a.enable_metrics
    assert a.cuda_graph_bs == (1, 2, 4) and a.tp_size == 8
    assert a.extra_metric_labels == {"trial": "42"}


def test_bad_extra_metric_labels_are_rejected() -> None:
    with pytest.raises(SimArgsError):
        resolve("--extra-metric-labels", "[1, 2]")
    with pytest.raises(SimArgsError):
        resolve("--extra-metric-labels", '{"model_name": "x"}')


def test_tuner_engine_sim_forwards_every_argument() -> None:
    import argparse

    from tuner.commands import engine_sim

    parser = argparse.ArgumentParser(prog="tuner")
    parser.add_argument("--log-level")
    engine_sim.register(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(["engine-sim", *MODEL, "--tp", "8", "--port", "1234", "--help"])
    assert ns.func is engine_sim.run
    assert ns.sim_args == [*MODEL, "--tp", "8", "--port", "1234", "--help"]
