"""Running a tuner command from a benchmark script: its own process group, a time limit, Ctrl-C-like stop."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping


def run_interruptible(argv: list[str], env: Mapping[str, str], time_limit_s: float) -> tuple[float, bool]:
    """Run `argv` in its own process group; at the time limit interrupt it like Ctrl-C (a sweep stores what it has
    and a later run resumes), then kill the group. Returns (wall seconds, finished with exit code 0)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=dict(env), start_new_session=True)
    try:
        proc.wait(timeout=max(time_limit_s, 1))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return time.perf_counter() - t0, proc.returncode == 0
