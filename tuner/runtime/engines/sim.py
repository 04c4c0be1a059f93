"""The simulated engine (tuner.runtime.sim): SGLang's flags, endpoints and metric names, no GPU.

It is the SGLang adapter pointed at another module; its extra options (--gpu, --time-scale, --seed, the SGLang
surface it mimics: `sglang` "0.5.23" or "seed") are fields of `SimEngine`, not user flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tuner.errors import TunerError
from tuner.runtime.engines.base import FlagValue, parse_help_flags
from tuner.runtime.engines.sglang import SGLangEngine

# Beyond this, the simulator's event loop stretched modelled time enough to bias latencies: the measurement
# is re-run at a lower --time-scale or marked.
SIM_LAG_LIMIT = 0.05
SIM_OWN_FLAGS = frozenset({"gpu", "time-scale", "seed", "sim-sglang"})


@dataclass(frozen=True)
class SimEngine(SGLangEngine):
    name: str = "sim"
    module: str = "tuner.runtime.sim"
    gpu: str = "H200"
    time_scale: float = 1.0
    seed: int = 0
    sglang: str = "0.5.23"  # the SGLang flag surface the simulator accepts: "0.5.23" or "seed"

    def build_argv(
        self, model: str, port: int, flags: Mapping[str, FlagValue], *, host: str = "127.0.0.1"
    ) -> list[str]:
        own = [k for k in flags if k.lstrip("-").replace("_", "-") in SIM_OWN_FLAGS]
        if own:
            raise TunerError(
                f"flag(s) {', '.join(own)} belong to the simulator itself: use --sim-gpu, --time-scale "
                "and --seed instead of --flag"
            )
        own_argv = ["--seed", str(self.seed), "--time-scale", f"{self.time_scale:g}", "--gpu", self.gpu]
        if self.sglang != "0.5.23":
            own_argv += ["--sim-sglang", self.sglang]
        return [*super().build_argv(model, port, flags, host=host), *own_argv]

    def help_argv(self) -> list[str]:
        return [self.python, "-m", self.module, "--sim-sglang", self.sglang, "--help"]

    def surface_argv(self) -> list[str] | None:
        return [self.python, "-m", self.module, "--sim-sglang", self.sglang, "--dump-flag-surface"]

    def parse_supported_flags(self, help_text: str) -> set[str]:
        return parse_help_flags(help_text) - SIM_OWN_FLAGS


def sim_lag_fraction(server_info: Mapping[str, Any] | None) -> float | None:
    """How much longer the simulator's steps ran than modelled over its life (0.08: 8%), from /server_info's
    internal_states (the largest over ranks); None when it does not say (not the simulator)."""
    if not server_info:
        return None
    states = server_info.get("internal_states")
    rows = states if isinstance(states, list) else [states] if isinstance(states, Mapping) else []
    values = [float(r["sim_lag_fraction"]) for r in rows
              if isinstance(r, Mapping) and isinstance(r.get("sim_lag_fraction"), (int, float))]
    return max(values) if values else None


def lag_note(lag: float, time_scale: float) -> str:
    """One line for a measurement the simulator could not keep up with."""
    return (f"the simulator ran {lag:.0%} behind its model at --time-scale {time_scale:g} (limit "
            f"{SIM_LAG_LIMIT:.0%}): latencies are inflated; lower --time-scale or the load")
