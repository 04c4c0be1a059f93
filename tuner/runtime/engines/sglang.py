"""SGLang: `python -m sglang.launch_server --model-path M --port P --enable-metrics [flags]`.

Readiness is GET /health answering 200 (the port opens before the model loads). Nothing here runs SGLang.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tuner.runtime.engines.base import (
    FlagValue,
    GaugeName,
    MetricNames,
    MetricsView,
    check_reserved,
    flags_to_argv,
    parse_help_flags,
)

SGLANG_METRICS = MetricNames(
    ttft_histogram="sglang:time_to_first_token_seconds",
    itl_histogram="sglang:inter_token_latency_seconds",
    e2e_histogram="sglang:e2e_request_latency_seconds",
    queue_histogram="sglang:queue_time_seconds",
    prompt_tokens_counter="sglang:prompt_tokens_total",
    generation_tokens_counter="sglang:generation_tokens_total",
    cached_tokens_counter="sglang:cached_tokens_total",
    requests_counter="sglang:num_requests_total",
    running_gauge=GaugeName("sglang:num_running_reqs", "sum"),
    queued_gauge=GaugeName("sglang:num_queue_reqs", "sum"),
    token_usage_gauge=GaugeName("sglang:token_usage", "mean"),
    spec_accept_length_gauge=GaugeName("sglang:spec_accept_length", "mean"),
)


def _internal_states(server_info: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    states = server_info.get("internal_states")
    if isinstance(states, Mapping):
        return [states]
    if isinstance(states, list):
        return [s for s in states if isinstance(s, Mapping)]
    return []


def sglang_spec_accept_length(
    engine_metrics_delta: MetricsView | None, server_info: Mapping[str, Any] | None, gauge: str
) -> float | None:
    """server_info internal_states avg_spec_accept_length (mean over DP ranks), else the gauge."""
    if server_info is not None:
        if "speculative_algorithm" in server_info and not server_info.get("speculative_algorithm"):
            return None  # no speculation: acceptance is not a thing
        values = []
        for state in _internal_states(server_info):
            value = state.get("avg_spec_accept_length")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                values.append(float(value))
        if values:
            return sum(values) / len(values)
    if engine_metrics_delta is not None:
        value = engine_metrics_delta.gauge(gauge, "mean")
        if value is not None and value > 0:
            return value
    return None


@dataclass(frozen=True)
class SGLangEngine:
    """`python` is the interpreter that has sglang installed (default: this one)."""

    python: str = field(default_factory=lambda: sys.executable)
    name: str = "sglang"
    module: str = "sglang.launch_server"  # run as `python -m module`
    health_path: str = "/health"
    server_info_path: str | None = "/server_info"
    flush_cache_path: str | None = "/flush_cache"
    ready_log_line: str = "The server is fired up and ready to roll!"
    metric_names: MetricNames = SGLANG_METRICS

    def build_argv(
        self, model: str, port: int, flags: Mapping[str, FlagValue], *, host: str = "127.0.0.1"
    ) -> list[str]:
        check_reserved(flags)
        return [
            self.python, "-m", self.module,
            "--model-path", model, "--host", host, "--port", str(port), "--enable-metrics",
            *flags_to_argv(flags, false_style="omit"),
        ]

    def build_env(self, env_flags: Mapping[str, str]) -> dict[str, str]:
        return {str(k): str(v) for k, v in env_flags.items()}

    def help_argv(self) -> list[str]:
        return [self.python, "-m", self.module, "--help"]

    def parse_supported_flags(self, help_text: str) -> set[str]:
        return parse_help_flags(help_text)

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
