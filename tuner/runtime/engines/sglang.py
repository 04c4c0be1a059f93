"""SGLang: `python -m sglang.launch_server --model-path M --port P --enable-metrics [flags]`.

Readiness is GET /health answering 200 (the port opens before the model loads). Flags are written in the
installed version's spelling: its parser is dumped once (surface_argv) and knobs spelled the seed-era way
(`cuda-graph-max-bs`, `--disable-cuda-graph`, `--enable-dp-attention`) are mapped onto it. Nothing here runs
SGLang.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tuner.errors import TunerError
from tuner.runtime.engines.base import (
    FlagValue,
    GaugeName,
    MetricNames,
    MetricsView,
    check_reserved,
    flags_to_argv,
    parse_help_flags,
)
from tuner.runtime.engines.surface import FlagSurface, Knob, Range, map_flags, surface_from_dump

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


# Settings SGLang renamed between the seeds' versions and 0.5.23 (the old spellings now exit 2 as
# ambiguous prefixes); any spelling is taken as input, the installed one is written.
SGLANG_KNOBS: tuple[Knob, ...] = (
    Knob(("cuda-graph-max-bs", "cuda-graph-max-bs-decode")),
    Knob(("cuda-graph-bs", "cuda-graph-bs-decode")),
)

# What SGLang checks after parsing (server_args.py __post_init__ and friends), keyed by primary name.
SGLANG_RANGES: dict[str, Range] = {
    "mem-fraction-static": Range(0.0, 1.0, open_low=True, open_high=True),
    "max-running-requests": Range(1),
    "chunked-prefill-size": Range(1, also=(-1,)),
    "max-prefill-tokens": Range(1),
    "cuda-graph-max-bs": Range(1),
    "cuda-graph-max-bs-decode": Range(1),
    "cuda-graph-max-bs-prefill": Range(1),
    "cuda-graph-bs": Range(1),
    "cuda-graph-bs-decode": Range(1),
    "cuda-graph-bs-prefill": Range(1),
    "torch-compile-max-bs": Range(1),
    "tp-size": Range(1),
    "dp-size": Range(1),
    "attn-dp-size": Range(1),
    "ep-size": Range(1),
    "page-size": Range(1),
    "context-length": Range(1),
    "schedule-conservativeness": Range(0.0, open_low=True),
    "speculative-num-steps": Range(1),
    "speculative-eagle-topk": Range(1),
    "speculative-num-draft-tokens": Range(1),
}

FORK_ONLY_NOTE = ("SUFFIX speculation and its --speculative-suffix-* flags exist only in SGLang forks; the "
                  "simulator has them under --sim-sglang seed")

# Run by the engine's own interpreter: dump ServerArgs' argparse parser as the JSON FlagSurface reads.
SGLANG_DUMP_SCRIPT = """
import argparse, json
import sglang
from sglang.srt.server_args import ServerArgs
p = argparse.ArgumentParser()
ServerArgs.add_cli_args(p)
flags = {}
for a in p._actions:
    longs = [s for s in a.option_strings if s.startswith('--')]
    if not longs or a.dest == 'help':
        continue
    for s in longs:
        flags[s] = {'primary': longs[0], 'dest': a.dest, 'type': getattr(a.type, '__name__', str(a.type)),
                    'default': repr(a.default), 'nargs': a.nargs, 'action': type(a).__name__,
                    'choices': [str(c) for c in a.choices] if a.choices is not None else None}
print(json.dumps({'version': getattr(sglang, '__version__', None), 'flags': flags}))
"""


def _given(flags: Mapping[str, Any], name: str) -> Any:
    for key, value in flags.items():
        if str(key).lstrip("-").replace("_", "-") == name:
            return value
    return None


def _rewrite_disable_cuda_graph(value: Any, flags: Mapping[str, Any], surface: FlagSurface) -> Any:
    """0.5.23: --disable-cuda-graph is deprecated for --cuda-graph-backend-{decode,prefill}=disabled."""
    if "cuda-graph-backend-decode" not in surface.specs:
        return None
    if value is True or str(value).lower() == "true":
        return {"cuda-graph-backend-decode": "disabled", "cuda-graph-backend-prefill": "disabled"}
    return {}


def _rewrite_dp_attention(value: Any, flags: Mapping[str, Any], surface: FlagSurface) -> Any:
    """0.5.23: --enable-dp-attention (with --dp-size N) is deprecated for --attn-dp-size N."""
    if "attn-dp-size" not in surface.specs:
        return None
    if not (value is True or str(value).lower() == "true"):
        return {}
    dp_size = _given(flags, "dp-size")
    if dp_size is None:
        return (f"--enable-dp-attention needs --dp-size N ({surface.label()} writes DP attention as "
                "--attn-dp-size N)")
    return {"attn-dp-size": dp_size}


def _rewrite_spec_algorithm(value: Any, flags: Mapping[str, Any], surface: FlagSurface) -> Any:
    if str(value).upper() == "SUFFIX" and not any(n.startswith("speculative-suffix-") for n in surface.specs):
        return f"--speculative-algorithm SUFFIX is not in {surface.label()} ({FORK_ONLY_NOTE})"
    return None


SGLANG_REWRITES = {
    "disable-cuda-graph": _rewrite_disable_cuda_graph,
    "enable-dp-attention": _rewrite_dp_attention,
    "speculative-algorithm": _rewrite_spec_algorithm,
}


def with_fork_notes(surface: FlagSurface) -> FlagSurface:
    """The surface, with why the fork-only SUFFIX flags are missing from it (if they are)."""
    fork_flags = ("speculative-suffix-cache-max-depth", "speculative-suffix-max-spec-factor",
                  "speculative-suffix-max-spec-offset", "speculative-suffix-min-token-prob",
                  "speculative-suffix-max-cached-requests", "speculative-suffix-max-tree-depth")
    notes = {n: FORK_ONLY_NOTE for n in fork_flags if n not in surface.specs}
    return replace(surface, notes={**notes, **surface.notes}) if notes else surface


def parse_surface_dump(text: str, engine: str) -> FlagSurface:
    """The last JSON line a parser dump printed -> FlagSurface (TunerError when there is none)."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return with_fork_notes(surface_from_dump(json.loads(line), engine=engine))
            except ValueError:
                break
    raise TunerError(f"the {engine} parser dump printed no JSON surface")


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

    def surface_argv(self) -> list[str] | None:
        """The command that prints this SGLang build's parser as JSON (see SGLANG_DUMP_SCRIPT)."""
        return [self.python, "-c", SGLANG_DUMP_SCRIPT]

    def parse_surface(self, text: str) -> FlagSurface:
        return parse_surface_dump(text, self.name)

    def map_flags(self, flags: Mapping[str, FlagValue], surface: FlagSurface) -> dict[str, FlagValue]:
        """Knob-named flags (seed-era or current spelling) -> this SGLang version's spelling, values checked
        against its parser and SGLang's ranges (UnknownFlagError / FlagValueError before any launch)."""
        return map_flags(flags, with_fork_notes(surface), knobs=SGLANG_KNOBS, rewrites=SGLANG_REWRITES,
                         ranges=SGLANG_RANGES)

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
