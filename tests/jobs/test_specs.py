"""Job options declared once: the CLI and a request body give the same spec, bad values are one clear line,
and `tuner bench` and `tuner flag-search` start engines and build prompts the same way."""

from __future__ import annotations

import json

import pytest

from tuner.cli import build_parser
from tuner.errors import JobError, TunerError
from tuner.jobs.fields import from_dict, from_namespace, to_dict
from tuner.jobs.specs import BenchRequest, FlagSearchRequest
from tuner.runtime.loadgen.workloads import default_text_source, fallback_make_text
from tuner.settings import Settings


def test_the_command_line_and_a_json_body_give_the_same_bench_spec():
    args = build_parser().parse_args([
        "bench", "--engine", "sim", "--model", "GLM-4.7-FP8", "--flag", "tp-size=8", "--flag", "x=1",
        "--request-rate", "inf", "--input-len", "256", "--slo", "ttft_p99<=2s"])
    from_cli = from_namespace(BenchRequest, args)
    body = json.loads(json.dumps(to_dict(from_cli)))  # what an HTTP client would send
    assert from_dict(BenchRequest, body) == from_cli
    assert body["flag"] == ["tp-size=8", "x=1"] and body["request_rate"] == "inf"
    assert from_cli.input_len == 256 and from_cli.output_len == 128  # defaults come from the one declaration


@pytest.mark.parametrize(("body", "message"), [
    ({"engine": "tgi", "model": "m"}, "--engine must be one of sim, sglang, vllm, got 'tgi'"),
    ({"engine": "sim"}, "--model is required"),
    ({"engine": "sim", "model": "m", "input_len": "long"}, "--input-len must be a whole number"),
    ({"engine": "sim", "model": "m", "flag": "tp-size=8"}, "--flag takes a list of strings"),
    ({"engine": "sim", "model": "m", "colour": "red"}, "unknown option(s) colour"),
    ({"engine": "sim", "model": "m", "workload": "trace"}, "--workload trace needs --trace FILE.jsonl"),
])
def test_a_bad_request_body_is_refused_with_one_line_naming_the_option(body, message):
    with pytest.raises(JobError) as err:
        from_dict(BenchRequest, body)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_flag_search_refuses_a_space_file_and_a_preset_together():
    with pytest.raises(TunerError, match="either --space or --preset"):
        from_dict(FlagSearchRequest, {"engine": "sim", "model": "m", "space": "s.yaml", "preset": "sglang"})


@pytest.mark.parametrize(("engine", "text", "ready_timeout_s"), [
    ("sim", default_text_source(), 120.0), ("sglang", fallback_make_text, 1800.0),
    ("vllm", fallback_make_text, 1800.0),
])
def test_bench_and_flag_search_wait_and_prompt_the_same_way_per_engine(tmp_path, engine, text, ready_timeout_s):
    settings = Settings(data_dir=tmp_path)
    common = {"engine": engine, "model": "zai-org/GLM-4.7-FP8", "workload": "multi-turn"}
    bench = from_dict(BenchRequest, common).to_spec(settings)
    search = from_dict(FlagSearchRequest, {**common, "slo": "ttft_p99<=2s", "no_check_flags": True,
                                           "base_flag": ["tp-size=8"]})
    _, trial = search.to_study(settings, search.search_space())
    assert bench.ready_timeout_s == trial.ready_timeout_s == ready_timeout_s
    assert bench.workload.text_source is trial.workload_for(1).text_source is text
    assert bench.load.endpoint == trial.load.endpoint == "chat"
    assert bench.log_dir == trial.log_dir == tmp_path / "logs" and bench.log_dir.is_dir()


def test_a_learned_workload_is_named_on_the_command_line_and_checked_before_any_launch(tmp_path):
    from tuner.store.db import open_database
    from tuner.store.workloads import save_workload
    from tuner.workload.files import fit_request_log

    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 't.db'}")
    with pytest.raises(TunerError, match="nosuch"):
        BenchRequest(engine="sim", model="GLM-4.7-FP8", workload="learned:nosuch", num_prompts=3).to_spec(settings)
    for bad in ("learned:", "poisson"):
        with pytest.raises(JobError, match="learned:NAME"):
            BenchRequest(engine="sim", model="GLM-4.7-FP8", workload=bad)
    # a workload learned from a request log replays with its lengths, sent at its own pace
    log = tmp_path / "requests.jsonl"
    log.write_text("".join(json.dumps({"timestamp": t * 0.5, "prompt_tokens": 300, "completion_tokens": 40}) + "\n"
                           for t in range(40)))
    db = open_database(settings.resolved_database_url)
    save_workload(db, "prod", fit_request_log(log), "request-log", str(log))
    db.dispose()
    spec = BenchRequest(engine="sim", model="GLM-4.7-FP8", workload="learned:prod", num_prompts=20).to_spec(settings)
    sessions = spec.workload.sessions(0)
    assert len(sessions) == 20 and type(spec.arrivals).__name__ == "TraceArrivals"
    assert all(abs(turn.output_len - 40) <= 10 for s in sessions for turn in s.turns)
