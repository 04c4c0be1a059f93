"""`tuner flag-search` end to end against the simulated engine: a real search of 10+ trials, SLO constraints
respected, OOM trials recorded with their reason, resume after the process is killed, invalid spaces refused
before any launch, and the exported YAML re-launching the simulator with exactly the chosen flags."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from tuner.cli import main
from tuner.runtime.engines import get_engine
from tuner.runtime.launcher import launch, read_flag_surface
from tuner.search.flags.export import export_flag_study
from tuner.settings import Settings
from tuner.store import flags as store
from tuner.store.db import open_database

SPACE = """
name: sim-test
base_flags: {tp-size: 8, startup-seconds: 0.2}
params:
  chunked-prefill-size: {type: categorical, choices: [2048, 8192]}
  max-running-requests: {type: categorical, choices: [1, 16]}
  cuda-graph-max-bs: {type: int, low: 16, high: 64, step: 48}
  mem-fraction-static: {type: categorical, choices: [0.85, 0.97]}   # 0.97 runs out of memory
"""
SEED = 4242  # also marks this test's simulator processes (their argv carries --seed 4242)


def _args(tmp_path: Path, *extra: str) -> list[str]:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    return ["--engine", "sim", "--model", "zai-org/GLM-4.7-FP8", "--space", str(space),
            "--slo", "ttft_p99<=2s,tpot_p99<=100ms", "--time-scale", "25", "--seed", str(SEED),
            "--input-len", "64", "--output-len", "16", "--num-warmup", "1", "--requests-per-step", "8",
            "--rate-min", "1", "--rate-max", "64", "--max-load-steps", "3", "--load-tolerance", "0.5",
            "--study", "simtest", "--log-dir", str(tmp_path / "logs"), *extra]


def _run_cli(argv: list[str], data_dir: Path) -> int:
    return main(["--data-dir", str(data_dir), "flag-search", *argv])


def _our_engines() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"tuner.runtime.sim" in cmd and str(SEED).encode() in cmd:
                pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One real search of 12 launches, shared by the tests that read its results."""
    tmp = tmp_path_factory.mktemp("flagsearch")
    rc = _run_cli(_args(tmp, "--trials", "12", "--repeats", "3", "--top-k", "1", "--out", str(tmp / "out")),
                  tmp)
    db = open_database(Settings(data_dir=tmp).resolved_database_url)
    yield rc, tmp, db
    db.dispose()


def test_a_real_search_respects_the_slos_and_records_ooms(searched):
    rc, tmp, db = searched
    assert rc == 0
    study = store.get_study(db, "simtest")
    assert study.status == "finished" and study.gpu == "H200 (simulated)" and study.engine_version
    rows = store.list_trials(db, study.id, "search")
    launched = [r for r in rows if r.status in ("ok", "infeasible", "failed")]
    # 12 launches asked for; in this 16-point space (half of it out of memory) crash learning may skip enough
    # predicted OOMs that the space runs out first. Never more launches than asked, and at least 10.
    assert 10 <= len(launched) <= 12 and rows[0].is_baseline and rows[0].trial_number == 0
    assert all(r.status in ("ok", "infeasible", "failed", "skipped", "duplicate") for r in rows)
    ok = [r for r in rows if r.status == "ok"]
    assert ok
    for r in ok:  # the chosen load of every measured config met every SLO, p99 from the client
        best = max((s for s in r.searches[0]["steps"] if s["meets_slo"]),
                   key=lambda s: s["figures"]["goodput_tok_s"])
        assert best["figures"]["latency_s"]["ttft_p99"] <= 2.0 and best["figures"]["latency_s"]["tpot_p99"] <= 0.1
        assert best["figures"]["goodput_tok_s"] == pytest.approx(r.goodput_tok_s)
        assert set(r.stage_seconds) >= {"launch", "ready", "warmup", "load", "scrape", "teardown"}
        assert r.server_info["chunked_prefill_size"] == r.flags.get("chunked-prefill-size", 8192)
        assert Path(r.log_path).is_file() and r.argv[1:3] == ["-m", "tuner.runtime.sim"]
    ooms = [r for r in rows if r.failure_kind in ("oom", "predicted_oom")]
    assert ooms, [(r.params, r.status, r.failure_kind) for r in rows]
    for r in ooms:
        assert r.flags["mem-fraction-static"] == 0.97 and r.status in ("infeasible", "skipped")
        if r.failure_kind == "oom":
            assert "OutOfMemoryError" in (r.log_tail or "") and r.goodput_tok_s == 0
    assert _our_engines() == []  # every engine is gone
    # robust re-measurement of the best and the baseline; the result compares them with a spread
    result = study.result
    assert len(result.best.score.samples) == 3 and result.baseline is not None and result.best is not None
    doc = json.loads((tmp / "out" / "best.json").read_text())
    assert doc["best"]["trial"] == result.best.trial


def test_the_exported_yaml_relaunches_the_simulator_with_exactly_those_flags(searched, tmp_path):
    _, _, db = searched
    paths = export_flag_study(db, "simtest", tmp_path / "export")
    config = next(p for p in paths if p.name == "best-config.yaml")
    chosen = yaml.safe_load(config.read_text())
    engine = get_engine("sim", gpu="H200", time_scale=25.0, seed=SEED)
    with launch(engine, "zai-org/GLM-4.7-FP8", {"config": str(config)}, log_dir=tmp_path / "logs",
                ready_timeout_s=60) as running:
        info = running.server_info()
    best = json.loads((tmp_path / "export" / "best.json").read_text())["best"]
    for flag, value in best["flags"].items():  # knob names, resolved by the simulator as searched
        assert info[flag.replace("-", "_")] == value, flag
    # the file is in the engine's (SGLang 0.5.23) spelling
    assert chosen == get_engine("sim").map_flags(best["flags"], read_flag_surface(get_engine("sim")))


def test_invalid_spaces_and_unknown_flags_are_refused_before_any_launch(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    for space_text, message in (
        ("params:\n  speculative-num-steps: {type: int, low: 1, high: 4}\n", "need --speculative-algorithm"),
        ("params:\n  chunked-prefil-size: {type: categorical, choices: [1, 2]}\n",
         "did you mean --chunked-prefill-size"),
    ):
        bad.write_text(space_text)
        args = _args(tmp_path, "--trials", "3")
        args[args.index("--space") + 1] = str(bad)
        assert _run_cli(args, tmp_path) == 2
        err = capsys.readouterr().err
        assert err.startswith("tuner: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "logs").exists()  # nothing was launched


@pytest.mark.parametrize(
    ("model", "base_flag", "reason"),
    [
        ("nosuch/model", "", "cannot derive a simulated model profile from --model-path 'nosuch/model'"),
        ("zai-org/GLM-4.7-FP8", "page-size: x", "--page-size takes an integer, not 'x'"),
    ],
    ids=["unknown-model", "bad-base-flag"],
)
def test_a_baseline_that_cannot_launch_stops_the_search_with_the_engines_reason(tmp_path, capsys, model,
                                                                                base_flag, reason):
    args = _args(tmp_path, "--trials", "6", "--repeats", "0")
    args[args.index("--model") + 1] = model
    if base_flag:
        (tmp_path / "space.yaml").write_text(SPACE.replace("startup-seconds: 0.2", f"startup-seconds: 0.2, {base_flag}"))
    assert _run_cli(args, tmp_path) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    if base_flag:  # refused before any launch, as SGLang 0.5.23's own parser would
        assert line.startswith("tuner: error: invalid flag value(s) for sim 0.5.23") and reason in line
        assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").iterdir())
        return
    assert line.startswith("tuner: error: the baseline") and reason in line and "search stopped" in line
    assert len(list((tmp_path / "logs").iterdir())) == 1  # one launch, not six
    # resumed, the study starts by checking the baseline again (the environment may have been fixed)
    assert _run_cli(args, tmp_path) == 2
    assert "trial 1 (2/6): baseline" in capsys.readouterr().out


def test_a_killed_search_resumes_and_keeps_the_interrupted_trial_as_failed(tmp_path):
    env = {**os.environ, "TUNER_DATA_DIR": str(tmp_path)}
    argv = [sys.executable, "-m", "tuner", "flag-search", *_args(tmp_path, "--trials", "7", "--repeats", "0")]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = Settings(data_dir=tmp_path).resolved_database_url
    deadline = time.monotonic() + 120
    running_trial = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if not (tmp_path / "tuner.db").exists():
                continue
            db = open_database(url)
            try:
                study = store.get_study(db, "simtest")
                rows = store.list_trials(db, study.id, "search") if study else []
            finally:
                db.dispose()
            if sum(r.status != "running" for r in rows) >= 3 and any(r.status == "running" for r in rows):
                running_trial = next(r.trial_number for r in rows if r.status == "running")
                os.killpg(proc.pid, signal.SIGKILL)
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert running_trial is not None, "the search never reached a running trial"
    for _ in range(50):  # the engine dies with the tuner (parent-death signal)
        if not _our_engines():
            break
        time.sleep(0.1)
    leftovers = _our_engines()
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert leftovers == []

    assert _run_cli(_args(tmp_path, "--trials", "7", "--repeats", "0"), tmp_path) == 0
    db = open_database(url)
    try:
        study = store.get_study(db, "simtest")
        rows = {(r.trial_number): r for r in store.list_trials(db, study.id, "search")}
        assert rows[running_trial].status == "failed" and rows[running_trial].failure_kind == "interrupted"
        assert sum(r.status in ("ok", "infeasible") for r in rows.values()) == 7
        assert study.status == "finished"
        from tuner.search.flags.study import optuna_storage

        states = {t.number: t.state.name for t in
                  optuna.load_study(study_name="simtest", storage=optuna_storage(db.url)).trials}
        assert states[running_trial] == "FAIL"
    finally:
        db.dispose()


def test_tuner_export_writes_the_flag_study_for_deployment(searched, tmp_path, capsys):
    _, data_dir, _ = searched
    out = tmp_path / "deploy"
    assert main(["--data-dir", str(data_dir), "export", "--flag-study", "simtest", "--out", str(out)]) == 0
    assert {"best-config.yaml", "launch-command.txt", "best.json"} <= {p.name for p in out.iterdir()}
    assert "launch_server" in (out / "launch-command.txt").read_text() or "tuner.runtime.sim" in (
        out / "launch-command.txt").read_text()
    # a second export refuses to overwrite
    assert main(["--data-dir", str(data_dir), "export", "--flag-study", "simtest", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


def test_the_search_ran_as_a_job_of_one_unit_per_launch(searched):
    from tuner.jobs import kinds, units

    _, tmp, db = searched
    (job,) = units.list_jobs(db)
    assert job.kind == "flag_search:sim" and job.state == "finished" and job.in_order
    keys = [u.key for u in units.list_units(db, job.id)]
    assert keys == ["baseline", *[f"trial {i}" for i in range(1, 12)], "re-measure 1", "re-measure 2"]
    result = kinds.get_kind(job.kind).result(db.url, job)
    best = store.get_study(db, "simtest").result.best
    assert (result.study, result.best_trial, result.best_median) == ("simtest", best.trial, best.score.median)
    assert result.units_done == result.units_total == 14 and result.best_flags == best.flags
    # the same command again finds the finished job: nothing is launched
    study_id = store.get_study(db, "simtest").id
    before = len(store.list_trials(db, study_id, "search")) + len(store.list_trials(db, study_id, "remeasure"))
    assert _run_cli(_args(tmp, "--trials", "12", "--repeats", "3", "--top-k", "1", "--out", str(tmp / "out")),
                    tmp) == 0
    assert [j.id for j in units.list_jobs(db)] == [job.id]
    after = len(store.list_trials(db, study_id, "search")) + len(store.list_trials(db, study_id, "remeasure"))
    assert after == before
