"""`tuner demo` (the README's main command) is a valid flag search on the simulated engine."""

from tuner.cli import build_parser, main
from tuner.commands.demo import DEMO_FLAG_SEARCH_ARGS


def test_demo_arguments_are_a_valid_flag_search_on_the_simulator():
    args = build_parser().parse_args(["flag-search", *DEMO_FLAG_SEARCH_ARGS])
    assert args.engine == "sim" and args.trials >= 10 and args.repeats >= 3


def test_demo_passes_extra_options_on_and_checks_the_space_without_launching(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path), "demo", "--show-space"]) == 0
    out = capsys.readouterr().out
    assert "chunked-prefill-size" in out and "tuner flag-search --engine sim" in out
