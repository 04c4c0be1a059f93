"""dashboards/ against a real Prometheus (Debian's, loopback, temporary data folder): `promtool check config` passes
on the shipped scrape config, and Prometheus scraping a real `tuner serve` and the simulated SGLang engine (with
traffic, and a tiny flag search run by the service's own worker) answers every PromQL expression of both Grafana
dashboards with data."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "workload"))
import seed
from prometheus_server import free_port, require_prometheus
from test_serve_process import serving

from tuner.jobs import units
from tuner.runtime.engines import get_engine
from tuner.runtime.launcher import launch
from tuner.runtime.loadgen.arrivals import PoissonArrivals
from tuner.runtime.loadgen.client import LoadOptions, run_load_sync
from tuner.runtime.loadgen.workloads import RandomWorkload
from tuner.store.db import open_database

DASHBOARDS = Path(__file__).parents[2] / "dashboards"
MODEL = "zai-org/GLM-4.7-FP8"


def expressions() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) of every target of every panel."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            out += [(path.name, panel["title"], t["expr"]) for t in panel["targets"]]
    return out


def runnable(expr: str) -> str:
    """A dashboard expression with Grafana's variables filled in as Grafana would (all models, a 30 s window)."""
    return expr.replace("$__rate_interval", "30s").replace('"$model_name"', '".+"')


def test_the_scrape_config_passes_promtool() -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(promtool).exists():
        require_prometheus()  # the same package; skips or fails as the other Prometheus tests do
        pytest.skip("promtool not found")
    done = subprocess.run([promtool, "check", "config", str(DASHBOARDS / "prometheus.yml")], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    jobs = {j["job_name"] for j in yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())["scrape_configs"]}
    assert jobs == {"tuner", "sglang"}


def test_every_dashboard_expression_returns_data_from_the_tuner_and_the_simulated_engine(tmp_path: Path) -> None:
    binary = require_prometheus()
    service_port = free_port()
    with serving(tmp_path, service_port, "--cpu-workers", "1"), \
            launch(get_engine("sim", time_scale=20), MODEL, {"tp-size": 8, "startup-seconds": 1},
                   log_dir=tmp_path, ready_timeout_s=60) as engine:
        db = open_database(f"sqlite:///{tmp_path / 'data' / 'tuner.db'}")
        try:
            httpx.get(f"http://127.0.0.1:{service_port}/metrics")  # marks where new trials start
            seed.seed_sweep(db, n_configs=4)
            seed.seed_study(db, "prom-study", 5)  # stored after the start: their launch times are observed
            httpx.post(f"http://127.0.0.1:{service_port}/api/jobs/kernel_sweep", json={
                "model": "GLM-4.7-FP8", "tp": 8, "batch_sizes": "1", "device_name": "NVIDIA H200"}, timeout=120)
            # a tiny flag search on the simulator, run by the service's CPU worker: unit durations
            search = httpx.post(f"http://127.0.0.1:{service_port}/api/jobs/flag_search", timeout=120, json={
                "engine": "sim", "model": MODEL, "base_flag": ["tp-size=8"], "slo": "ttft_p99<=2s,tpot_p99<=50ms",
                "trials": 2, "repeats": 0, "requests_per_step": 8, "max_load_steps": 2, "time_scale": 50,
                "input_len": 512, "output_len": 32, "study": "prom-search"}).json()
            deadline = time.monotonic() + 300
            while httpx.get(f"http://127.0.0.1:{service_port}/api/jobs/{search['id']}").json()["state"] != "finished":
                assert time.monotonic() < deadline, "the flag search did not finish in 300 s"
                time.sleep(1)
            # an external `tuner worker` holding a unit: its heartbeat is on the tuner dashboard
            assert units.claim_unit(db, "external-worker", lease_s=600) is not None
        finally:
            db.dispose()
        config = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "500ms", "evaluation_interval": "500ms", "scrape_timeout": "500ms"}
        targets = {"tuner": f"127.0.0.1:{service_port}", "sglang": engine.base_url.split("//", 1)[1]}
        for job in config["scrape_configs"]:
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        with open(tmp_path / "prometheus.log", "wb") as log:
            prom = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                                     f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                                     f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while _targets_up(base) != 2:
                assert prom.poll() is None and time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()
                time.sleep(0.3)
            workload = RandomWorkload(24, 256, 32, 1.0)
            result = run_load_sync(engine.base_url, workload, PoissonArrivals(8.0), LoadOptions(num_warmup=0))
            assert all(r.ok for r in result.records)
            time.sleep(3)  # a few scrapes after the traffic
            empty = [(name, title, expr) for name, title, expr in expressions() if not _query(base, runnable(expr))]
            assert empty == []
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(prom.pid, signal.SIGTERM)
            prom.wait(15)


def _targets_up(base: str) -> int:
    """How many targets Prometheus scraped successfully (0 while it is starting)."""
    try:
        r = httpx.get(base + "/api/v1/query", params={"query": "count(up == 1)"}, timeout=5)
        found = r.json()["data"]["result"] if r.status_code == 200 else []
    except (httpx.HTTPError, ValueError, KeyError):  # not listening or not ready yet
        return 0
    return int(found[0]["value"][1]) if found else 0


def _query(base: str, expr: str) -> list[dict]:  # type: ignore[type-arg]
    r = httpx.get(base + "/api/v1/query", params={"query": expr}, timeout=5)
    assert r.status_code == 200, (expr, r.text)
    return list(r.json()["data"]["result"])
