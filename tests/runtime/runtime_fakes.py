"""Test helpers: an `Engine` description that runs tests/runtime/fake_engine.py with a chosen mode."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.runtime.engines.base import FlagValue, MetricNames, MetricsView, flags_to_argv, parse_help_flags
from tuner.runtime.engines.sglang import SGLANG_METRICS
from tuner.runtime.engines.surface import FlagSurface, map_flags

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")


@dataclass(frozen=True)
class FakeEngine:
    mode: str = "ok"
    extra: tuple[str, ...] = ()
    name: str = "fake"
    health_path: str = "/health"
    server_info_path: str | None = "/server_info"
    flush_cache_path: str | None = "/flush_cache"
    ready_log_line: str = "The server is fired up and ready to roll!"
    metric_names: MetricNames = SGLANG_METRICS

    def build_argv(self, model: str, port: int, flags: Mapping[str, FlagValue], *,
                   host: str = "127.0.0.1") -> list[str]:
        return [sys.executable, str(FAKE_ENGINE), "--model-path", model, "--host", host, "--port", str(port),
                "--enable-metrics", "--mode", self.mode, *self.extra, *flags_to_argv(flags)]

    def build_env(self, env_flags: Mapping[str, str]) -> dict[str, str]:
        return dict(env_flags)

    def help_argv(self) -> list[str]:
        return [sys.executable, str(FAKE_ENGINE), "--help"]

    def parse_supported_flags(self, help_text: str) -> set[str]:
        return parse_help_flags(help_text)

    def surface_argv(self) -> list[str] | None:
        return None

    def parse_surface(self, text: str) -> FlagSurface:
        raise NotImplementedError

    def map_flags(self, flags: Mapping[str, FlagValue], surface: FlagSurface) -> dict[str, FlagValue]:
        return map_flags(flags, surface)

    def spec_accept_length(self, engine_metrics_delta: MetricsView | None,
                           server_info: Mapping[str, Any] | None) -> float | None:
        return None

    def version(self, server_info: Mapping[str, Any] | None) -> str | None:
        return "fake"
