"""The simulated engine (tuner.runtime.sim): SGLang's flags, endpoints and metric names, no GPU.

It is the SGLang adapter pointed at another module; its extra options (--gpu, --time-scale, --seed, the SGLang
surface it mimics: `sglang` "0.5.23" or "seed") are fields of `SimEngine`, not user flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tuner.errors import TunerError
from tuner.runtime.engines.base import FlagValue, parse_help_flags
from tuner.runtime.engines.sglang import SGLangEngine

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
