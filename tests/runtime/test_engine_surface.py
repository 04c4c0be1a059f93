"""The version-aware engine surface: knobs written in the installed SGLang's spelling, values the engine would
refuse caught before any launch, and the simulator accepting and refusing exactly what SGLang 0.5.23 does
(its parser is the bundled fixture dump)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tuner.runtime.engines import get_engine
from tuner.runtime.engines.base import flags_to_argv
from tuner.runtime.engines.surface import (
    FlagValueError,
    UnknownFlagError,
    bundled_surface,
    surface_from_dump,
)
from tuner.runtime.launcher import read_flag_surface
from tuner.runtime.session import SessionPlan, run_session
from tuner.runtime.sim.args import build_parser, parse_cli
from tuner.search.flags.presets import PRESETS, preset_space
from tuner.search.flags.space import check_engine_accepts
from tuner.search.flags.space_check import param_values

FIXTURE = Path("/work/shared/fixtures/sglang-0.5.23/server-flags.json")
SGLANG_0523 = bundled_surface("sglang", "0.5.23")
MODEL = ["--model-path", "zai-org/GLM-4.7-FP8"]


PARSER_0523 = build_parser("0.5.23")


def sim_0523_parses(argv: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of the simulator's 0.5.23 parser on argv (0 when it parses)."""
    parser = PARSER_0523
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            parser.parse_args([*MODEL, *argv])
        except SystemExit as exc:
            return int(exc.code or 0), err.getvalue()
    return 0, ""


def test_the_bundled_surface_is_the_fixture():
    if not FIXTURE.is_file():
        pytest.skip("shared fixture not on this machine")
    fixture = surface_from_dump({"flags": json.loads(FIXTURE.read_text())}, engine="sglang")
    assert fixture.specs == SGLANG_0523.specs and len(SGLANG_0523.specs) == 559


@pytest.mark.parametrize("preset", [n for n, p in PRESETS.items() if p["engine"] == "sglang"
                                    and n != "sglang-suffix"])
def test_every_flag_of_the_sglang_presets_parses_under_0_5_23(preset):
    space = preset_space(preset)
    sglang = get_engine("sglang")
    check_engine_accepts(space, sglang, SGLANG_0523)  # names and every bound value
    for p in space.params:
        if p.env:
            continue
        for value in param_values(p):
            flags = sglang.map_flags({**space.base_flags, "tp-size": 8, p.name: value}, SGLANG_0523)
            code, err = sim_0523_parses(flags_to_argv(flags))
            assert code == 0, (p.name, value, err)


def test_the_suffix_preset_is_refused_for_0_5_23_as_fork_only_and_accepted_by_the_seed_surface():
    with pytest.raises((UnknownFlagError, FlagValueError), match="only in SGLang forks"):
        check_engine_accepts(preset_space("sglang-suffix"), get_engine("sglang"), SGLANG_0523)
    seed = get_engine("sim", sglang="seed")
    check_engine_accepts(preset_space("sglang-suffix"), seed, read_flag_surface(seed))


def test_a_seed_era_command_line_is_written_in_0_5_23_spelling():
    seed_era = {"tp": 8, "cuda-graph-max-bs": 128, "cuda_graph_bs": [1, 2, 4], "disable-cuda-graph": True,
                "enable-dp-attention": True, "dp-size": 8, "tensor-parallel-size": 8,
                "chunked-prefill-size": 4096}
    with pytest.raises(FlagValueError, match="same flag --tp-size"):
        get_engine("sglang").map_flags(seed_era, SGLANG_0523)
    del seed_era["tensor-parallel-size"]
    flags = get_engine("sglang").map_flags(seed_era, SGLANG_0523)
    assert flags == {"tp-size": 8, "cuda-graph-max-bs-decode": 128, "cuda-graph-bs-decode": [1, 2, 4],
                     "cuda-graph-backend-decode": "disabled", "cuda-graph-backend-prefill": "disabled",
                     "attn-dp-size": 8, "dp-size": 8, "chunked-prefill-size": 4096}
    # the unmapped seed spellings are what 0.5.23 refuses (exit 2, ambiguous prefix); the mapped ones parse
    code, err = sim_0523_parses(["--cuda-graph-max-bs", "128"])
    assert code == 2 and "ambiguous option: --cuda-graph-max-bs could match" in err
    assert sim_0523_parses(flags_to_argv(flags)) == (0, "")


def test_an_older_engine_keeps_its_own_spelling_whichever_is_given():
    seed = get_engine("sim", sglang="seed")
    surface = read_flag_surface(seed)
    assert seed.map_flags({"cuda-graph-max-bs-decode": 64, "disable-cuda-graph": True}, surface) == {
        "cuda-graph-max-bs": 64, "disable-cuda-graph": True}


@pytest.mark.parametrize(("flags", "message"), [
    ({"mem-fraction-static": 1.2}, "--mem-fraction-static must be > 0 and < 1; 1.2 is not"),
    ({"schedule-policy": "fastest"}, "--schedule-policy must be one of lpm, random, fcfs"),
    ({"max-running-requests": "lots"}, "--max-running-requests takes an integer, not 'lots'"),
    ({"chunked-prefill-size": 0}, "--chunked-prefill-size must be >= 1 (or -1); 0 is not"),
    ({"cuda-graph-max-bs": 2.5}, "--cuda-graph-max-bs-decode takes an integer, not 2.5"),
    ({"enable-metrics-for-all-schedulers": "yes"}, "is an on/off switch"),
    ({"enable-dp-attention": True}, "--enable-dp-attention needs --dp-size N"),
    ({"speculative-algorithm": "SUFFIX"}, "SUFFIX is not in sglang 0.5.23"),
])
def test_values_the_engine_would_refuse_get_one_line(flags, message):
    with pytest.raises(FlagValueError) as info:
        get_engine("sglang").map_flags(flags, SGLANG_0523)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_refused_value_never_launches(tmp_path):
    plan = SessionPlan(get_engine("sim", time_scale=50), "zai-org/GLM-4.7-FP8",
                       {"mem-fraction-static": 1.5, "tp-size": 8}, log_dir=tmp_path)
    result = run_session(plan, lambda session: pytest.fail("launched"))
    assert result.failure is not None and result.failure.stage == "validate"
    assert result.failure.kind == "invalid_argument" and "--mem-fraction-static" in result.failure.error
    assert result.log_path is None and not list(tmp_path.iterdir())


def _valid_value(spec) -> list[str]:
    if spec.is_switch:
        return []
    if spec.choices:
        one = [spec.choices[0]]
    elif spec.type in ("int", "human_readable_int", "float"):
        one = ["1"]
    elif spec.type == "loads":
        one = ["{}"]
    elif spec.type == "json_list_type":
        one = ["[]"]
    else:
        one = ["x"]
    return one


def test_the_simulator_accepts_every_0_5_23_option_and_refuses_bad_choices():
    refused = []
    for name, spec in SGLANG_0523.specs.items():
        if name in ("model-path", "model", "help"):
            continue
        code, err = sim_0523_parses([f"--{name}", *_valid_value(spec)])
        if code:
            refused.append((name, err.strip().splitlines()[-1]))
        if spec.choices and not spec.is_switch:
            code, err = sim_0523_parses([f"--{name}", "not-a-choice"])
            assert code == 2 and f"argument --{spec.primary}" in err and "invalid" in err, name
    assert not refused


@pytest.mark.parametrize(("argv", "shape"), [
    (["--cuda-graph-bs", "1", "2"], "ambiguous option: --cuda-graph-bs could match"),
    (["--speculative-suffix-cache-max-depth", "32"], "unrecognized arguments: --speculative-suffix"),
    (["--enable-flux-capacitor"], "unrecognized arguments: --enable-flux-capacitor"),
    (["--max-running-requests", "many"], "argument --max-running-requests: invalid int value: 'many'"),
    (["--context-length", "lots"], "argument --context-length: invalid human_readable_int value: 'lots'"),
])
def test_the_simulator_refuses_what_0_5_23_refuses_with_exit_2(argv, shape):
    proc = subprocess.run([sys.executable, "-m", "tuner.runtime.sim", *MODEL, *argv],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0].startswith("usage: python -m tuner.runtime.sim")
    assert f"python -m tuner.runtime.sim: error: {shape}" in proc.stderr


def test_unique_prefixes_are_accepted_as_sglang_does():
    ns = parse_cli([*MODEL, "--tp", "8", "--cuda-graph-max-bs-d", "64"])
    assert ns.tp_size == 8 and ns.cuda_graph_max_bs == 64


def test_the_engine_dumps_its_surface_for_the_tuner():
    surface = read_flag_surface(get_engine("sim"))
    assert surface.label() == "sim 0.5.23" and surface.typed
    # --config is expanded by the sim; its own user flags come on top
    assert set(surface.specs) == set(SGLANG_0523.specs) - {"config"} | {"sim-model-profile", "startup-seconds",
                                                                              "sim-response-trace"}
