"""The result of a flag study as the store keeps it (the `flag_studies.result` JSON column), typed: the best
config, the baseline, the ranking of the candidates by robust goodput and the gain over the baseline.

Written by the study (tuner.search.flags.study) after every step, read back by the report, `tuner flag-search
--list` and the flag-search job's result. `to_json()` gives exactly the stored document (the service's API hands
that column out as it is), `from_json()` reads it back; plain data, no statistics here (those are in
tuner.search.flags.robust).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tuner.errors import TunerError
from tuner.store.base import JsonObject


class StoredResultError(TunerError):
    """A stored study result that is not in the shape this version writes."""


def _float(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StoredResultError(f"{key!r} is {value!r}, not a number")
    return float(value)


def _object(data: Mapping[str, Any], key: str) -> JsonObject:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise StoredResultError(f"{key!r} is {value!r}, not an object")
    return dict(value)


def _trial(data: Mapping[str, Any]) -> int:
    value = data.get("trial")
    if isinstance(value, bool) or not isinstance(value, int):
        raise StoredResultError(f"'trial' is {value!r}, not a trial number")
    return value


@dataclass(frozen=True)
class ScoreRecord:
    """A robust goodput score: `samples` (one goodput per load search: output tok/s, or req/s for the
    goodput-req objective), their median and MAD, sigma = 1.4826 * MAD, score = median - sigma."""

    samples: tuple[float, ...]
    median: float
    mad: float
    sigma: float
    score: float

    def to_json(self) -> JsonObject:
        return {"samples": list(self.samples), "median": self.median, "mad": self.mad, "sigma": self.sigma,
                "score": self.score}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScoreRecord:
        samples = data.get("samples")
        if not isinstance(samples, list):
            raise StoredResultError(f"'samples' is {samples!r}, not a list")
        return cls(tuple(float(s) for s in samples), _float(data, "median"), _float(data, "mad"),
                   _float(data, "sigma"), _float(data, "score"))


@dataclass(frozen=True)
class RankedConfig:
    """One candidate of the ranking (best first): its search trial's number, parameter values and score;
    `remeasured`: the score is over several load searches of a re-measurement, not the search's one value."""

    trial: int
    params: JsonObject
    score: ScoreRecord
    remeasured: bool

    def to_json(self) -> JsonObject:
        return {"trial": self.trial, "params": self.params, **self.score.to_json(), "remeasured": self.remeasured}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RankedConfig:
        return cls(_trial(data), _object(data, "params"), ScoreRecord.from_json(data),
                   bool(data.get("remeasured")))


@dataclass(frozen=True)
class BaselineResult:
    """The engine's defaults (plus the base flags): its trial, how it ended (ok, infeasible) and its score
    (all zero when it met no SLO)."""

    trial: int
    status: str
    failure_kind: str | None
    flags: JsonObject
    env: dict[str, str]
    score: ScoreRecord

    def to_json(self) -> JsonObject:
        return {"trial": self.trial, "status": self.status, "failure_kind": self.failure_kind, "flags": self.flags,
                "env": dict(self.env), **self.score.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BaselineResult:
        kind = data.get("failure_kind")
        return cls(_trial(data), str(data.get("status")), None if kind is None else str(kind),
                   _object(data, "flags"), {str(k): str(v) for k, v in _object(data, "env").items()},
                   ScoreRecord.from_json(data))


@dataclass(frozen=True)
class BestConfig:
    """The best candidate: its search trial, parameter values, full flags (knob names, as searched),
    environment, the argv it was launched with, and its score."""

    trial: int
    params: JsonObject
    flags: JsonObject
    env: dict[str, str]
    argv: list[str] | None
    score: ScoreRecord

    def to_json(self) -> JsonObject:
        return {"trial": self.trial, "params": self.params, "flags": self.flags, "env": dict(self.env),
                "argv": None if self.argv is None else list(self.argv), **self.score.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BestConfig:
        argv = data.get("argv")
        return cls(_trial(data), _object(data, "params"), _object(data, "flags"),
                   {str(k): str(v) for k, v in _object(data, "env").items()},
                   [str(a) for a in argv] if isinstance(argv, list) else None, ScoreRecord.from_json(data))


@dataclass(frozen=True)
class GainRecord:
    """The best's goodput over the baseline's, minus one (0.25: +25%), with the range their spreads allow."""

    ratio: float
    low: float
    high: float

    def to_json(self) -> JsonObject:
        return {"ratio": self.ratio, "low": self.low, "high": self.high}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GainRecord:
        return cls(_float(data, "ratio"), _float(data, "low"), _float(data, "high"))


@dataclass(frozen=True)
class StudyResult:
    """A study's result as it stands: `objective` (Objective.describe()), `robust` (some candidate was
    re-measured), the `ranking`, the `baseline` and `best` (None until measured) and the `gain` (None when the
    baseline met no SLO)."""

    objective: JsonObject
    robust: bool
    ranking: tuple[RankedConfig, ...]
    baseline: BaselineResult | None = None
    best: BestConfig | None = None
    gain: GainRecord | None = None

    def to_json(self) -> JsonObject:
        """The stored document (key order included, as the service hands it out)."""
        out: JsonObject = {"objective": self.objective, "robust": self.robust,
                           "ranking": [r.to_json() for r in self.ranking]}
        if self.baseline is not None:
            out["baseline"] = self.baseline.to_json()
        if self.best is not None:
            out["best"] = self.best.to_json()
            if self.baseline is not None:
                out["gain"] = None if self.gain is None else self.gain.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StudyResult:
        """StoredResultError (naming the part) for a document not in this shape."""
        ranking = data.get("ranking") or []
        if not isinstance(ranking, list):
            raise StoredResultError(f"'ranking' is {ranking!r}, not a list")
        parts: dict[str, Any] = {}
        for key, read in (("baseline", BaselineResult.from_json), ("best", BestConfig.from_json),
                          ("gain", GainRecord.from_json)):
            value = data.get(key)
            if value is not None:
                if not isinstance(value, dict):
                    raise StoredResultError(f"{key!r} is {value!r}, not an object")
                parts[key] = read(value)
        if not all(isinstance(r, dict) for r in ranking):
            raise StoredResultError("'ranking' holds something other than objects")
        return cls(_object(data, "objective"), bool(data.get("robust")),
                   tuple(RankedConfig.from_json(r) for r in ranking), **parts)
