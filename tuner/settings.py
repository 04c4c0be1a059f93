"""One settings object for the CLI and the service: defaults, then environment, then explicit flags.

Environment variables: TUNER_DATABASE_URL, TUNER_DATA_DIR, TUNER_LOG_LEVEL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path


def default_data_dir() -> Path:
    """The user's data folder ($XDG_DATA_HOME/tuner, else ~/.local/share/tuner)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tuner"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str = ""  # empty: a SQLite file in data_dir
    log_level: str = "INFO"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'tuner.db'}"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        s = cls()
        if env.get("TUNER_DATA_DIR"):
            s = replace(s, data_dir=Path(env["TUNER_DATA_DIR"]).expanduser())
        if env.get("TUNER_DATABASE_URL"):
            s = replace(s, database_url=env["TUNER_DATABASE_URL"])
        if env.get("TUNER_LOG_LEVEL"):
            s = replace(s, log_level=env["TUNER_LOG_LEVEL"])
        return s

    def with_overrides(self, **overrides: object) -> Settings:
        """Apply CLI flags; None means 'not given' and keeps the current value."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if "data_dir" in given:
            given["data_dir"] = Path(str(given["data_dir"])).expanduser()
        return replace(self, **given)  # type: ignore[arg-type]
