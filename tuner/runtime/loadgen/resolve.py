"""Workloads by name: the built-in kinds of `workloads.py`, and `learned:NAME` (a workload learned from
production metrics by `tuner workload learn`, `learned.py`). What `--workload` resolves through."""

from __future__ import annotations

from typing import Any

from tuner.errors import TunerError
from tuner.runtime.loadgen.workloads import (
    MultiTurnAgentWorkload,
    RandomWorkload,
    SharedPrefixWorkload,
    TraceWorkload,
    Workload,
)

LEARNED_PREFIX = "learned:"
_BUILTIN_KINDS: dict[str, tuple[type, str]] = {  # kind -> (class, the field that takes the request count)
    "random": (RandomWorkload, "num_prompts"),
    "shared-prefix": (SharedPrefixWorkload, "num_prompts"),
    "multi-turn": (MultiTurnAgentWorkload, "num_sessions"),
    "trace": (TraceWorkload, "max_requests"),
}


def workload_kinds() -> tuple[str, ...]:
    """The names `resolve_workload` accepts; `learned:NAME` besides these."""
    return (*_BUILTIN_KINDS, LEARNED_PREFIX + "NAME")


def resolve_workload(kind: str, num_prompts: int, *, database_url: str | None = None, **params: Any) -> Workload:
    """The workload called `kind` with `num_prompts` requests (sessions): a built-in kind built from the
    `params` its constructor takes (others are ignored, so a command can pass all its options), or
    `learned:NAME`, a workload learned by `tuner workload learn` read from the store at `database_url`."""
    import dataclasses

    if kind.startswith(LEARNED_PREFIX):
        from tuner.runtime.loadgen.learned import load_learned

        name = kind[len(LEARNED_PREFIX):]
        if not name:
            raise TunerError("--workload learned:NAME needs the name of a learned workload")
        return load_learned(name, num_prompts, database_url=database_url,  # type: ignore[return-value]
                            rate_scale=float(params.get("rate_scale", 1.0)),
                            text_source=params.get("text_source"))
    if kind not in _BUILTIN_KINDS:
        raise TunerError(f"unknown workload {kind!r}; use one of {', '.join(workload_kinds())}")
    cls, count_field = _BUILTIN_KINDS[kind]
    fields = {f.name for f in dataclasses.fields(cls)} - {"name", count_field}
    kwargs = {k: v for k, v in params.items() if k in fields and v is not None}
    if kind == "trace" and "path" not in kwargs:
        if not params.get("trace"):
            raise TunerError("--workload trace needs --trace FILE.jsonl")
        kwargs["path"] = params["trace"]
    return cls(**{count_field: num_prompts}, **kwargs)  # type: ignore[no-any-return]
