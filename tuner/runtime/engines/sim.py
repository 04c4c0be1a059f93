"""The simulated engine (tuner.runtime.sim): SGLang's flags, endpoints and metric names, no GPU.

Its extra options (--gpu, --time-scale, --seed) are fields of `SimEngine`, not user flags.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tuner.runtime.engines.base import (
    FlagValue,
    MetricNames,
    MetricsView,
    check_reserved,
    flags_to_argv,
    parse_help_flags,
)
from tuner.runtime.engines.sglang import SGLANG_METRICS, sglang_spec_accept_length

SIM_OWN_FLAGS = frozenset({"gpu", "time-scale", "seed"})


@dataclass(frozen=True)
class SimEngine:
    gpu: str = "H200"
    time_scale: float = 1.0
    seed: int = 0
    python: str = field(default_factory=lambda: sys.executable)
    name: str = "sim"
    health_path: str = "/health"
    server_info_path: str | None = "/server_info"
    flush_cache_path: str | None = "/flush_cache"
    ready_log_line: str = "The server is fired up and ready to roll!"
    metric_names: MetricNames = SGLANG_METRICS

    def build_argv(
        self, model: str, port: int, flags: Mapping[str, FlagValue], *, host: str = "127.0.0.1"
    ) -> list[str]:
        check_reserved(flags)
        own = [k for k in flags if k.lstrip("-").replace("_", "-") in SIM_OWN_FLAGS]
        if own:
            from tuner.errors import TunerError

            raise TunerError(
                f"flag(s) {', '.join(own)} belong to the simulator itself: use --sim-gpu, --time-scale "
                "and --seed instead of --flag"
            )
        return [
            self.python, "-m", "tuner.runtime.sim",
            "--model-path", model, "--host", host, "--port", str(port), "--enable-metrics",
            *flags_to_argv(flags, false_style="omit"),
            "--seed", str(self.seed), "--time-scale", f"{self.time_scale:g}", "--gpu", self.gpu,
        ]

    def build_env(self, env_flags: Mapping[str, str]) -> dict[str, str]:
        return {str(k): str(v) for k, v in env_flags.items()}

    def help_argv(self) -> list[str]:
        return [self.python, "-m", "tuner.runtime.sim", "--help"]

    def parse_supported_flags(self, help_text: str) -> set[str]:
        return parse_help_flags(help_text) - SIM_OWN_FLAGS

    def spec_accept_length(
        self, engine_metrics_delta: MetricsView | None, server_info: Mapping[str, Any] | None
    ) -> float | None:
        assert self.metric_names.spec_accept_length_gauge is not None
        return sglang_spec_accept_length(
            engine_metrics_delta, server_info, self.metric_names.spec_accept_length_gauge.name
        )

    def version(self, server_info: Mapping[str, Any] | None) -> str | None:
        if server_info and isinstance(server_info.get("version"), str):
            return str(server_info["version"])
        return None
