"""What the tuner needs to know about a serving engine: argv, environment, readiness, metric names.

One `Engine` per implementation (sglang.py, vllm.py, sim.py). Nothing here starts a process or talks HTTP;
the launcher and the scraper use these descriptions.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from tuner.errors import TunerError
from tuner.runtime.engines.surface import FlagSurface, UnknownFlagError

Scalar = bool | int | float | str
FlagValue = Scalar | Sequence[Scalar] | Mapping[str, Any] | None

# Flags the launcher sets itself; a user value for them would fight the launcher.
RESERVED_FLAGS: frozenset[str] = frozenset({"port", "host", "model-path", "model", "enable-metrics"})


@dataclass(frozen=True)
class GaugeName:
    """A gauge and how to combine its series (one per rank/label set): 'sum' for counts, 'mean' for ratios."""

    name: str
    combine: str = "sum"


@dataclass(frozen=True)
class MetricNames:
    """Our concepts -> the engine's Prometheus names. None: the engine has no such metric."""

    ttft_histogram: str
    itl_histogram: str
    e2e_histogram: str
    queue_histogram: str | None
    prompt_tokens_counter: str
    generation_tokens_counter: str
    cached_tokens_counter: str | None
    requests_counter: str | None
    running_gauge: GaugeName
    queued_gauge: GaugeName
    token_usage_gauge: GaugeName | None = None
    spec_accept_length_gauge: GaugeName | None = None
    spec_drafts_counter: str | None = None
    spec_accepted_tokens_counter: str | None = None

    def gauges(self) -> dict[str, GaugeName]:
        """Concept -> gauge, for the sampler (only those this engine has)."""
        named = {
            "running": self.running_gauge,
            "queued": self.queued_gauge,
            "token_usage": self.token_usage_gauge,
            "spec_accept_length": self.spec_accept_length_gauge,
        }
        return {k: v for k, v in named.items() if v is not None}


class MetricsView(Protocol):
    """The part of a scrape delta an engine needs to compute acceptance (see tuner.runtime.scraper.Delta)."""

    def counter(self, name: str) -> float | None: ...

    def gauge(self, name: str, combine: str = "sum") -> float | None: ...


@runtime_checkable
class Engine(Protocol):
    """An engine description (implementations are frozen dataclasses, so the attributes are read-only)."""

    @property
    def name(self) -> str: ...

    @property
    def health_path(self) -> str:
        """GET path that answers 200 once the engine is ready to serve."""
        ...

    @property
    def server_info_path(self) -> str | None: ...

    @property
    def flush_cache_path(self) -> str | None: ...

    @property
    def ready_log_line(self) -> str:
        """The log line that marks readiness (informative; readiness is decided by health_path)."""
        ...

    @property
    def metric_names(self) -> MetricNames: ...

    def build_argv(
        self, model: str, port: int, flags: Mapping[str, FlagValue], *, host: str = "127.0.0.1"
    ) -> list[str]:
        """The full command line (a list, never a shell string)."""
        ...

    def build_env(self, env_flags: Mapping[str, str]) -> dict[str, str]:
        """Environment variables to add to the inherited environment."""
        ...

    def help_argv(self) -> list[str]:
        """The command that prints every flag this engine build accepts."""
        ...

    def parse_supported_flags(self, help_text: str) -> set[str]: ...

    def surface_argv(self) -> list[str] | None:
        """The command that prints this build's parser as JSON (surface.surface_from_dump's shape), or None
        when the engine has none (its --help is read instead)."""
        ...

    def parse_surface(self, text: str) -> FlagSurface:
        """What surface_argv printed -> the surface (TunerError when it is not one)."""
        ...

    def map_flags(self, flags: Mapping[str, FlagValue], surface: FlagSurface) -> dict[str, FlagValue]:
        """Flags as the user or a search space names them -> the installed version's spelling, checked
        against `surface` (UnknownFlagError, FlagValueError)."""
        ...

    def spec_accept_length(self, engine_metrics_delta: MetricsView | None,
                           server_info: Mapping[str, Any] | None) -> float | None:
        """Mean accepted tokens per verify step (1.0 without speculation), or None when unknown."""
        ...

    def version(self, server_info: Mapping[str, Any] | None) -> str | None: ...


def normalize_flag(key: str) -> str:
    """'--chunked_prefill_size', 'chunked_prefill_size', 'chunked-prefill-size' -> 'chunked-prefill-size'."""
    key = key.strip()
    if not key.lstrip("-"):
        raise TunerError(f"empty flag name {key!r}")
    return key.lstrip("-").replace("_", "-")


def _scalar_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        # 0.85 stays 0.85; 4096.0 becomes 4096 so int-typed flags parse.
        return str(int(value))
    return str(value)


def check_reserved(flags: Mapping[str, FlagValue]) -> None:
    for key in flags:
        if normalize_flag(key) in RESERVED_FLAGS:
            raise TunerError(
                f"flag --{normalize_flag(key)} is set by the tuner itself; remove it from the flags "
                "(the model is the --model option, the port is picked free)"
            )


def flags_to_argv(flags: Mapping[str, FlagValue], *, false_style: str = "omit") -> list[str]:
    """Argparse-style arguments: True -> '--key'; False -> omitted ('omit') or '--no-key' ('negate');
    lists -> '--key v1 v2'; mappings -> one JSON argument; dotted keys 'a.b=v' nest into the JSON of --a;
    None -> omitted. Order follows the mapping (dotted keys at the position of their first member)."""
    merged: dict[str, FlagValue] = {}
    for raw_key, value in flags.items():
        key = normalize_flag(raw_key)
        if "." in key:
            head, _, tail = key.partition(".")
            tail = tail.replace("-", "_")  # JSON config keys use underscores
            current = merged.get(head)
            if current is None:
                current = {}
            elif not isinstance(current, Mapping):
                raise TunerError(f"flag --{head} is given both as a value and as {key}=...")
            current = dict(current)
            if value is not None:
                current[tail] = value
            merged[head] = current
        else:
            if isinstance(merged.get(key), Mapping) and isinstance(value, Mapping):
                merged[key] = {**dict(merged[key]), **dict(value)}  # type: ignore[arg-type]
            else:
                merged[key] = value
    argv: list[str] = []
    for key, value in merged.items():
        if value is None:
            continue
        if isinstance(value, bool):
            if value:
                argv.append(f"--{key}")
            elif false_style == "negate":
                argv.append(f"--no-{key}")
            continue
        if isinstance(value, Mapping):
            argv += [f"--{key}", json.dumps(dict(value), separators=(",", ":"))]
            continue
        if isinstance(value, (list, tuple)):
            if not value:
                continue
            argv.append(f"--{key}")
            argv += [_scalar_str(v) for v in value]
            continue
        argv += [f"--{key}", _scalar_str(value)]
    return argv


_HELP_FLAG = re.compile(r"(?<![\w-])--([A-Za-z0-9][A-Za-z0-9_.-]*[A-Za-z0-9])")


def parse_help_flags(help_text: str) -> set[str]:
    """Every '--long-option' an argparse --help text mentions, without the dashes (dash-normalised)."""
    return {normalize_flag(m) for m in _HELP_FLAG.findall(help_text)}


def validate_flags(flags: Mapping[str, FlagValue], supported: set[str]) -> None:
    """Raise UnknownFlagError naming every flag not in `supported`, with close matches, before any launch."""
    problems = []
    for raw_key in flags:
        key = normalize_flag(raw_key).partition(".")[0]
        if key in supported:
            continue
        close = difflib.get_close_matches(key, sorted(supported), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join('--' + c for c in close)}?)" if close else ""
        problems.append(f"--{key}{hint}")
    if problems:
        raise UnknownFlagError(
            "the engine does not accept flag(s) " + "; ".join(problems)
            + ". Check the spelling against the engine's --help (forks rename flags)."
        )
