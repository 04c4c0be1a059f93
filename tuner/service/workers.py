"""The service's workers: one process per GPU and `cpu_workers` CPU processes (tuner.service.worker_process), each
in its own process group, stopped with the service (SIGTERM, then SIGKILL after a grace period) and dying with it
if it is killed. External `tuner worker` processes may share the same database beside them.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tuner.service.config import ServiceConfig

log = logging.getLogger(__name__)
STOP_GRACE_S = 20.0  # a unit's engine teardown (SIGTERM, wait, SIGKILL) fits in this


class WorkerPool:
    """Starts the workers, restarts one that exits unexpectedly (at most once a minute each), stops them all."""

    def __init__(self, config: ServiceConfig, metrics_dir: Path | None, log_dir: Path | None = None) -> None:
        self.config = config
        self.metrics_dir = metrics_dir
        self.log_dir = log_dir
        self.slots: list[str] = [f"gpu{g}" for g in config.gpus] + [f"cpu{i}" for i in range(config.cpu_workers)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._started_at: dict[str, float] = {}
        self._stopping = threading.Event()
        self._watch: threading.Thread | None = None

    def _argv(self, slot: str) -> list[str]:
        where = ["--cpu"] if slot.startswith("cpu") else ["--gpu", slot[3:]]
        return [sys.executable, "-m", "tuner.service.worker_process", "--database-url", self.config.database_url,
                *where, "--lease-s", str(self.config.lease_s), "--heartbeat-s", str(self.config.heartbeat_s),
                "--poll-s", str(self.config.poll_s), "--parent-pid", str(os.getpid())]

    def _spawn(self, slot: str) -> None:
        env = dict(os.environ)
        if self.metrics_dir is not None:
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        out = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"worker-{slot}.log", "ab")  # noqa: SIM115 - the child owns it now
        try:
            self.procs[slot] = subprocess.Popen(self._argv(slot), stdin=subprocess.DEVNULL, stdout=out,
                                                stderr=subprocess.STDOUT if out else None, env=env,
                                                start_new_session=True, close_fds=True)
        finally:
            if out is not None:
                out.close()
        self._started_at[slot] = time.monotonic()
        log.info("worker %s started (pid %s)", slot, self.procs[slot].pid)

    def start(self) -> None:
        for slot in self.slots:
            self._spawn(slot)
        self._watch = threading.Thread(target=self._watch_loop, name="worker-watch", daemon=True)
        self._watch.start()

    def _watch_loop(self) -> None:
        while not self._stopping.wait(2.0):
            for slot, proc in list(self.procs.items()):
                if proc.poll() is None or self._stopping.is_set():
                    continue
                if time.monotonic() - self._started_at[slot] < 60:
                    log.error("worker %s exited with %s within a minute of its start; not restarting it", slot,
                              proc.returncode)
                    del self.procs[slot]
                    continue
                log.warning("worker %s exited with %s; restarting it", slot, proc.returncode)
                self._spawn(slot)

    def alive(self) -> dict[str, bool]:
        return {slot: proc.poll() is None for slot, proc in self.procs.items()}

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM every worker's group (each gives its unit back and tears its engine down), SIGKILL what is left
        after `grace_s`."""
        self._stopping.set()
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        if self._watch is not None:
            self._watch.join(5)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
