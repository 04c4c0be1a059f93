"""Input and environment mistakes on the command line: one `tuner: error:` line and exit 2, never a traceback,
and nothing launched."""

from __future__ import annotations

import pytest

from tuner.cli import main


def _one_error_line(capsys) -> str:
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("tuner: error: ")
    return line


def test_an_unknown_log_level_is_one_line(tmp_path, capsys):
    assert main(["--log-level", "LOUD", "--data-dir", str(tmp_path), "models", "list"]) == 2
    line = _one_error_line(capsys)
    assert "--log-level 'LOUD'" in line and "DEBUG" in line


def test_an_unknown_log_level_from_the_environment_names_the_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TUNER_LOG_LEVEL", "chatty")
    assert main(["--data-dir", str(tmp_path), "models", "list"]) == 2
    assert "TUNER_LOG_LEVEL 'chatty'" in _one_error_line(capsys)


@pytest.mark.parametrize(
    ("flag", "where", "words"),
    [
        ("--log-dir", "file", "--log-dir"),
        ("--log-dir", "under-file", "a part of the path is a file"),
        ("--json", "folder", "is a folder"),
        ("--json", "under-file", "is a file, not a folder"),
        ("--data-dir", "under-file", "--data-dir"),
    ],
)
def test_bench_output_paths_are_checked_before_launching(tmp_path, capsys, flag, where, words):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    path = {"file": a_file, "under-file": a_file / "sub", "folder": tmp_path}[where]
    argv = ["--data-dir", str(path if flag == "--data-dir" else tmp_path / "data"), "bench", "--engine", "sim",
            "--model", "GLM-4.7-FP8", "--no-store"]
    if flag != "--data-dir":
        argv += [flag, str(path)]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert words in line and str(path) in line
    assert not (tmp_path / "data" / "logs").exists() or not any((tmp_path / "data" / "logs").iterdir())
