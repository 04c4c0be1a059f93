"""Start an engine as a child process group, wait until it is ready, and always tear the whole group down.

Failures become `EngineLaunchError` with a kind read from the log ("oom", "kv_cache", "cuda_graph",
"invalid_argument", "port_in_use", "timeout", "crash"). This module knows no metrics and sends no load.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import httpx

from tuner.errors import EngineError, TunerError
from tuner.runtime.engines.base import Engine, FlagValue
from tuner.runtime.engines.surface import FlagSurface, surface_from_help

log = logging.getLogger(__name__)

FAILURE_KINDS: tuple[str, ...] = (
    "oom", "kv_cache", "cuda_graph", "invalid_argument", "port_in_use", "timeout", "crash",
)

# First match wins: an OOM met while capturing CUDA graphs is still an OOM; any other capture failure (an
# illegal memory access, a kernel error) is "cuda_graph", which is not memory exhaustion.
_FAILURE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("oom", re.compile(r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory", re.IGNORECASE)),
    # too little static memory for a KV cache: SGLang 0.5.23 "Not enough memory. Please try to increase
    # --mem-fraction-static", vLLM 0.33 "No available memory for the cache blocks"; more memory fixes it
    ("kv_cache", re.compile(r"Not enough memory\. Please try to increase --mem-fraction-static"
                            r"|No available memory for the cache blocks", re.IGNORECASE)),
    ("cuda_graph", re.compile(r"captur\w* (cuda )?graph\w* fail|cuda ?graph\w* captur\w* fail"
                              r"|failed to captur\w* (cuda )?graph", re.IGNORECASE)),
    ("invalid_argument", re.compile(r"unrecognized arguments|error: argument|invalid choice", re.IGNORECASE)),
    ("port_in_use", re.compile(r"Address already in use|address in use", re.IGNORECASE)),
)

LOG_TAIL_LINES = 30


class EngineLaunchError(EngineError):
    """The engine did not become ready. `kind` says why; the message carries the log tail."""

    def __init__(self, message: str, *, kind: str, log_path: Path | None = None, log_tail: str = ""):
        super().__init__(message)
        self.kind = kind
        self.log_path = log_path
        self.log_tail = log_tail


def classify_failure(log_text: str) -> str | None:
    """The failure kind an engine log shows, or None when it shows none we know."""
    for kind, pattern in _FAILURE_PATTERNS:
        if pattern.search(log_text):
            return kind
    return None


def read_log_tail(path: Path, n_lines: int = LOG_TAIL_LINES, max_bytes: int = 256_000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-n_lines:])


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------------------------------
# Process-group bookkeeping: every group we start is registered until it is gone.

def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`, read from /proc (Linux)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except ProcessLookupError:
            return []
        except PermissionError:
            return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) >= 3 and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def kill_group(pgid: int, proc: subprocess.Popen[bytes] | None = None, *, grace_s: float = 15.0) -> None:
    """SIGTERM the group, wait up to `grace_s` for every member to go, then SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.05)
        if not group_members(pgid):
            break
        time.sleep(0.05)
    else:
        log.warning("engine process group %d ignored SIGTERM for %.0f s; sending SIGKILL", pgid, grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    end = time.monotonic() + 5
    while group_members(pgid) and time.monotonic() < end:
        time.sleep(0.05)


_LIVE: dict[int, RunningEngine] = {}
_LIVE_LOCK = threading.Lock()
_HANDLERS_INSTALLED = False


def live_engines() -> list[RunningEngine]:
    """Engines started by this process that have not been stopped yet."""
    with _LIVE_LOCK:
        return list(_LIVE.values())


def _stop_all_engines() -> None:
    with _LIVE_LOCK:
        engines = list(_LIVE.values())
    for engine in engines:
        with contextlib.suppress(Exception):
            engine.stop(grace_s=5.0)


def _raise_system_exit(signum: int, frame: Any) -> None:
    # Turn SIGTERM/SIGHUP into SystemExit so `with` blocks and finally clauses tear engines down.
    raise SystemExit(128 + signum)


def _install_exit_handlers() -> None:
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    atexit.register(_stop_all_engines)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _raise_system_exit)


# Sets the parent-death signal on itself, then becomes the engine (the signal survives execve): for launches
# from a process with other threads running (a worker's lease heartbeat), where preexec_fn is unsafe.
_EXEC_WITH_PARENT_DEATH = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(137)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def _popen_argv(argv: list[str]) -> tuple[list[str], Any]:
    """(the argv to start, its preexec_fn) so that the engine is SIGKILLed if we die, even by SIGKILL: a
    preexec_fn when this is the only thread, else a small Python exec'ing the engine after setting the signal
    on itself. Launching from another thread than the main one, nothing (the signal would fire when that
    thread ends). FileNotFoundError when argv[0] is not found, as Popen raises it."""
    import errno
    import shutil
    import sys

    if threading.current_thread() is not threading.main_thread() or not hasattr(os, "getppid"):
        return argv, None
    if threading.active_count() == 1:
        return argv, _parent_death_signal()
    if shutil.which(argv[0]) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
    return [sys.executable, "-c", _EXEC_WITH_PARENT_DEATH, str(os.getpid()), *argv], None


def _parent_death_signal() -> Any:
    """A preexec_fn asking Linux to SIGKILL the engine if we die (even by SIGKILL), or None.

    Only used from a single-threaded main thread: the signal fires when the *thread* that forked exits,
    and preexec_fn is unsafe with other threads running.
    """
    if threading.current_thread() is not threading.main_thread() or threading.active_count() > 1:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)

    return preexec


# ----------------------------------------------------------------------------------------------------

class RunningEngine:
    """A ready engine. Use as a context manager (or call stop()); the process group dies on exit."""

    def __init__(self, engine: Engine, argv: list[str], proc: subprocess.Popen[bytes], *, host: str,
                 port: int, log_path: Path):
        self.engine = engine
        self.argv = argv
        self.proc = proc
        self.host = host
        self.port = port
        self.log_path = log_path
        self.pgid = proc.pid  # start_new_session: the child leads its own group
        self.ready_s: float | None = None
        self._stopped = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def is_alive(self) -> bool:
        return self.proc.poll() is None

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def log_tail(self, n_lines: int = LOG_TAIL_LINES) -> str:
        return read_log_tail(self.log_path, n_lines)

    def server_info(self, timeout_s: float = 10.0) -> dict[str, Any] | None:
        """GET the engine's server info (resolved args, internal states); None if it has none."""
        path = self.engine.server_info_path
        if not path:
            return None
        try:
            r = httpx.get(self.base_url + path, timeout=timeout_s, trust_env=False)
        except httpx.HTTPError as exc:
            raise EngineError(f"{self.engine.name} at {self.base_url} did not answer {path}: {exc}") from exc
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise EngineError(f"{self.engine.name} answered {path} with HTTP {r.status_code}: {r.text[:200]}")
        try:
            data = r.json()
        except ValueError as exc:
            raise EngineError(f"{self.engine.name} answered {path} with non-JSON: {r.text[:200]!r}") from exc
        return data if isinstance(data, dict) else {"value": data}

    def flush_cache(self, timeout_s: float = 30.0) -> bool:
        """Clear the prefix cache; False when this engine offers no way to (or refused)."""
        path = self.engine.flush_cache_path
        if not path:
            return False
        try:
            r = httpx.post(self.base_url + path, timeout=timeout_s, trust_env=False)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def stop(self, grace_s: float = 15.0) -> int | None:
        """SIGTERM the process group, then SIGKILL after `grace_s`; returns the engine's exit code."""
        if not self._stopped:
            self._stopped = True
            kill_group(self.pgid, self.proc, grace_s=grace_s)
            with _LIVE_LOCK:
                _LIVE.pop(self.pgid, None)
        return self.proc.poll()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RunningEngine({self.engine.name}, pid={self.pid}, url={self.base_url})"


def _start(engine: Engine, argv: list[str], env_flags: Mapping[str, str], log_path: Path,
           host: str, port: int) -> RunningEngine:
    env = {**os.environ, **engine.build_env(env_flags)}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as logf:
        logf.write(f"[tuner] argv: {argv!r}\n".encode())
        logf.flush()
        try:
            popen_argv, preexec = _popen_argv(argv)
            proc = subprocess.Popen(
                popen_argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, preexec_fn=preexec, close_fds=True,  # noqa: PLW1509 - only when single-threaded (_popen_argv)
            )
        except FileNotFoundError as exc:
            raise EngineLaunchError(
                f"cannot start {engine.name}: {argv[0]!r} not found ({exc.strerror}). Install the engine "
                "or point the tuner at its interpreter/executable.",
                kind="crash", log_path=log_path,
            ) from None
    running = RunningEngine(engine, argv, proc, host=host, port=port, log_path=log_path)
    with _LIVE_LOCK:
        _LIVE[running.pgid] = running
    return running


def _failure(running: RunningEngine, kind: str | None, what: str) -> EngineLaunchError:
    tail = running.log_tail()
    kind = kind or classify_failure(tail) or classify_failure(read_log_tail(running.log_path, 400)) or "crash"
    return EngineLaunchError(
        f"{running.engine.name} {what} [{kind}]. Log {running.log_path}, last lines:\n{tail}",
        kind=kind, log_path=running.log_path, log_tail=tail,
    )


def wait_ready(running: RunningEngine, ready_timeout_s: float, poll_interval_s: float = 0.25) -> float:
    """Poll GET health until 200 while watching the process; returns seconds to ready."""
    t0 = time.monotonic()
    url = running.base_url + running.engine.health_path
    with httpx.Client(timeout=5.0, trust_env=False) as client:  # engine is local: no proxies
        while True:
            code = running.exit_code()
            if code is not None:
                raise _failure(running, None, f"exited with code {code} before becoming ready")
            try:
                if client.get(url).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass  # not listening yet, or busy loading
            if time.monotonic() - t0 > ready_timeout_s:
                raise _failure(running, "timeout",
                               f"was not healthy (GET {url} != 200) within {ready_timeout_s:g} s")
            time.sleep(poll_interval_s)


def launch(
    engine: Engine,
    model: str,
    flags: Mapping[str, FlagValue],
    env_flags: Mapping[str, str] | None = None,
    *,
    log_dir: Path | str,
    ready_timeout_s: float,
    host: str = "127.0.0.1",
    port: int | None = None,
    port_retries: int = 2,
    poll_interval_s: float = 0.25,
) -> RunningEngine:
    """Start `engine` serving `model` with `flags`, wait for GET health == 200, return it running.

    Raises EngineLaunchError (and leaves no process behind) when it exits, times out or cannot start.
    A port taken between our pick and the engine's bind is retried with a new port.
    """
    _install_exit_handlers()
    env_flags = dict(env_flags or {})
    log_dir = Path(log_dir)
    attempts = 1 + (0 if port is not None else max(0, port_retries))
    for attempt in range(attempts):
        chosen = port if port is not None else free_port(host)
        argv = engine.build_argv(model, chosen, flags, host=host)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        log_path = log_dir / f"{engine.name}-{stamp}-{chosen}.log"
        running = _start(engine, argv, env_flags, log_path, host, chosen)
        try:
            running.ready_s = wait_ready(running, ready_timeout_s, poll_interval_s)
            log.info("%s ready on %s after %.1f s (log %s)", engine.name, running.base_url,
                     running.ready_s, log_path)
            return running
        except EngineLaunchError as exc:
            running.stop(grace_s=5.0)
            if exc.kind == "port_in_use" and attempt + 1 < attempts:
                log.warning("port %d was taken; retrying on another port", chosen)
                continue
            raise
        except BaseException:
            running.stop(grace_s=5.0)
            raise
    raise AssertionError("unreachable")


@functools.lru_cache(maxsize=16)
def _help_text(argv: tuple[str, ...], timeout_s: float) -> str:
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
    except FileNotFoundError:
        raise TunerError(
            f"cannot run {' '.join(argv)}: {argv[0]!r} not found. Is the engine installed?"
        ) from None
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid, proc, grace_s=2)
        raise TunerError(f"{' '.join(argv)} did not finish within {timeout_s:g} s") from None
    finally:
        if proc.poll() is None:
            kill_group(proc.pid, proc, grace_s=2)
    text = out.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise TunerError(f"{' '.join(argv)} failed (exit {proc.returncode}):\n"
                         + "\n".join(text.splitlines()[-10:]))
    return text


def read_supported_flags(engine: Engine, timeout_s: float = 180.0) -> set[str]:
    """The flags this engine build accepts, from its --help (cached per command line)."""
    return engine.parse_supported_flags(_help_text(tuple(engine.help_argv()), timeout_s))


def read_flag_surface(engine: Engine, timeout_s: float = 180.0) -> FlagSurface:
    """What this engine build accepts: its parser dumped as JSON when the engine can (SGLang, the
    simulator), else the names its --help lists. Cached per command line for the life of the process.
    Raises TunerError when neither can be read (engine not installed, --help failing)."""
    argv = engine.surface_argv()
    if argv:
        try:
            return engine.parse_surface(_help_text(tuple(argv), timeout_s))
        except TunerError as exc:
            log.info("cannot dump %s's parser (%s); reading its --help instead", engine.name,
                     str(exc).splitlines()[0])
    return surface_from_help(_help_text(tuple(engine.help_argv()), timeout_s), engine=engine.name)
