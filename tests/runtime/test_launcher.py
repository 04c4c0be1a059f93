"""Launching engines as process groups: readiness by /health, failure kinds from the log, no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from runtime_fakes import FakeEngine

from tuner.runtime.launcher import (
    EngineLaunchError,
    classify_failure,
    group_members,
    launch,
    read_supported_flags,
)


def _wait_gone(pgid: int, timeout_s: float = 10.0) -> list[int]:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        left = group_members(pgid)
        if not left:
            return []
        time.sleep(0.05)
    return group_members(pgid)


def test_launch_waits_for_health_not_for_the_open_port(tmp_path):
    engine = FakeEngine(extra=("--ready-after-s", "1.0", "--spawn-child"))
    t0 = time.monotonic()
    with launch(engine, "m", {}, log_dir=tmp_path, ready_timeout_s=20) as running:
        assert time.monotonic() - t0 >= 1.0  # the fake listens at once but answers 503 for a second
        assert running.is_alive()
        assert running.base_url.startswith("http://127.0.0.1:")
        info = running.server_info()
        assert info is not None and info["version"] == "0.0-fake"
        assert running.flush_cache() is True
        pgid = running.pgid
        assert len(group_members(pgid)) == 2  # the server and its child share the group
        assert "--port" in running.argv and running.log_path.exists()
    assert not running.is_alive()
    assert _wait_gone(pgid) == []  # the child went too: the whole group was signalled


def test_never_healthy_engine_times_out_with_the_log_tail(tmp_path):
    engine = FakeEngine(mode="never-ready")
    with pytest.raises(EngineLaunchError) as info:
        launch(engine, "m", {}, log_dir=tmp_path, ready_timeout_s=1.5)
    err = info.value
    assert err.kind == "timeout"
    assert "listening on 127.0.0.1" in str(err)  # the log tail is in the message
    assert err.log_path is not None and err.log_path.exists()
    assert "within 1.5 s" in str(err)


def test_oom_at_launch_is_classified_oom(tmp_path):
    with pytest.raises(EngineLaunchError) as info:
        launch(FakeEngine(mode="oom"), "m", {}, log_dir=tmp_path, ready_timeout_s=20)
    assert info.value.kind == "oom"
    assert "torch.OutOfMemoryError: CUDA out of memory" in str(info.value)


def test_unknown_argument_is_classified_invalid_argument(tmp_path):
    with pytest.raises(EngineLaunchError) as info:
        launch(FakeEngine(), "m", {"no-such-flag": 3}, log_dir=tmp_path, ready_timeout_s=20)
    assert info.value.kind == "invalid_argument"
    assert "unrecognized arguments: --no-such-flag 3" in str(info.value)


@pytest.mark.parametrize("log, kind", [
    ("RuntimeError: CUDA error: out of memory", "oom"),
    ("Exception: Capture cuda graph failed: illegal memory access", "cuda_graph"),
    ("Exception: Capture cuda graph failed: CUDA error: an illegal memory access was encountered", "cuda_graph"),
    ("Exception: Capture cuda graph failed: CUDA out of memory. Tried to allocate 2.00 GiB", "oom"),
    ("RuntimeError: Not enough memory. Please try to increase --mem-fraction-static.", "kv_cache"),
    ("launch_server.py: error: argument --page-size: invalid int value: 'x'", "invalid_argument"),
    ("OSError: [Errno 98] Address already in use", "port_in_use"),
    ("Segmentation fault", None),
])
def test_failure_kinds_from_log_text(log, kind):
    assert classify_failure("loading...\n" + log) == kind


def test_supported_flags_come_from_the_engines_help():
    flags = read_supported_flags(FakeEngine())
    assert {"model-path", "port", "mode", "ready-after-s"} <= flags


_DRIVER = textwrap.dedent("""
    import sys, time
    sys.path[:0] = [{root!r}, {here!r}]
    from runtime_fakes import FakeEngine
    from tuner.runtime.launcher import launch
    running = launch(FakeEngine(extra=("--spawn-child",)), "m", {{}}, log_dir={log_dir!r}, ready_timeout_s=20)
    print(running.pgid, flush=True)
    sys.stdin.readline()  # the test checks the group, then lets us crash (or signals us first)
    raise RuntimeError("the tuner crashed")
""")


@pytest.mark.parametrize("how", ["sigint", "sigterm", "crash"])
def test_no_orphans_after_ctrl_c_sigterm_or_a_crash(tmp_path, how):
    root = str(Path(__file__).resolve().parents[2])
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER.format(root=root, here=str(Path(__file__).parent), log_dir=str(tmp_path)))
    proc = subprocess.Popen([sys.executable, str(script), how], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.strip(), proc.stderr.read()
        pgid = int(line)
        assert len(group_members(pgid)) == 2
        if how == "sigint":
            os.kill(proc.pid, signal.SIGINT)
        elif how == "sigterm":
            os.kill(proc.pid, signal.SIGTERM)
        else:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        proc.wait(timeout=30)
        assert _wait_gone(pgid) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
