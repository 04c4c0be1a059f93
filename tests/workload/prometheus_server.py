"""A private Prometheus (Debian's `prometheus` binary) on 127.0.0.1 for tests: a generated scrape config, a
temporary data folder, its own process group, always torn down."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REQUIRE_ENV = "TUNER_TEST_REQUIRE_PROMETHEUS"


def find_prometheus() -> str | None:
    return shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").is_file() else None)


def require_prometheus() -> str:
    """The binary, or a skip (a failure when TUNER_TEST_REQUIRE_PROMETHEUS=1, as CI sets)."""
    binary = find_prometheus()
    if binary is None:
        reason = "the prometheus binary is not installed (apt-get install --no-install-recommends prometheus)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
        pytest.skip(reason)
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scraped(url: str, job: str, n_targets: int) -> bool:
    try:
        r = httpx.get(url + "/api/v1/query", params={"query": f'up{{job="{job}"}} == 1'}, timeout=2)
        return r.status_code == 200 and len(r.json()["data"]["result"]) == n_targets
    except (httpx.HTTPError, ValueError, KeyError):
        return False


@contextlib.contextmanager
def running_prometheus(folder: Path, targets: list[str], *, job: str = "sglang",
                       scrape_interval: str = "250ms") -> Iterator[str]:
    """Yields the base URL of a Prometheus scraping `targets` (host:port) under `job`."""
    binary = require_prometheus()
    port = free_port()
    config = folder / "prometheus.yml"
    quoted = ", ".join(f'"{t}"' for t in targets)
    config.write_text(
        f"global:\n  scrape_interval: {scrape_interval}\n  scrape_timeout: {scrape_interval}\n"
        f"scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [{quoted}]\n"
    )
    log_path = folder / "prometheus.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"prometheus exited with {server.returncode}: {log_path.read_text()[-2000:]}")
            if _scraped(url, job, len(targets)):  # ready, and every target scraped once
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus has not scraped {targets} after 30 s: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
