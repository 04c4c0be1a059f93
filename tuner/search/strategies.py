"""How the sweep picks which configs to measure at one batch size: ask for a batch, tell the latencies.

`AdaptiveSearch` starts from seeds (the engine default, the best configs of neighbouring batch sizes) and
then lets a multivariate TPE sampler propose batches over the pruned space. `ExhaustiveSearch` measures
every config that fits the device, for comparison. Neither knows about GPUs, timing or the database.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Protocol

import optuna

from tuner.kernels.base import KernelConfig

PARAMS = ("block_size_m", "block_size_n", "block_size_k", "group_size_m", "num_warps", "num_stages", "use_tma")


class SearchStrategy(Protocol):
    name: str

    def ask(self, n: int) -> list[KernelConfig]: ...
    def tell(self, config: KernelConfig, latency_us: float | None) -> None: ...
    def finished(self) -> bool: ...
    def preload(self, config: KernelConfig, latency_us: float | None) -> None: ...
    def upcoming(self) -> list[KernelConfig]:
        """Configs this strategy will certainly ask for, in the order it will ask: compilation can start now."""
        ...


def _distance(a: KernelConfig, b: KernelConfig) -> float:
    return sum(abs(math.log2(int(getattr(a, p)) + 1) - math.log2(int(getattr(b, p)) + 1)) for p in PARAMS)


@dataclass
class ExhaustiveSearch:
    candidates: list[KernelConfig]
    name: str = "exhaustive"
    _next: int = 0
    _told: set[KernelConfig] = field(default_factory=set)

    def ask(self, n: int) -> list[KernelConfig]:
        batch = [c for c in self.candidates[self._next:] if c not in self._told][:n]
        self._next += len(batch)
        while self._next < len(self.candidates) and self.candidates[self._next] in self._told:
            self._next += 1
        return batch

    def tell(self, config: KernelConfig, latency_us: float | None) -> None:
        self._told.add(config)

    def preload(self, config: KernelConfig, latency_us: float | None) -> None:
        self._told.add(config)

    def finished(self) -> bool:
        return all(c in self._told for c in self.candidates)

    def upcoming(self) -> list[KernelConfig]:
        return [c for c in self.candidates[self._next:] if c not in self._told]


class AdaptiveSearch:
    """Seeds first, then TPE (multivariate, constant liar so a whole batch can compile in parallel)."""

    name = "adaptive"

    def __init__(self, candidates: list[KernelConfig], seeds: list[KernelConfig], budget: int, seed: int = 0):
        """Seeds outside `candidates` (a shipped config the pruning would drop) are measured too: they join the
        space. The budget counts seeds."""
        seeds = list(dict.fromkeys(seeds))
        self.candidates = candidates + [s for s in seeds if s not in set(candidates)]
        self._valid = set(self.candidates)
        self.budget = min(budget, len(self.candidates))
        self._seeds = seeds
        self._results: dict[KernelConfig, float | None] = {}
        self._pending: dict[KernelConfig, optuna.trial.Trial | None] = {}
        self._dists: dict[str, optuna.distributions.BaseDistribution] = {
            p: optuna.distributions.CategoricalDistribution(sorted({getattr(c, p) for c in self.candidates}))
            for p in PARAMS
        }
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():  # multivariate and constant_liar are chosen on purpose: no warning per M
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=seed, multivariate=True, constant_liar=True, n_startup_trials=max(8, len(self._seeds)))
        self._study = optuna.create_study(direction="minimize", sampler=sampler)

    def _penalty(self) -> float:
        ok = [v for v in self._results.values() if v is not None]
        return 2.0 * max(ok) if ok else 1e9

    def _nearest_unmeasured(self, wanted: KernelConfig) -> KernelConfig | None:
        if wanted in self._valid and wanted not in self._results and wanted not in self._pending:
            return wanted
        free = [c for c in self.candidates if c not in self._results and c not in self._pending]
        return min(free, key=lambda c: _distance(c, wanted)) if free else None

    def ask(self, n: int) -> list[KernelConfig]:
        batch: list[KernelConfig] = []
        room = self.budget - len(self._results) - len(self._pending)
        while len(batch) < min(n, room):
            trial: optuna.trial.Trial | None = None
            if self._seeds:
                config: KernelConfig | None = self._seeds.pop(0)
                if config in self._results or config in self._pending:
                    continue
            else:
                # The proposal stays RUNNING until its result is told, so the constant liar spreads a batch out.
                trial = self._study.ask(self._dists)
                config = self._nearest_unmeasured(KernelConfig(*(trial.params[p] for p in PARAMS)))
                if config is None:
                    self._study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    break
            assert config is not None
            self._pending[config] = trial
            batch.append(config)
        return batch

    def tell(self, config: KernelConfig, latency_us: float | None) -> None:
        trial = self._pending.pop(config, None)
        if trial is not None:
            # the sampler's proposal may have been moved to the nearest valid config: record what was measured
            self._study.tell(trial, state=optuna.trial.TrialState.FAIL)
        self._results[config] = latency_us
        value = latency_us if latency_us is not None else self._penalty()
        self._study.add_trial(
            optuna.trial.create_trial(
                params={p: getattr(config, p) for p in PARAMS}, distributions=self._dists, value=value,
            )
        )

    def preload(self, config: KernelConfig, latency_us: float | None) -> None:
        """A result already in the database (resume): counts against the budget, never re-measured."""
        if config in self._valid:
            self.tell(config, latency_us)

    def finished(self) -> bool:
        return len(self._results) >= self.budget and not self._pending

    def upcoming(self) -> list[KernelConfig]:
        # only the seeds are known in advance; TPE's proposals depend on the results still to come
        seeds = [s for s in self._seeds if s not in self._results and s not in self._pending]
        return seeds[: max(self.budget - len(self._results) - len(self._pending), 0)]
