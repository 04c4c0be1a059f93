"""Workloads: seedable producers of sessions (one or more turns) to send to an engine.

A workload decides prompt contents and lengths only; when requests go out is the arrivals' job, and how
they are sent is the client's. Prompts are built to an intended token count by a `TextSource`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tuner.errors import TunerError

TextSource = Callable[[int, int], str]  # (n_tokens, seed) -> text of about n_tokens tokens

# Short, frequent English words: with a leading space each is one token in the common BPE vocabularies.
_WORDS = ["the", "of", "and", "to", "in", "is", "for", "on", "that", "with", "as", "by", "this", "from", "at", "are", "be", "it", "an", "or", "was", "which", "can", "have", "has", "not", "model", "cache", "batch", "layer", "value", "key", "state", "server", "request", "memory", "block", "thread", "input", "output", "stream", "time", "step", "load", "store", "read", "write", "file", "path", "line", "code", "test", "build", "run", "data", "table", "list", "point", "set", "map"]


def fallback_make_text(n_tokens: int, seed: int) -> str:
    """Common English words, one per intended token (real tokenizers keep these whole); for real engines."""
    rng = random.Random(seed)
    return " ".join(rng.choice(_WORDS) for _ in range(max(0, n_tokens)))


def default_text_source() -> TextSource:
    """The simulator's tokenizer (exact counts there) when present, else `fallback_make_text`."""
    try:
        from tuner.runtime.sim.tokenizer import make_text  # type: ignore[import-not-found]
    except ImportError:
        return fallback_make_text
    return make_text  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Turn:
    """One user message and the answer length asked for."""

    text: str
    input_len: int  # intended tokens of `text` (the server's usage numbers are what get reported)
    output_len: int


@dataclass(frozen=True)
class Session:
    """A conversation: turn k+1 is sent only after turn k's answer has fully arrived."""

    session_id: int
    turns: tuple[Turn, ...]
    system: str = ""  # a shared prefix / system prompt sent before the first turn
    system_len: int = 0
    arrival_s: float | None = None  # trace timestamp, relative to the trace's first request
    think_time_s: float = 0.0  # pause between an answer and the next turn


@runtime_checkable
class Workload(Protocol):
    name: str

    def sessions(self, seed: int) -> list[Session]:
        """The sessions to send (bounded; the same seed gives the same sessions)."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-able parameters, stored with results."""
        ...


def _lengths(rng: random.Random, mean_len: int, range_ratio: float, n: int) -> list[int]:
    # bench_serving's convention: uniform in [len * range_ratio, len]; range_ratio 1.0 means fixed lengths.
    low = max(1, int(mean_len * range_ratio))
    return [rng.randint(low, max(low, mean_len)) for _ in range(n)]


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise TunerError(f"{name.replace('_', '-')} must be positive, got {value}")


@dataclass(frozen=True)
class RandomWorkload:
    """Independent prompts of random content (bench_serving's 'random' dataset)."""

    num_prompts: int
    input_len: int = 1024
    output_len: int = 128
    range_ratio: float = 1.0
    text_source: TextSource = field(default_factory=default_text_source, compare=False, repr=False)
    name: str = "random"

    def __post_init__(self) -> None:
        _check_positive(num_prompts=self.num_prompts, input_len=self.input_len, output_len=self.output_len)
        if not 0.0 <= self.range_ratio <= 1.0:
            raise TunerError(f"range-ratio must be within [0, 1], got {self.range_ratio}")

    def sessions(self, seed: int) -> list[Session]:
        rng = random.Random(seed)
        ins = _lengths(rng, self.input_len, self.range_ratio, self.num_prompts)
        outs = _lengths(rng, self.output_len, self.range_ratio, self.num_prompts)
        return [
            Session(i, (Turn(self.text_source(n_in, rng.getrandbits(32)), n_in, n_out),))
            for i, (n_in, n_out) in enumerate(zip(ins, outs, strict=True))
        ]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "num_prompts": self.num_prompts, "input_len": self.input_len,
                "output_len": self.output_len, "range_ratio": self.range_ratio}


@dataclass(frozen=True)
class SharedPrefixWorkload:
    """Prompts made of one of `num_groups` shared prefixes (prefix_fraction of the input) plus a unique rest.

    Exercises the prefix cache the way system prompts and few-shot headers do.
    """

    num_prompts: int
    input_len: int = 1024
    output_len: int = 128
    prefix_fraction: float = 0.5
    num_groups: int = 4
    text_source: TextSource = field(default_factory=default_text_source, compare=False, repr=False)
    name: str = "shared-prefix"

    def __post_init__(self) -> None:
        _check_positive(num_prompts=self.num_prompts, input_len=self.input_len, output_len=self.output_len,
                        num_groups=self.num_groups)
        if not 0.0 <= self.prefix_fraction < 1.0:
            raise TunerError(f"prefix-fraction must be within [0, 1), got {self.prefix_fraction}")

    @property
    def prefix_len(self) -> int:
        return round(self.input_len * self.prefix_fraction)

    def sessions(self, seed: int) -> list[Session]:
        rng = random.Random(seed)
        prefixes = [self.text_source(self.prefix_len, rng.getrandbits(32)) for _ in range(self.num_groups)]
        rest = max(1, self.input_len - self.prefix_len)
        out = []
        for i in range(self.num_prompts):
            group = rng.randrange(self.num_groups)
            text = self.text_source(rest, rng.getrandbits(32))
            out.append(Session(i, (Turn(text, rest, self.output_len),), system=prefixes[group],
                               system_len=self.prefix_len))
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "num_prompts": self.num_prompts, "input_len": self.input_len,
                "output_len": self.output_len, "prefix_fraction": self.prefix_fraction,
                "num_groups": self.num_groups}


TOOLS = ("read_file", "grep", "run_tests", "list_dir", "edit_file")
_AGENT_SYSTEM = (
    "You are a coding agent working in a repository. You can call these tools: "
    + ", ".join(TOOLS)
    + ". Answer every message with exactly one tool call and nothing else, in this format: "
    '<tool_call>{"name": "<tool name>", "arguments": {"path": "<file path>", "pattern": "<text>"}}'
    "</tool_call> "
    "Keep the same format every time. Repository notes follow.\n"
)


@dataclass(frozen=True)
class MultiTurnAgentWorkload:
    """Agentic sessions: a shared system prompt, a task, then tool results turn after turn.

    Each turn asks for a tool call in one fixed JSON format, so answers repeat across turns and sessions
    (the pattern suffix/n-gram speculative decoding exploits). The context grows with every turn.
    """

    num_sessions: int
    turns: int = 4
    system_len: int = 1024
    first_input_len: int = 512
    turn_input_len: int = 256  # tokens of tool output fed back per turn
    output_len: int = 64
    think_time_s: float = 0.0
    text_source: TextSource = field(default_factory=default_text_source, compare=False, repr=False)
    name: str = "multi-turn"

    def __post_init__(self) -> None:
        _check_positive(num_sessions=self.num_sessions, turns=self.turns, output_len=self.output_len,
                        first_input_len=self.first_input_len, turn_input_len=self.turn_input_len)
        if self.system_len < 0 or self.think_time_s < 0:
            raise TunerError("system-len and think-time must not be negative")

    def sessions(self, seed: int) -> list[Session]:
        rng = random.Random(seed)
        system = _AGENT_SYSTEM + self.text_source(self.system_len, seed ^ 0x5157)  # one for all sessions
        out = []
        for s in range(self.num_sessions):
            turns = [Turn("Task: fix the failing test. Context:\n"
                          + self.text_source(self.first_input_len, rng.getrandbits(32)),
                          self.first_input_len, self.output_len)]
            for _ in range(self.turns - 1):
                tool = rng.choice(TOOLS)
                turns.append(Turn(
                    f"Tool result ({tool}):\n" + self.text_source(self.turn_input_len, rng.getrandbits(32))
                    + "\nNext tool call, same format.",
                    self.turn_input_len, self.output_len,
                ))
            out.append(Session(s, tuple(turns), system=system, system_len=self.system_len,
                               think_time_s=self.think_time_s))
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "num_sessions": self.num_sessions, "turns": self.turns,
                "system_len": self.system_len, "first_input_len": self.first_input_len,
                "turn_input_len": self.turn_input_len, "output_len": self.output_len,
                "think_time_s": self.think_time_s}


@dataclass(frozen=True)
class TraceEntry:
    timestamp_s: float
    output_len: int
    input_len: int | None = None
    prompt: str | None = None


def read_trace(path: Path | str) -> list[TraceEntry]:
    """JSONL with one request per line: timestamp (seconds), input_len or prompt, output_len."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise TunerError(f"cannot read trace {path}: {exc.strerror}") from None
    entries = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")  # noqa: TRY004 - reported with the other bad-line errors
            ts = float(row["timestamp"])
            out_len = int(row["output_len"])
            prompt = row.get("prompt")
            in_len = row.get("input_len")
            if prompt is None and in_len is None:
                raise ValueError("needs input_len or prompt")
            if prompt is not None and not isinstance(prompt, str):
                raise ValueError("prompt must be a string")
            entry = TraceEntry(ts, out_len, None if in_len is None else int(in_len), prompt)
        except (ValueError, KeyError, TypeError) as exc:
            raise TunerError(f"{path}:{lineno}: bad trace line ({exc}); expected "
                             '{"timestamp": 0.5, "input_len": 1024, "output_len": 128}') from None
        if out_len <= 0 or (entry.input_len is not None and entry.input_len <= 0):
            raise TunerError(f"{path}:{lineno}: input_len and output_len must be positive")
        entries.append(entry)
    if not entries:
        raise TunerError(f"trace {path} has no requests")
    return sorted(entries, key=lambda e: e.timestamp_s)


@dataclass(frozen=True)
class TraceWorkload:
    """Replays a JSONL trace; with trace arrivals the requests go out at their recorded times."""

    path: str
    max_requests: int | None = None
    text_source: TextSource = field(default_factory=default_text_source, compare=False, repr=False)
    name: str = "trace"

    def sessions(self, seed: int) -> list[Session]:
        rng = random.Random(seed)
        entries = read_trace(self.path)[: self.max_requests]
        t0 = entries[0].timestamp_s
        out = []
        for i, e in enumerate(entries):
            if e.prompt is not None:
                text, n_in = e.prompt, e.input_len or max(1, len(e.prompt.split()))
            else:
                assert e.input_len is not None
                text, n_in = self.text_source(e.input_len, rng.getrandbits(32)), e.input_len
            out.append(Session(i, (Turn(text, n_in, e.output_len),), arrival_s=e.timestamp_s - t0))
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "max_requests": self.max_requests}


def warmup_sessions(workload: Workload, n: int, seed: int) -> list[Session]:
    """`n` single-turn sessions from the workload with another seed (never the measured prompts)."""
    if n <= 0:
        return []
    sessions = workload.sessions(seed + 7919)[:n]
    return [Session(-1 - i, s.turns[:1], system=s.system, system_len=s.system_len)
            for i, s in enumerate(sessions)]
