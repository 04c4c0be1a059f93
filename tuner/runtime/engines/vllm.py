"""vLLM: `vllm serve MODEL --port P [flags]`, JSON-valued flags (--speculative-config) as one argument.

Booleans are argparse BooleanOptionalAction flags in vLLM: False becomes `--no-<flag>`.
Nothing here runs vLLM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
from tuner.runtime.engines.surface import FlagSurface, map_flags

VLLM_METRICS = MetricNames(
    ttft_histogram="vllm:time_to_first_token_seconds",
    itl_histogram="vllm:inter_token_latency_seconds",
    e2e_histogram="vllm:e2e_request_latency_seconds",
    queue_histogram="vllm:request_queue_time_seconds",
    prompt_tokens_counter="vllm:prompt_tokens_total",
    generation_tokens_counter="vllm:generation_tokens_total",
    cached_tokens_counter="vllm:prefix_cache_hits_total",
    requests_counter="vllm:request_success_total",
    running_gauge=GaugeName("vllm:num_requests_running", "sum"),
    queued_gauge=GaugeName("vllm:num_requests_waiting", "sum"),
    token_usage_gauge=GaugeName("vllm:kv_cache_usage_perc", "mean"),
    spec_drafts_counter="vllm:spec_decode_num_drafts_total",
    spec_accepted_tokens_counter="vllm:spec_decode_num_accepted_tokens_total",
)


@dataclass(frozen=True)
class VllmEngine:
    """`executable` is the `vllm` entry point to run (default: the one on PATH)."""

    executable: str = "vllm"
    name: str = "vllm"
    health_path: str = "/health"
    server_info_path: str | None = "/version"  # vLLM has no server_info; {"version": ...} stands in
    flush_cache_path: str | None = "/reset_prefix_cache"  # only served with VLLM_SERVER_DEV_MODE=1
    ready_log_line: str = "Application startup complete."
    metric_names: MetricNames = VLLM_METRICS

    def build_argv(
        self, model: str, port: int, flags: Mapping[str, FlagValue], *, host: str = "127.0.0.1"
    ) -> list[str]:
        check_reserved(flags)
        return [
            self.executable, "serve", model, "--host", host, "--port", str(port),
            *flags_to_argv(flags, false_style="negate"),
        ]

    def build_env(self, env_flags: Mapping[str, str]) -> dict[str, str]:
        return {str(k): str(v) for k, v in env_flags.items()}

    def help_argv(self) -> list[str]:
        return [self.executable, "serve", "--help=all"]

    def parse_supported_flags(self, help_text: str) -> set[str]:
        return parse_help_flags(help_text)

    def surface_argv(self) -> list[str] | None:
        return None  # names from `vllm serve --help=all`

    def parse_surface(self, text: str) -> FlagSurface:
        raise NotImplementedError("vLLM's surface is read from its --help")

    def map_flags(self, flags: Mapping[str, FlagValue], surface: FlagSurface) -> dict[str, FlagValue]:
        """Names checked against vLLM's --help (values are checked by vLLM itself)."""
        return map_flags(flags, surface)

    def spec_accept_length(
        self, engine_metrics_delta: MetricsView | None, server_info: Mapping[str, Any] | None
    ) -> float | None:
        """1 + accepted draft tokens / drafts, from the counter deltas over the measured window."""
        names = self.metric_names
        if engine_metrics_delta is None or not names.spec_drafts_counter:
            return None
        assert names.spec_accepted_tokens_counter is not None
        drafts = engine_metrics_delta.counter(names.spec_drafts_counter)
        accepted = engine_metrics_delta.counter(names.spec_accepted_tokens_counter)
        if drafts is None or accepted is None or drafts <= 0:
            return None
        return 1.0 + accepted / drafts

    def version(self, server_info: Mapping[str, Any] | None) -> str | None:
        if server_info and isinstance(server_info.get("version"), str):
            return str(server_info["version"])
        return None
