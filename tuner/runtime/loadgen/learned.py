"""A workload replayed from a learned model (`--workload learned:NAME`): prompt and output lengths drawn
from the learned distributions, arrivals following the learned rate profile (a Poisson process whose rate
changes step by step), and a shared prefix sized to the learned prefix-cache hit ratio.

Reads the model from the store once; sending is the client's job, as for every workload.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from tuner.errors import WorkloadError
from tuner.runtime.loadgen.workloads import Session, TextSource, Turn, default_text_source
from tuner.workload_model import WorkloadModel


def profile_offsets_s(rates_rps: tuple[float, ...], step_s: float, n: int, rng: random.Random) -> list[float]:
    """`n` arrival times of a Poisson process whose rate is rates_rps[i] during step i (repeating the
    profile when it runs out): unit-rate exponential gaps mapped through the cumulative rate."""
    if not rates_rps or max(rates_rps) <= 0:
        raise WorkloadError("the learned rate profile has no traffic to replay")
    out: list[float] = []
    t, i, left = 0.0, 0, rng.expovariate(1.0)  # `left`: unit-rate time until the next arrival
    while len(out) < n:
        rate = rates_rps[i % len(rates_rps)]
        end = (i + 1) * step_s
        if rate > 0 and left <= rate * (end - t):
            t += left / rate
            out.append(t)
            left = rng.expovariate(1.0)
            continue
        left -= rate * (end - t)
        t, i = end, i + 1
    return out


@dataclass(frozen=True)
class LearnedWorkload:
    """Sessions with `arrival_s` set, so trace arrivals replay the learned profile; with Poisson arrivals
    only the lengths and prefix sharing are learned. `rate_scale` multiplies every learned rate."""

    model: WorkloadModel
    num_prompts: int
    model_name: str = ""
    rate_scale: float = 1.0
    text_source: TextSource = field(default_factory=default_text_source, compare=False, repr=False)
    name: str = "learned"

    def __post_init__(self) -> None:
        if self.num_prompts <= 0 or not self.rate_scale > 0:
            raise WorkloadError("a learned workload needs num-prompts >= 1 and a positive rate scale")

    @property
    def prefix_len(self) -> int:
        hit = self.model.prefix_cache_hit_ratio or 0.0
        return round(min(0.95, max(0.0, hit)) * self.model.prompt_tokens.mean_tokens)

    def sessions(self, seed: int) -> list[Session]:
        rng = random.Random(seed)
        rates = tuple(r * self.rate_scale for r in self.model.rate_profile_rps)
        offsets = profile_offsets_s(rates, self.model.step_s, self.num_prompts, random.Random(seed ^ 0x1EA2))
        prefix_len = self.prefix_len
        prefix = self.text_source(prefix_len, seed ^ 0x5AFE) if prefix_len else ""
        out = []
        for i, arrival in enumerate(offsets):
            n_in = self.model.prompt_tokens.sample(rng)
            n_out = self.model.output_tokens.sample(rng)
            rest = max(1, n_in - prefix_len)
            out.append(Session(i, (Turn(self.text_source(rest, rng.getrandbits(32)), rest, n_out),),
                               system=prefix, system_len=prefix_len, arrival_s=arrival))
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model_name, "fingerprint": self.model.fingerprint(),
                "num_prompts": self.num_prompts, "rate_scale": self.rate_scale,
                "rate_rps": self.model.rate_rps * self.rate_scale, "prefix_len": self.prefix_len}


def load_learned(name: str, num_prompts: int, *, database_url: str | None = None, rate_scale: float = 1.0,
                 text_source: TextSource | None = None) -> LearnedWorkload:
    """The learned workload stored as `name` (default database: the settings' one)."""
    from tuner.settings import Settings
    from tuner.store.db import open_database
    from tuner.store.workloads import load_workload

    db = open_database(database_url or Settings.from_env().resolved_database_url)
    try:
        record = load_workload(db, name)
    finally:
        db.dispose()
    return LearnedWorkload(record.model, num_prompts, name, rate_scale,
                           text_source=text_source or default_text_source())
