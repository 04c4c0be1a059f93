"""The Optuna study in the project's database, with an evaluator that needs no engine: the baseline as
trial 0, OOMs recorded and learnt from, constraints, resume after an interruption, robust re-measurement,
and the report files."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys

import optuna
import pytest
import yaml
from flag_fakes import FakeEvaluator

from tuner.errors import ExportError, TunerError
from tuner.runtime.engines import get_engine
from tuner.runtime.launcher import read_flag_surface
from tuner.search.flags.export import export_flag_study
from tuner.search.flags.load_search import LoadSearchConfig
from tuner.search.flags.objective import Objective, parse_slo_text
from tuner.search.flags.report import load_report, render_summary
from tuner.search.flags.space import space_from_mapping
from tuner.search.flags.study import NAMED_CONSTRAINTS, StudyConfig, optuna_storage, run_study
from tuner.store import flags as store
from tuner.store.db import open_database

SPACE = {
    "base_flags": {"tp-size": 8},
    "params": {
        "chunked-prefill-size": {"choices": [2048, 4096, 8192, 16384]},
        "cuda-graph-max-bs": {"choices": [32, 64, 128, 256]},
        "mem-fraction-static": {"choices": [0.80, 0.85, 0.90, 0.95]},
    },
}


def landscape(flags):
    """OOM when memory-hungry; otherwise goodput peaking at chunk 4096 / graphs 128."""
    mem, graphs, chunk = flags.get("mem-fraction-static"), flags.get("cuda-graph-max-bs"), \
        flags.get("chunked-prefill-size")
    if mem is None:
        return 500.0  # the baseline
    if mem >= 0.9 and graphs >= 128:
        return "oom"
    return 1000.0 - abs(math.log2(chunk / 4096)) * 150 - abs(math.log2(graphs / 128)) * 100 + mem * 10


@pytest.fixture()
def db(tmp_path):
    database = open_database(f"sqlite:///{tmp_path / 'tuner.db'}")
    yield database
    database.dispose()


def _config(name="s", n_trials=14, repeats=3, sampler="tpe", objective="goodput"):
    return StudyConfig(
        name=name, engine="sim", model="zai-org/GLM-4.7-FP8", space=space_from_mapping(SPACE),
        objective=Objective(objective, parse_slo_text("ttft_p99<=2s,tpot_p99<=50ms")),
        load_search=LoadSearchConfig(low=1, high=16), workload={"name": "random", "input_len": 128},
        sampler=sampler, n_trials=n_trials, seed=3, repeats=repeats, top_k=2, gpu="H200 (simulated)",
        extra={"engine_options": {"gpu": "H200", "time_scale": 10.0, "seed": 0}})


def test_a_search_records_baseline_ooms_constraints_and_a_robust_best(db):
    ev = FakeEvaluator(landscape, noise=lambda r: [0, 8, -8][r % 3])
    outcome = run_study(db, _config(), ev, out=lambda s: None)
    rows = store.list_trials(db, outcome.study.id, "search")
    launched = [r for r in rows if r.status in ("ok", "infeasible", "failed")]
    assert len(launched) == 14
    base = rows[0]
    assert base.trial_number == 0 and base.is_baseline and base.params == {} and base.flags == {"tp-size": 8}
    assert ev.calls[0].is_baseline
    ooms = [r for r in rows if r.failure_kind == "oom"]
    assert ooms and all(r.status == "infeasible" and "OutOfMemory" in r.log_tail for r in ooms)
    assert all(r.constraints[-1] == 1.0 for r in ooms)  # a failed launch violates the launch constraint
    ok = [r for r in rows if r.status == "ok"]
    assert ok and all(c <= 0 for r in ok for c in r.constraints)
    for r in rows:  # nothing launched that needs at least the memory of an earlier OOM
        if r.status in ("ok", "infeasible") and r.failure_kind != "oom":
            earlier = [o for o in ooms if o.trial_number < r.trial_number]
            assert not any(r.flags["mem-fraction-static"] >= o.flags["mem-fraction-static"]
                           and r.flags["cuda-graph-max-bs"] >= o.flags["cuda-graph-max-bs"]
                           and r.flags["chunked-prefill-size"] >= o.flags["chunked-prefill-size"]
                           for o in earlier if not r.is_baseline)
    skipped = [r for r in rows if r.status == "skipped"]
    assert all(r.failure_kind == "predicted_oom" and "not launched" in r.error for r in skipped)
    # robust re-measurement: the top 2 and the baseline, 3 load searches each in one launch
    again = store.list_trials(db, outcome.study.id, "remeasure")
    assert len(again) == 3 and {r.trial_number for r in again} >= {0}
    assert ev.repeats_seen.count(3) == 3
    result = outcome.result
    assert result.robust and result.best.score.samples and len(result.best.score.samples) == 3
    assert result.best.score.sigma == pytest.approx(1.4826 * 8)
    assert result.gain.ratio > 0.5 and result.gain.low < result.gain.ratio
    assert store.get_study(db, "s").result == result  # read back from the store as the same typed record
    # Optuna sees the same study, also the way optuna-dashboard opens it
    dash = optuna.storages.RDBStorage(db.url, skip_compatibility_check=True, skip_table_creation=True)
    study = optuna.load_study(study_name="s", storage=dash)
    assert study.trials[0].user_attrs["baseline"] is True
    # the sampler's constraints where it reads them; each trial's results only in its flag_trials row
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if NAMED_CONSTRAINTS:
        assert all(len(t.constraints) == 3 for t in complete)
    else:
        assert all("constraints" in t.user_attrs for t in complete)
    assert all(set(t.user_attrs) <= {"baseline", "retry_of", "proposed_by", "local_param", "constraints"}
               for t in study.trials)
    assert [t.values for t in complete] == [r.values for r in rows if r.status in ("ok", "infeasible", "skipped",
                                                                                    "duplicate")]
    assert study.user_attrs["slos"] == ["ttft_p99<=2000ms", "tpot_p99<=50ms"]


def test_a_crash_during_graph_capture_is_not_taken_for_an_out_of_memory(db):
    # "CUDA error: an illegal memory access was encountered" while capturing graphs: a crash, not memory
    def crashes(flags):
        value = landscape(flags)
        return "cuda_graph" if value == "oom" else value

    outcome = run_study(db, _config(name="crash", n_trials=14, repeats=0), FakeEvaluator(crashes), out=lambda s: None)
    rows = store.list_trials(db, outcome.study.id, "search")
    assert any(r.failure_kind == "cuda_graph" and r.status == "infeasible" for r in rows)
    assert not [r for r in rows if r.status == "skipped"]  # larger-memory candidates are still launched


def test_the_report_and_export(db, tmp_path, capsys):
    run_study(db, _config(n_trials=8, repeats=0), FakeEvaluator(landscape), out=lambda s: None)
    paths = export_flag_study(db, "s", tmp_path / "out")
    names = {p.name for p in paths}
    assert names == {"best.json", "best-config.yaml", "launch-command.txt", "pareto.csv", "pareto.json",
                     "pareto.png", "trials.csv"}
    doc = json.loads((tmp_path / "out" / "best.json").read_text())
    best = doc["best"]
    # the config file is in the installed engine's spelling (the simulator's SGLang 0.5.23)
    written = yaml.safe_load((tmp_path / "out" / "best-config.yaml").read_text())
    sim = get_engine("sim")
    assert written == sim.map_flags(best["flags"], read_flag_surface(sim))
    assert "cuda-graph-max-bs-decode" in written and "cuda-graph-max-bs" in best["flags"]
    command = (tmp_path / "out" / "launch-command.txt").read_text().strip()
    assert shlex.split(command) == best["launch_argv"]
    assert "--chunked-prefill-size" in best["launch_argv"] and "--time-scale" in best["launch_argv"]
    assert (tmp_path / "out" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert "gain over the baseline" in render_summary(load_report(db, "s"))
    with pytest.raises(ExportError, match="already exist"):
        export_flag_study(db, "s", tmp_path / "out")
    assert export_flag_study(db, "s", tmp_path / "out", force=True)
    with pytest.raises(ExportError, match="no flag study named 'nope'"):
        export_flag_study(db, "nope", tmp_path / "x")
    # an --out that cannot be a folder is one line from the command, never a traceback
    from tuner.cli import main

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for out, words in ((a_file, "is a file, not a folder"), (a_file / "sub", "a part of the path is a file")):
        assert main(["--database-url", db.url, "export", "--flag-study", "s", "--out", str(out)]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("tuner: error: ") and words in line and str(out) in line


def test_an_interrupted_trial_is_kept_as_failed_and_run_again(db):
    ev = FakeEvaluator(landscape, raise_on_call=4)
    with pytest.raises(KeyboardInterrupt):
        run_study(db, _config(n_trials=6, repeats=0), ev, out=lambda s: None)
    record = store.get_study(db, "s")
    assert record.status == "interrupted" and record.owner is None
    interrupted = [r for r in store.list_trials(db, record.id) if r.failure_kind == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0].status == "failed"
    lost_flags = ev.calls[3].flags
    ev2 = FakeEvaluator(landscape)
    outcome = run_study(db, _config(n_trials=6, repeats=0), ev2, out=lambda s: None)
    assert ev2.calls[0].flags == lost_flags  # the interrupted candidate is measured first
    rows = store.list_trials(db, outcome.study.id, "search")
    assert sum(r.status in ("ok", "infeasible") for r in rows) == 6 and outcome.study.status == "finished"


def test_trials_left_running_by_a_killed_process_are_marked_failed(db):
    run_study(db, _config(n_trials=3, repeats=0), FakeEvaluator(landscape), out=lambda s: None)
    record = store.get_study(db, "s")
    # what a process killed with SIGKILL leaves behind: a RUNNING Optuna trial, a 'running' row, an owner
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    import socket

    store.claim_study(db, record.id, f"{socket.gethostname()}:{dead.stdout.strip()}", lambda o: False)
    study = optuna.load_study(study_name="s", storage=optuna_storage(db.url))
    trial = study.ask({"chunked-prefill-size": optuna.distributions.CategoricalDistribution(
        [2048, 4096, 8192, 16384])})
    store.start_trial(db, record.id, trial.number, params=trial.params, flags={}, env={})
    messages = []
    run_study(db, _config(n_trials=5, repeats=0), FakeEvaluator(landscape), out=messages.append)
    assert any("interrupted trial(s) marked failed" in m for m in messages)
    rows = {r.trial_number: r for r in store.list_trials(db, record.id, "search")}
    assert rows[trial.number].status == "failed" and rows[trial.number].failure_kind == "interrupted"
    states = {t.number: t.state.name for t in optuna.load_study(study_name="s",
                                                                  storage=optuna_storage(db.url)).trials}
    assert states[trial.number] == "FAIL"


def test_a_study_run_by_a_live_process_is_not_taken_over(db):
    run_study(db, _config(n_trials=2, repeats=0), FakeEvaluator(landscape), out=lambda s: None)
    record = store.get_study(db, "s")
    import socket

    store.claim_study(db, record.id, f"{socket.gethostname()}:{os.getppid()}", lambda o: False)
    with pytest.raises(TunerError, match="is being run by"):
        run_study(db, _config(n_trials=3, repeats=0), FakeEvaluator(landscape), out=lambda s: None)


def test_resuming_with_other_options_is_refused(db):
    run_study(db, _config(n_trials=2, repeats=0), FakeEvaluator(landscape), out=lambda s: None)
    with pytest.raises(TunerError, match="already exists with a different objective"):
        run_study(db, _config(n_trials=2, repeats=0, objective="goodput-req"), FakeEvaluator(landscape),
                  out=lambda s: None)


@pytest.mark.parametrize("sampler", ["random", "nsga2"])
def test_other_samplers(db, sampler):
    outcome = run_study(db, _config(name=sampler, n_trials=6, repeats=0, sampler=sampler),
                        FakeEvaluator(landscape), out=lambda s: None)
    assert outcome.result.best.score.median > 500


def test_pareto_objective_has_two_values(db):
    outcome = run_study(db, _config(n_trials=6, repeats=0, sampler="nsga2", objective="pareto"),
                        FakeEvaluator(landscape), out=lambda s: None)
    study = optuna.load_study(study_name="s", storage=optuna_storage(db.url))
    assert len(study.directions) == 2 and outcome.result.best


def test_gp_sampler_when_scipy_is_installed(db):
    pytest.importorskip("scipy")
    outcome = run_study(db, _config(name="gp", n_trials=6, repeats=0, sampler="gp"),
                        FakeEvaluator(landscape), out=lambda s: None)
    assert outcome.result.best.score.median > 500


def test_local_search_starts_next_to_the_engine_defaults_and_climbs(db):
    class WithServerInfo(FakeEvaluator):
        def evaluate(self, candidate, *, repeats=1):
            from dataclasses import replace

            out = super().evaluate(candidate, repeats=repeats)
            if candidate.is_baseline:  # what /server_info resolves the defaults to
                out = replace(out, server_info={"chunked_prefill_size": 8192, "cuda_graph_max_bs": 512,
                                                "mem_fraction_static": 0.88})
            return out

    ev = WithServerInfo(landscape)
    run_study(db, _config(n_trials=8, repeats=0), ev, out=lambda s: None)
    first = ev.calls[1].params  # right after the baseline: the point nearest its resolved defaults
    assert first == {"chunked-prefill-size": 8192, "cuda-graph-max-bs": 256, "mem-fraction-static": 0.9}
    # then one parameter at a time (or a sampler proposal where the neighbourhood is used up)
    changed = [sum(a.params.get(k) != b.params.get(k) for k in a.params) for a, b in zip(ev.calls[2:],
                                                                                    ev.calls[1:])]
    assert changed.count(1) >= 3


@pytest.mark.parametrize(
    ("kind", "never_ready", "log", "stops"),
    [
        ("crash", True, "OSError: nosuch/model is not a local folder and is not a valid model identifier", True),
        ("invalid_argument", True, "launch_server.py: error: argument --page-size: invalid int value: 'x'", True),
        ("oom", True, "torch.OutOfMemoryError: CUDA out of memory", False),  # a smaller setting may fit
        ("cuda_graph", True, "Capture cuda graph failed: an illegal memory access was encountered", False),
        ("timeout", True, "loading weights", False),
        ("crash", False, "RuntimeError: died under load", False),  # it launched: candidates may differ
        ("crash", True, "ValueError: chunked_prefill_size must be a multiple of page_size", False),  # searched
    ],
)
def test_only_a_baseline_failure_no_searched_flag_can_change_stops_the_search(kind, never_ready, log, stops):
    from tuner.search.flags.feasibility import baseline_blocker

    reason = baseline_blocker(kind, never_ready, f"[tuner] argv: [...]\n{log}\n", "sim exited", SPACE["params"])
    assert (reason == log) if stops else reason is None


def test_a_study_stored_the_old_way_with_results_in_user_attrs_resumes_and_reports(db, tmp_path):
    # what earlier versions left: every trial's result also in Optuna user attributes (key, flags, status,
    # goodput...), the study result as a plain JSON document; both are read as before, the attributes ignored
    run_study(db, _config(n_trials=4, repeats=0), FakeEvaluator(landscape), out=lambda s: None)
    record = store.get_study(db, "s")
    storage = optuna_storage(db.url)
    study = optuna.load_study(study_name="s", storage=storage)
    rows = {r.trial_number: r for r in store.list_trials(db, record.id, "search")}
    import sqlalchemy as sa

    attrs = []
    for t in study.trials:  # Optuna refuses to change finished trials: written into its table as they were
        r = rows[t.number]
        for name, value in (("key", json.dumps({"flags": r.flags, "env": r.env}, sort_keys=True)),
                            ("flags", r.flags), ("env", r.env), ("launched", r.status in ("ok", "infeasible")),
                            ("status", "bogus"), ("failure_kind", r.failure_kind), ("goodput_tok_s", 1e9)):
            attrs.append({"trial_id": t._trial_id, "key": name, "value_json": json.dumps(value)})
    with sa.create_engine(db.url).begin() as conn:
        conn.execute(sa.text("INSERT INTO trial_user_attributes (trial_id, key, value_json) "
                             "VALUES (:trial_id, :key, :value_json)"), attrs)
    assert optuna.load_study(study_name="s", storage=storage).trials[0].user_attrs["status"] == "bogus"
    ev = FakeEvaluator(landscape)
    outcome = run_study(db, _config(n_trials=6, repeats=0), ev, out=lambda s: None)
    assert len(ev.calls) == 2  # 4 launches were done: only the 2 new ones run
    search = store.list_trials(db, record.id, "search")
    assert sum(r.status in ("ok", "infeasible") for r in search) == 6
    report = load_report(db, "s")
    assert report.best is not None and report.best == outcome.result.best
    assert report.best.score.median == max(r.goodput_tok_s for r in search if r.status == "ok")
    paths = export_flag_study(db, "s", tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "best.json").read_text())
    assert doc["best"]["trial"] == report.best.trial and len(paths) == 7
    assert f"best (trial {report.best.trial})" in render_summary(report)


def test_the_stored_result_document_is_what_the_service_hands_out(db):
    from tuner.store import browse

    outcome = run_study(db, _config(n_trials=4, repeats=3), FakeEvaluator(landscape), out=lambda s: None)
    served = browse.study_by_name(db, "s")["result"]
    assert list(served) == ["objective", "robust", "ranking", "baseline", "best", "gain"]
    assert list(served["best"]) == ["trial", "params", "flags", "env", "argv", "samples", "median", "mad", "sigma",
                                    "score"]
    from tuner.store.flag_results import StudyResult

    assert StudyResult.from_json(served) == outcome.result and served == outcome.result.to_json()
