"""A private PostgreSQL server for one test run: Debian's binaries, its own data folder and port, torn down.

Used by the `postgres_url` fixture in tests/conftest.py. Commands are argument lists, never shell strings. As
root, initdb and postgres refuse to run, so they run as the `postgres` user the Debian package creates.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
DATABASE = "tuner_test"
READY_TIMEOUT_S = 60.0
PORT_ATTEMPTS = 3  # another process may take the free port we picked before the server binds it


def find_postgres_bin() -> Path | None:
    """The bin folder of the newest installed PostgreSQL server (one that has initdb, postgres and pg_ctl)."""
    candidates = [
        folder
        for folder in Path("/").glob(POSTGRES_BIN_GLOB.lstrip("/"))
        if all((folder / tool).is_file() for tool in ("initdb", "postgres", "pg_ctl"))
    ]
    if not candidates:
        return None

    def version(folder: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name))

    return max(candidates, key=version)


@contextlib.contextmanager
def running_postgres(bin_dir: Path) -> Iterator[str]:
    """Start a server on 127.0.0.1 at a free port, create database `tuner_test`, yield its SQLAlchemy URL;
    stop the server and delete its folder afterwards, whatever happened."""
    run_as = _run_as()
    # Not pytest's tmp_path: that folder is private to root, and the server may run as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="tuner-pg-"))
    try:
        data, sockets = base / "data", base / "sockets"
        sockets.mkdir()
        if run_as:
            for path in (base, sockets):
                shutil.chown(path, "postgres", "postgres")
        initdb = [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]
        done = subprocess.run(
            [*run_as, *initdb], check=False, cwd=base, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {(done.stderr or done.stdout).strip()}")
        for attempt in range(PORT_ATTEMPTS):
            port = _free_port()
            log_path = base / f"server-{attempt}.log"
            with _server(bin_dir, run_as, data, sockets, port, log_path) as started:
                if started:
                    _create_database(port)
                    yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{DATABASE}"
                    return
        raise RuntimeError(
            f"PostgreSQL did not start on any of {PORT_ATTEMPTS} ports; log:\n{_tail(log_path)}"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def _server(
    bin_dir: Path, run_as: list[str], data: Path, sockets: Path, port: int, log_path: Path
) -> Iterator[bool]:
    """Run the server (in its own process group); yields whether it became ready; always stops it."""
    argv = [
        str(bin_dir / "postgres"),
        "-D", str(data),
        "-p", str(port),
        "-h", "127.0.0.1",
        "-k", str(sockets),
        # a throwaway database: durability buys nothing, and these make the run faster
        "-c", "fsync=off",
        "-c", "synchronous_commit=off",
        "-c", "full_page_writes=off",
    ]  # fmt: skip
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [*run_as, *argv], cwd=data.parent, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        ready = _wait_ready(server, port, log_path)
        yield ready
    finally:
        _stop(server, bin_dir, run_as, data)


def _wait_ready(server: subprocess.Popen[bytes], port: int, log_path: Path) -> bool:
    import psycopg

    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            if "could not bind" in _tail(log_path) or "Address already in use" in _tail(log_path):
                return False  # the port was taken after all: try another
            raise RuntimeError(
                f"PostgreSQL exited with {server.returncode} while starting; log:\n{_tail(log_path)}"
            )
        try:
            psycopg.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2
            ).close()
            return True
        except psycopg.OperationalError:
            time.sleep(0.1)
    raise RuntimeError(
        f"PostgreSQL did not accept connections within {READY_TIMEOUT_S:.0f} s; log:\n{_tail(log_path)}"
    )


def _stop(server: subprocess.Popen[bytes], bin_dir: Path, run_as: list[str], data: Path) -> None:
    if server.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(
                [*run_as, str(bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w"],
                check=False,
                capture_output=True,
                timeout=30,
            )
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    # Whatever is left of the group (pg_ctl failed, a backend lingers) goes with SIGKILL.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=10)


def _create_database(port: int) -> None:
    import psycopg

    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}")  # a constant name, not input


def _run_as() -> list[str]:
    """The prefix that runs a command as `postgres` when we are root; nothing otherwise."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("running as root, but there is no `postgres` user to run the server as") from exc
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError(
            "running as root, but `runuser` (util-linux) is missing to run the server as postgres"
        )
    return [runuser, "-u", "postgres", "--"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
