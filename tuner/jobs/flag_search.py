"""The flag search as a job kind: a `FlagSearchRequest` (tuner.jobs.specs; `tuner flag-search`'s arguments and
the service's request body) planned into one work unit per engine launch: the baseline, each trial, each
re-measure of the best candidates. The units run one at a time, in order (each candidate depends on those
measured before it), in whichever worker claims the next one; the Optuna study lives in the project database as
before (tuner.search.flags.study), so a unit killed mid-launch is run again (once: `MAX_ATTEMPTS`) with the
trials already finished kept, and a resumed job goes on where it stopped.

The stored kind says what the launches need: `flag_search:sim` (the simulated engine, any CPU worker) or
`flag_search:gpu` (a real engine, a GPU worker).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuner.errors import TunerError
from tuner.jobs import units
from tuner.jobs.context import WorkerContext
from tuner.jobs.fields import from_dict, to_dict
from tuner.jobs.specs import FlagSearchRequest
from tuner.settings import Settings
from tuner.store.db import open_database

KIND = "flag_search"
MAX_ATTEMPTS = 2  # a launch whose worker died is run once more, then the unit (and the job) fails


def kind_for(request: FlagSearchRequest) -> str:
    """The stored kind: flag_search:sim for the simulator (no GPU), flag_search:gpu for a real engine."""
    return f"{KIND}:{'sim' if request.engine == 'sim' else 'gpu'}"


def settings_for(database_url: str) -> Settings:
    """This host's settings (data folder, logs) on the job's database."""
    return Settings.from_env().with_overrides(database_url=database_url)


def study_of(request: FlagSearchRequest, settings: Settings) -> tuple[Any, Any]:
    """(StudyConfig, TrialSettings) of a request: the checked space, flags checked against the engine's --help
    (unless no_check_flags). TunerError with one line for anything wrong."""
    return request.to_study(settings, request.search_space())


def plan_units(config: Any) -> list[tuple[str, dict[str, Any]]]:
    """One unit per launch: the baseline, trials 1..n-1, then the re-measures of the top-k (and of the baseline
    when it is not among them). Each unit's payload says how far the study has to be when it ends."""
    remeasures = (config.top_k + 1) if config.repeats and config.top_k else 0
    planned: list[tuple[str, dict[str, Any]]] = []
    for launch in range(1, config.n_trials + 1):
        key = "baseline" if launch == 1 else f"trial {launch - 1}"
        planned.append((key, {"launches": launch, "remeasures": 0}))
    for r in range(1, remeasures + 1):
        planned.append((f"re-measure {r}", {"launches": config.n_trials, "remeasures": r}))
    last_key, last = planned[-1]
    planned[-1] = (last_key, {**last, "last": True})
    return planned


def submit(database_url: str, request: FlagSearchRequest) -> units.JobRecord:
    """Create (or find) the job of `request` (checked first: TunerError with one line); units a failed run left
    failed (and those it kept from running) are queued again."""
    config, _ = study_of(request, settings_for(database_url))
    return persist(database_url, request, config)


def persist(database_url: str, request: FlagSearchRequest, config: Any) -> units.JobRecord:
    """`submit` for a request already checked into its StudyConfig."""
    spec = {"request": to_dict(request), "study": config.name}
    db = open_database(database_url)
    try:
        job = units.create_job(db, kind_for(request), spec, plan_units(config), max_attempts=MAX_ATTEMPTS,
                               in_order=True)  # type: ignore[arg-type]
        if job.state == "failed":
            units.requeue_failed(db, job.id)
            job = units.get_job(db, job.id)
        return job
    finally:
        db.dispose()


def request_of(job: units.JobRecord) -> FlagSearchRequest:
    return from_dict(FlagSearchRequest, job.spec["request"])  # type: ignore[arg-type]


class FlagSearchHandler:
    """Runs a flag-search job's units in this worker: the study is opened at the first unit and kept (with its
    sampler's state) across the units this worker takes; it is held only while a unit runs."""

    def __init__(self, job: units.JobRecord, context: WorkerContext) -> None:
        self.job = job
        self.context = context
        self.request = request_of(job)
        self.db: Any = None
        self.study_run: Any = None

    def _open(self) -> Any:
        from tuner.search.flags.study import FlagStudyRun
        from tuner.search.flags.trial import EngineEvaluator

        config, trial_settings = study_of(self.request, settings_for(self.context.database_url))
        self.db = open_database(self.context.database_url)
        say = self.context.say
        return FlagStudyRun(self.db, config, EngineEvaluator(trial_settings, log=say), out=say)

    def run(self, unit: units.UnitRecord) -> dict[str, Any]:
        """At most one engine launch; returns the study's best so far (trial number, median goodput)."""
        if self.study_run is None:
            self.study_run = self._open()
        p = unit.payload
        result = self.study_run.run_step(launches=int(p["launches"]),  # type: ignore[arg-type]
                                         remeasures=int(p["remeasures"]),  # type: ignore[arg-type]
                                         last=bool(p.get("last")))
        best = result.best
        return {"study": self.study_run.config.name, "best_trial": None if best is None else best.trial,
                "best_median": None if best is None else best.score.median}

    def close(self) -> None:
        if self.db is not None:
            self.db.dispose()


# -------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FlagSearchResult:
    """Where a flag-search job stands: launches done of planned, and the study's best config with its robust
    goodput (median over re-measures; output tok/s, or req/s for goodput-req) and gain over the baseline."""

    job_id: int
    state: str
    study: str
    engine: str
    model: str
    gpu: str | None
    units_done: int
    units_total: int
    best_trial: int | None
    best_flags: dict[str, Any] | None
    best_env: dict[str, str] | None
    best_median: float | None
    baseline_median: float | None
    gain_ratio: float | None  # best / baseline - 1


def result_of(database_url: str, job: units.JobRecord) -> FlagSearchResult | None:
    """None while no unit is done."""
    from tuner.store.flags import get_study

    db = open_database(database_url)
    try:
        progress = units.job_progress(db, job.id)
        record = get_study(db, str(job.spec["study"]))
    finally:
        db.dispose()
    if record is None or progress.done == 0:
        return None
    stored = record.result
    best = stored.best if stored is not None else None
    base = stored.baseline if stored is not None else None
    gain = stored.gain if stored is not None else None
    return FlagSearchResult(
        job.id, progress.job.state, record.name, record.engine, record.model, record.gpu, progress.done,
        progress.total, None if best is None else best.trial, None if best is None else dict(best.flags),
        None if best is None else dict(best.env), None if best is None else best.score.median,
        None if base is None else base.score.median, None if gain is None else gain.ratio)


class FlagSearchKind:
    """The flag_search job kind (tuner.jobs.kinds)."""

    name = KIND
    title = "Flag search"
    request_type = FlagSearchRequest

    def needs_gpu(self, job: units.JobRecord) -> bool:
        return not job.kind.endswith(":sim")

    def claims(self, context: WorkerContext) -> list[str]:
        return [f"{KIND}:sim"] if context.device_index is None else [f"{KIND}:gpu"]

    def submit(self, database_url: str, request: Any) -> units.JobRecord:
        if not isinstance(request, FlagSearchRequest):
            raise TunerError(f"a flag search is submitted with a FlagSearchRequest, not {type(request).__name__}")
        return submit(database_url, request)

    def handler(self, job: units.JobRecord, context: WorkerContext) -> FlagSearchHandler:
        return FlagSearchHandler(job, context)

    def result(self, database_url: str, job: units.JobRecord) -> FlagSearchResult | None:
        return result_of(database_url, job)


__all__ = ["FlagSearchHandler", "FlagSearchKind", "FlagSearchResult", "plan_units", "submit"]
