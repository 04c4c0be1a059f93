"""`tuner serve` as a real process: it starts its workers, serves the UI and API, refuses a public interface without
a token; killed by SIGKILL its workers die with it, and started again on the same database it still has its
jobs (a unit a killed worker held is taken over when its lease ends; a flag-search unit killed mid-launch is run
again once, the finished trials kept)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tuner.jobs import units
from tuner.store.db import open_database

BODY = {"model": "GLM-4.7-FP8", "tp": 8, "batch_sizes": "1,64", "device_name": "NVIDIA H200"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


@contextlib.contextmanager
def serving(tmp_path: Path, port: int, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "TUNER_DATA_DIR": str(tmp_path / "data")}
    env.pop("TUNER_API_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "tuner", "serve", "--port", str(port), "--lease-s", "3", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the service did not answer within 60 s"
            time.sleep(0.2)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_killed_service_takes_its_workers_with_it_and_a_restart_carries_on(tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with serving(tmp_path, port, "--cpu-workers", "2") as proc:
        page = httpx.get(url + "/")
        assert page.status_code == 200 and "/static/app.js" in page.text
        job = httpx.post(url + "/api/jobs/kernel_sweep", json=BODY, timeout=120).json()
        deadline = time.monotonic() + 30
        while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = _children(proc.pid)
        assert len(workers) == 2
        # a worker of this service holds a unit when the service is killed
        db = open_database(f"sqlite:///{tmp_path / 'data' / 'tuner.db'}")
        try:
            claim = units.claim_unit(db, "killed-worker", job_ids=[job["id"]], lease_s=3)
            assert claim is not None
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            deadline = time.monotonic() + 20
            while any(_alive(w) for w in workers) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not any(_alive(w) for w in workers), "worker processes outlived the killed service"
        finally:
            db.dispose()
    with serving(tmp_path, port) as proc:
        jobs = httpx.get(url + "/api/jobs").json()["items"]
        assert [j["id"] for j in jobs] == [job["id"]] and jobs[0]["units"] == {"claimed": 1, "queued": 3}  # 2 batch sizes, 2 passes
        time.sleep(3.5)  # the killed worker's lease ends; the next claim takes the unit over, counting an attempt
        db = open_database(f"sqlite:///{tmp_path / 'data' / 'tuner.db'}")
        try:
            again = units.claim_unit(db, "new-worker", job_ids=[job["id"]])
            assert again is not None and again.unit.id == claim.unit.id and again.unit.attempts == 2
        finally:
            db.dispose()
        workers = _children(proc.pid)
        assert workers
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C stops everything
        assert proc.wait(30) == 130  # the shell's code for an interrupted command
        assert not any(_alive(w) for w in workers)
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert "stopping the workers" in output and "Traceback" not in output


def test_without_a_token_a_public_interface_is_refused_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "TUNER_DATA_DIR": str(tmp_path / "data")}
    env.pop("TUNER_API_TOKEN", None)
    done = subprocess.run([sys.executable, "-m", "tuner", "serve", "--host", "0.0.0.0"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        ("tuner: error: --host 0.0.0.0: without TUNER_API_TOKEN the service listens on localhost only; set "
         "TUNER_API_TOKEN to a secret to listen on other interfaces")]


@pytest.mark.parametrize("gpu_flag", [["--gpu", "0"]])
def test_a_gpu_worker_without_a_gpu_is_said_at_start(tmp_path: Path, gpu_flag: list[str]) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    env = {**os.environ, "TUNER_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-m", "tuner", "serve", *gpu_flag], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2 and "no CUDA GPU" in done.stderr and "Traceback" not in done.stderr


def test_a_flag_search_unit_killed_mid_launch_is_run_again_once_after_a_restart(tmp_path: Path) -> None:
    """The whole service (its workers and the simulated engine they launched) killed by SIGKILL while a trial's
    engine is starting; the restarted service runs that unit again once (the same candidate, after the lease ends),
    keeps the finished baseline as it was, and finishes the job."""
    from tuner.store import flags as flag_store

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    db_url = f"sqlite:///{tmp_path / 'data' / 'tuner.db'}"
    with serving(tmp_path, port, "--cpu-workers", "1") as proc:
        body = httpx.get(url + "/api/demo-request").json()
        body.update({"trials": 3, "repeats": 0, "requests_per_step": 8, "max_load_steps": 2, "time_scale": 50,
                     "study": "killed-mid-launch", "input_len": 512, "output_len": 32})
        created = httpx.post(url + "/api/jobs/flag_search", json=body, timeout=120)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        db = open_database(db_url)
        try:
            deadline = time.monotonic() + 300
            while True:  # the baseline is finished and trial 1's engine is being launched (its row says running)
                assert proc.poll() is None and time.monotonic() < deadline, "trial 1 never started"
                study = flag_store.get_study(db, "killed-mid-launch")
                rows = flag_store.list_trials(db, study.id, kind="search") if study else []
                if any(r.trial_number == 1 and r.status == "running" for r in rows):
                    break
                time.sleep(0.05)
            kept = {(r.id, r.trial_number, r.finished_at) for r in rows if r.status != "running"}
            assert {n for _, n, _ in kept} == {0}, "only the baseline should have finished"
            workers = _children(proc.pid)
            engines = [c for w in workers for c in _children(w)]
            for pid in [proc.pid, *workers]:  # the host's processes die at once: nobody gives the unit back
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait(10)
            deadline = time.monotonic() + 20
            while any(_alive(p) for p in workers + engines) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not any(_alive(p) for p in workers + engines), "a worker or engine outlived the kill"
            unit = next(u for u in units.list_units(db, job_id) if u.key == "trial 1")
            assert unit.state == "claimed" and unit.attempts == 1
        finally:
            db.dispose()
    with serving(tmp_path, port, "--cpu-workers", "1") as proc:
        deadline = time.monotonic() + 400
        while (job := httpx.get(f"{url}/api/jobs/{job_id}").json())["state"] not in ("finished", "failed"):
            assert time.monotonic() < deadline, f"the job did not finish after the restart: {job}"
            time.sleep(0.5)
        assert job["state"] == "finished", job
        db = open_database(db_url)
        try:
            by_key = {u.key: u for u in units.list_units(db, job_id)}
            assert [by_key[k].attempts for k in ("baseline", "trial 1", "trial 2")] == [1, 2, 1]
            study = flag_store.get_study(db, "killed-mid-launch")
            assert study is not None
            rows = flag_store.list_trials(db, study.id, kind="search")
            by_number = {r.trial_number: r for r in rows}
            # the killed launch stays on record as interrupted; its candidate was queued again and measured once
            # (as the next Optuna trial); the third launch measured trial 2's candidate
            assert sorted(by_number) == [0, 1, 2, 3]
            assert (by_number[1].status, by_number[1].failure_kind) == ("failed", "interrupted")
            assert by_number[2].params == by_number[1].params
            assert [by_number[n].status in ("ok", "infeasible") for n in (0, 2, 3)] == [True] * 3
            assert kept <= {(r.id, r.trial_number, r.finished_at) for r in rows}  # the baseline as it was
            assert all(r.status != "running" for r in rows)
        finally:
            db.dispose()
