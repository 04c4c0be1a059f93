"""`tuner db upgrade` and `tuner db info` through the CLI entry point."""

from __future__ import annotations

import pytest

from tuner.cli import main
from tuner.store import kernels, migrate
from tuner.store.db import open_database


def test_db_info_on_a_missing_file_creates_nothing(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "tuner.db"
    assert main(["--database-url", f"sqlite:///{path}", "db", "info"]) == 0
    out = capsys.readouterr().out
    assert "revision:  none" in out and str(path) in out
    assert not path.exists()


def test_db_upgrade_then_info_shows_revision_and_counts(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    assert main(["--database-url", url, "db", "upgrade"]) == 0
    assert f"migrated from (empty) to revision {migrate.head_revision()}" in capsys.readouterr().out
    assert main(["--database-url", url, "db", "upgrade"]) == 0
    assert "already at revision" in capsys.readouterr().out

    db = open_database(url)
    ctx = kernels.MeasurementContext("fused_moe", "tuner", "H100", "3.6", "v1")
    for i in range(3):
        kernels.record_measurement(
            db, ctx, "s", kernels.Measurement(1, f"c{i}", "ok", 1.0 + i, None, None, None, 0)
        )
    db.dispose()

    assert main(["--database-url", url, "db", "info"]) == 0
    out = capsys.readouterr().out
    assert f"revision:  {migrate.head_revision()} (newest)" in out
    counts = dict(line.split() for line in out.splitlines() if line.startswith("  "))
    assert counts == {
        "kernel_measurements": "3",
        "kernel_sweeps": "0",
        "kernel_best_configs": "0",
        "bench_runs": "0",
        "flag_studies": "0",
        "flag_trials": "0",
    }


def test_db_info_uses_the_environment_url(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TUNER_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert main(["db", "upgrade"]) == 0
    assert main(["db", "info"]) == 0
    assert "env.db" in capsys.readouterr().out


def test_db_bad_url_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--database-url", "nonsense", "db", "info"]) == 2
    assert "tuner: error: not a database URL" in capsys.readouterr().err
