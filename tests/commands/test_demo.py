"""`tuner demo` (the README's main command) is a valid flag search on the simulated engine, and the same
search is a request the service can queue (tuner.search.flags.demo.DEMO_SEARCH)."""

from tuner.cli import build_parser, main
from tuner.commands.demo import DEMO_FLAG_SEARCH_ARGS
from tuner.jobs.fields import from_dict
from tuner.jobs.specs import FlagSearchRequest
from tuner.search.flags.demo import DEMO_SEARCH
from tuner.settings import Settings


def test_demo_arguments_are_a_valid_flag_search_on_the_simulator():
    args = build_parser().parse_args(["flag-search", *DEMO_FLAG_SEARCH_ARGS])
    assert args.engine == "sim" and args.trials >= 6 and args.repeats >= 3
    assert args.preset == "sglang-demo" and args.load_search == "concurrency"


def test_the_demo_search_is_a_request_the_service_can_queue(tmp_path):
    request = from_dict(FlagSearchRequest, DEMO_SEARCH)
    space = request.search_space()
    assert {"speculative-algorithm", "speculative-num-steps", "max-running-requests",
            "chunked-prefill-size"} <= {p.name for p in space.params}
    config, _ = request.to_study(Settings(data_dir=tmp_path), space)  # checks every flag against the sim
    assert config.name == "demo-glm47-fp8-tp8-h200" and config.n_trials == DEMO_SEARCH["trials"]


def test_demo_passes_extra_options_on_and_checks_the_space_without_launching(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path), "demo", "--show-space"]) == 0
    out = capsys.readouterr().out
    assert "chunked-prefill-size" in out and "tuner flag-search --engine sim" in out
