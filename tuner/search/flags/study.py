"""The flag-search study: an Optuna study in the project's database (Optuna's RDB storage on the same URL,
so `optuna-dashboard <url>` shows it), the engine's defaults as trial 0, SLOs as `constraints_func`, a
sampler by name (tpe, gp, nsga2, random), crash learning, resume after a kill, and robust re-measurement of
the best candidates. Our own tables (tuner.store.flags) add engine, GPU, model, workload and metrics.

The study asks an `Evaluator` to measure candidates; it never launches an engine itself.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import socket
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState

from tuner.errors import NothingCanLaunchError, TunerError
from tuner.search.flags.feasibility import (
    MEMORY_FAILURE_KINDS,
    MemoryFailure,
    baseline_blocker,
    memory_directions,
    predicted_failure,
)
from tuner.search.flags.load_search import LoadSearchConfig
from tuner.search.flags.objective import Objective
from tuner.search.flags.robust import RobustScore, gain, robust_score
from tuner.search.flags.space import (
    Candidate,
    SearchSpace,
    baseline_candidate,
    candidate_from_values,
    complete_values,
    nearest_values,
    ordered_neighbour_values,
    suggest,
)
from tuner.search.flags.trial import TrialOutcome
from tuner.store import flags as store
from tuner.store.db import Database
from tuner.store.flag_results import (
    BaselineResult,
    BestConfig,
    GainRecord,
    RankedConfig,
    ScoreRecord,
    StudyResult,
)

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "gp", "nsga2", "random")
STALE_OWNER_S = 1800.0  # a study owned by a process on another host is free after this long without news
MAX_ASKS_PER_TRIAL = 10  # duplicates and predicted failures cost no launch, but the loop must end


class Evaluator(Protocol):
    def evaluate(self, candidate: Candidate, *, repeats: int = 1) -> TrialOutcome: ...


@dataclass(frozen=True)
class StudyConfig:
    """`n_trials` counts launches (the baseline included); `repeats` load searches per re-measured
    candidate, `top_k` candidates re-measured (0 repeats: no re-measurement)."""

    name: str
    engine: str
    model: str
    space: SearchSpace
    objective: Objective
    load_search: LoadSearchConfig
    workload: Mapping[str, Any]
    sampler: str = "tpe"
    local_search: float | None = None  # share of trials spent next to the best config (None: per sampler)
    n_trials: int = 20
    seed: int = 0
    repeats: int = 3
    top_k: int = 3
    gpu: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # stored with the study (time scale, ...)

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise TunerError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if self.n_trials < 1:
            raise TunerError("--trials must be at least 1 (the baseline)")
        if self.repeats < 0 or self.top_k < 0:
            raise TunerError("--repeats and --top-k must not be negative")
        if self.repeats and self.repeats < 3:
            raise TunerError("robust scores need at least 3 repeats (or 0 to skip re-measuring)")
        if self.local_search is not None and not 0 <= self.local_search <= 1:
            raise TunerError("--local-search must be between 0 and 1")

    @property
    def local_share(self) -> float:
        """Model-based samplers alternate with local search next to the best config; random and NSGA-II
        (and Pareto searches) keep to their own proposals unless asked."""
        if self.local_search is not None:
            return self.local_search
        return 1.0 if self.sampler in ("tpe", "gp") and self.objective.kind != "pareto" else 0.0

    @property
    def startup_trials(self) -> int:
        return max(4, min(10, self.n_trials // 4))


@dataclass(frozen=True)
class StudyOutcome:
    study: store.FlagStudyRecord
    result: StudyResult


# ----------------------------------------------------------------------------------------------------
# Optuna plumbing

def optuna_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on the project's database. Its schema check is skipped: the `alembic_version`
    table holds tuner's revision, not Optuna's (optuna-dashboard skips that check too)."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_compatibility_check=True)


# Optuna 5 records named constraints on the trial (Trial.set_constraint) and its samplers read them;
# older versions take a constraints_func, which reads them from a user attribute (only there).
NAMED_CONSTRAINTS = hasattr(optuna.trial.Trial, "set_constraint")


def _constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
    return list(trial.user_attrs.get("constraints") or [1.0])


def set_constraints(trial: optuna.Trial, names: list[str], values: list[float]) -> None:
    """SLO constraints of a trial (<= 0: met), where the sampler and optuna-dashboard find them. The trial's
    `flag_trials` row keeps them too: that row is the record the search and the report read."""
    if NAMED_CONSTRAINTS:
        for name, value in zip(names, values, strict=True):
            trial.set_constraint(name, value)
    else:
        trial.set_user_attr("constraints", values)


def make_sampler(name: str, seed: int, n_trials: int, n_objectives: int) -> optuna.samplers.BaseSampler:
    """The sampler called `name`; every one but random takes the SLO constraints into account."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    constrained: dict[str, Any] = {} if NAMED_CONSTRAINTS else {"constraints_func": _constraints}
    startup = max(4, min(10, n_trials // 4))
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, n_startup_trials=startup, **constrained)
    if name == "gp":
        import importlib.util

        missing = [m for m in ("scipy", "torch") if importlib.util.find_spec(m) is None]
        if missing:
            raise TunerError(f"--sampler gp needs the Python package(s) {', '.join(missing)}: "
                             f"pip install {' '.join(missing)}")
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, **constrained)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, n_trials // 3)),
                                             **constrained)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise TunerError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(heartbeat_age_s: float | None) -> Callable[[str], bool]:
    here = socket.gethostname()

    def alive(owner: str) -> bool:
        host, _, pid = owner.rpartition(":")
        if host == here and pid.isdigit():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return heartbeat_age_s is not None and heartbeat_age_s < STALE_OWNER_S

    return alive


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, allow_nan=False)) if value is not None else None


def _finite(values: list[float]) -> list[float]:
    return [v if math.isfinite(v) else 0.0 for v in values]


# ----------------------------------------------------------------------------------------------------

def outcome_fields(outcome: TrialOutcome, objective: Objective) -> dict[str, Any]:
    """The store fields of an evaluation's outcome."""
    search = outcome.search
    best = search.best if search is not None else None
    return {
        "status": outcome.status, "failure_kind": outcome.failure_kind, "error": outcome.error,
        "argv": list(outcome.argv), "engine_version": outcome.engine_version,
        "goodput_tok_s": best.figures.goodput_tok_s if best else (0.0 if outcome.status != "failed" else None),
        "goodput_req_s": best.figures.goodput_req_s if best else (0.0 if outcome.status != "failed" else None),
        "max_load": (search.max_load if search is not None and search.max_load is not None
                     and math.isfinite(search.max_load) else None),
        "searches": _jsonable([s.to_dict() for s in outcome.searches]),
        "server_info": _jsonable(outcome.server_info), "log_path": outcome.log_path,
        "log_tail": outcome.log_tail, "stage_seconds": dict(outcome.stage_seconds),
    }


def search_samples(outcome: TrialOutcome, objective: Objective) -> list[float]:
    """One goodput per load search of an evaluation (0 where no load met the SLOs)."""
    if outcome.status != "ok":
        return [0.0] * max(1, len(outcome.searches))
    return [objective.score(s.best) for s in outcome.searches]


class FlagStudyRun:
    """One run (or resumed run) of a study: `run()` searches, re-measures and stores the result."""

    def __init__(self, db: Database, config: StudyConfig, evaluator: Evaluator, *,
                 out: Callable[[str], None] = print):
        self.db = db
        self.config = config
        self.evaluator = evaluator
        self.out = out
        self.directions = memory_directions(config.space)
        self.owner = _owner()
        self.record = self._open_record()
        self._held = True  # this run owns the study (store.claim_study) until it is released
        self.study = self._open_optuna()
        self._rng = random.Random(config.seed * 7919 + len(self.study.trials))
        self._param_order = [p.key for p in config.space.params]
        random.Random(config.seed).shuffle(self._param_order)
        self._baseline_args: dict[str, Any] | None = None

    # ---- set-up -------------------------------------------------------------------------------------
    def _describe(self) -> dict[str, Any]:
        c = self.config
        return _jsonable({"space": c.space.describe(), "objective": c.objective.describe(),
                          "load_search": c.load_search.describe(), "workload": dict(c.workload)})

    def _open_record(self) -> store.FlagStudyRecord:
        c = self.config
        d = self._describe()
        record = store.get_study(self.db, c.name)
        if record is None:
            record = store.create_study(
                self.db, name=c.name, engine=c.engine, model=c.model, gpu=c.gpu, sampler=c.sampler,
                workload=d["workload"], objective=d["objective"], space=d["space"],
                load_search=d["load_search"],
                settings={"n_trials": c.n_trials, "seed": c.seed, "repeats": c.repeats, "top_k": c.top_k,
                          **_jsonable(dict(c.extra))})
        else:
            mismatched = [k for k in ("space", "objective", "workload", "load_search")
                          if getattr(record, k) != d[k]]
            if record.engine != c.engine or record.model != c.model:
                mismatched.insert(0, "engine/model")
            if mismatched:
                raise TunerError(
                    f"study {c.name!r} already exists with a different {', '.join(mismatched)}; resume it with "
                    "the same options, or pick a new --study name")
        age = None
        if record.heartbeat_at is not None:
            import datetime as dt

            age = (dt.datetime.now(dt.UTC) - record.heartbeat_at).total_seconds()
        other = store.claim_study(self.db, record.id, self.owner, _owner_alive(age))
        if other is not None:
            raise TunerError(f"study {c.name!r} is being run by {other}; wait for it, stop it, or pick a new "
                             "--study name")
        settings = dict(record.settings or {})
        if settings.get("n_trials") != c.n_trials:
            settings["n_trials"] = c.n_trials
            store.update_study(self.db, record.id, settings=settings)
        return store.get_study(self.db, c.name) or record

    def _open_optuna(self) -> optuna.Study:
        c = self.config
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        storage = optuna_storage(self.db.url)
        study = optuna.create_study(
            study_name=c.name, storage=storage, directions=list(c.objective.directions),  # type: ignore[arg-type]
            load_if_exists=True,
            sampler=make_sampler(c.sampler, c.seed, c.n_trials, len(c.objective.directions)))
        if [d.name.lower() for d in study.directions] != c.objective.directions:
            raise TunerError(f"the Optuna study {c.name!r} optimises {len(study.directions)} value(s) but "
                             f"--objective {c.objective.kind} needs {len(c.objective.directions)}; pick a new "
                             "--study name")
        for name, value in (("engine", c.engine), ("model", c.model), ("gpu", c.gpu),
                            ("objective", c.objective.kind), ("value_names", c.objective.value_names),
                            ("constraint_names", c.objective.constraint_names),
                            ("slos", [str(s) for s in c.objective.slos])):
            study.set_user_attr(name, value)
        self._recover(study)
        if not study.trials:
            study.enqueue_trial({}, user_attrs={"baseline": True})
        return study

    def _recover(self, study: optuna.Study) -> None:
        """Trials RUNNING in Optuna or 'running' in our table belong to a process that died: mark them
        failed (kept, with the reason) and queue their parameters again."""
        stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
        rows = store.fail_running_trials(self.db, self.record.id,
                                         "the process running this trial stopped before it finished")
        storage = study._storage
        for t in stale:  # the row (when the launch had begun) says why: failed, interrupted
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            study.enqueue_trial(dict(t.params), user_attrs={
                "retry_of": t.number, **({"baseline": True} if t.user_attrs.get("baseline") else {})})
        if stale or rows:
            self.out(f"resumed study {self.config.name!r}: {max(len(stale), len(rows))} interrupted trial(s) "
                     "marked failed and queued again")

    # ---- the search ---------------------------------------------------------------------------------
    def _history(self) -> tuple[dict[str, store.FlagTrialRecord], list[MemoryFailure], int]:
        """Measured candidates by key (the first search trial of each), memory failures, and the launches so
        far, from the study's `flag_trials` rows (the record of every trial; Optuna holds only its values)."""
        by_key: dict[str, store.FlagTrialRecord] = {}
        failures: list[MemoryFailure] = []
        launched = 0
        for row in store.list_trials(self.db, self.record.id, "search"):
            if row.status in ("ok", "infeasible"):
                launched += 1
                by_key.setdefault(_row_key(row), row)
                if row.failure_kind in MEMORY_FAILURE_KINDS:
                    failures.append(MemoryFailure(row.trial_number, row.failure_kind, row.flags, row.env))
            elif row.status == "failed" and row.failure_kind != "interrupted":
                launched += 1  # an environment failure costs a launch; an interrupted trial is run again
        return by_key, failures, launched

    def run(self) -> StudyOutcome:
        status = "interrupted"
        try:
            self._search()
            result = self._finish()
            status = "finished"
        finally:
            self._release(status)
        return StudyOutcome(store.get_study(self.db, self.config.name) or self.record, result)

    def run_step(self, *, launches: int, remeasures: int, last: bool) -> StudyResult:
        """One work unit of a flag-search job (at most one engine launch): search until `launches` launches
        (the baseline included) have run, then re-measure up to `remeasures` of the best candidates, and store
        the result as it stands. Steps already done (a resumed job, an interrupted launch queued again) cost
        nothing. The study is held only while the step runs, so the next unit may run in another worker; its
        status is "finished" after the `last` step."""
        status = "interrupted"
        if not self._held:
            self.record = self._open_record()
            self._held = True
        try:
            self._search(upto=launches)
            result = self._finish(max_remeasures=remeasures)
            status = "finished" if last else "running"
        finally:
            self._release(status)
        return result

    def _release(self, status: str) -> None:
        store.release_study(self.db, self.record.id, self.owner, status)
        self._held = False

    def _search(self, upto: int | None = None) -> None:
        c = self.config
        limit = c.n_trials if upto is None else min(upto, c.n_trials)
        asks = 0
        while True:
            by_key, failures, launched = self._history()
            if launched >= limit:
                return
            if asks >= MAX_ASKS_PER_TRIAL * c.n_trials + 10:
                self.out("the space seems exhausted (the sampler keeps proposing measured configs); stopping")
                return
            asks += 1
            self._maybe_propose_local(by_key, failures)
            trial = self.study.ask()
            baseline = bool(trial.user_attrs.get("baseline"))
            candidate = baseline_candidate(c.space) if baseline else suggest(c.space, trial)
            previous = by_key.get(candidate.key)
            if previous is not None:
                self._tell_copy(trial, candidate, previous)
                continue
            failure = None if baseline else predicted_failure(candidate, failures, self.directions)
            if failure is not None:
                self._tell_predicted(trial, candidate, failure)
                continue
            self._evaluate(trial, candidate, baseline, launched)

    def _defaults_nearest(self) -> dict[str, Any] | None:
        """The point of the space nearest to the baseline's resolved arguments (its /server_info)."""
        if self._baseline_args is None:
            base = next((r for r in store.list_trials(self.db, self.record.id, "search")
                         if r.is_baseline and r.server_info), None)
            if base is None or not isinstance(base.server_info, Mapping):
                return None
            self._baseline_args = dict(base.server_info)
        return nearest_values(self.config.space, self._baseline_args)

    def _local_proposal(self, by_key: Mapping[str, store.FlagTrialRecord],
                        failures: list[MemoryFailure]) -> tuple[dict[str, Any], str] | None:
        """The next unmeasured config one parameter away from the best so far (first improvement: the
        scan goes on with the parameter after the one that produced the best; values nearest first), or
        the point nearest the engine's defaults before anything met the SLOs. None: a local optimum."""
        c = self.config

        def fresh(values: dict[str, Any]) -> bool:
            try:
                cand = candidate_from_values(c.space, values)
            except TunerError:
                return False
            return cand.key not in by_key and predicted_failure(cand, failures, self.directions) is None

        feasible = [t for t in by_key.values() if t.params and t.values
                    and all(v <= 0 for v in (t.constraints or [1.0])) and t.values[0] > 0]
        if not feasible:
            start = self._defaults_nearest()
            return (start, "") if start is not None and fresh(start) else None
        best = max(feasible, key=lambda t: t.values[0] if t.values else 0.0)
        order = list(self._param_order)
        last = self._local_param(best.trial_number)
        if last in order:
            i = order.index(last) + 1
            order = order[i:] + order[:i]
        for key in order:
            if key not in best.params:
                continue
            p = c.space.param(key)
            assert p is not None
            for v in ordered_neighbour_values(p, best.params[key]):
                values = complete_values(c.space, {**best.params, key: v})
                if fresh(values):
                    return values, key
        return None

    def _local_param(self, trial_number: int) -> str | None:
        """The parameter the local search changed to propose trial `trial_number` (an enqueued trial's
        attribute: how it was proposed, not what it measured), or None."""
        for t in self.study.get_trials(deepcopy=False):
            if t.number == trial_number:
                value = t.user_attrs.get("local_param")
                return value if isinstance(value, str) else None
        return None

    def _maybe_propose_local(self, by_key: Mapping[str, store.FlagTrialRecord],
                             failures: list[MemoryFailure]) -> None:
        """With probability `local_share`, queue the local-search proposal; otherwise (or at a local
        optimum) the sampler proposes the next config."""
        c = self.config
        if c.local_share <= 0 or self._rng.random() >= c.local_share:
            return
        if any(t.state == TrialState.WAITING for t in self.study.get_trials(deepcopy=False)):
            return
        proposal = self._local_proposal(by_key, failures)
        if proposal is not None:
            values, key = proposal
            attrs: dict[str, Any] = {"proposed_by": "local" if key else "defaults"}
            if key:
                attrs["local_param"] = key
            self.study.enqueue_trial(values, user_attrs=attrs)

    def _tell_copy(self, trial: optuna.Trial, candidate: Candidate, previous: store.FlagTrialRecord) -> None:
        """A candidate already measured: no launch; the sampler is told the earlier trial's values."""
        values = list(previous.values or [])
        constraints = list(previous.constraints or [])
        set_constraints(trial, self.config.objective.constraint_names, constraints)
        row = store.start_trial(self.db, self.record.id, trial.number, params=dict(candidate.params),
                                flags=_jsonable(dict(candidate.flags)), env=dict(candidate.env))
        store.finish_trial(self.db, row, status="duplicate", error=f"same flags as trial {previous.trial_number}",
                           values=values, constraints=constraints)
        self.study.tell(trial, values)

    def _tell_predicted(self, trial: optuna.Trial, candidate: Candidate, failure: MemoryFailure) -> None:
        c = self.config
        reason = (f"needs at least the memory of trial {failure.trial_number}, which failed with "
                  f"{failure.kind}: not launched")
        constraints = c.objective.constraints(None)
        values = _finite(c.objective.values(None))
        set_constraints(trial, c.objective.constraint_names, constraints)
        row = store.start_trial(self.db, self.record.id, trial.number, params=dict(candidate.params),
                                flags=_jsonable(dict(candidate.flags)), env=dict(candidate.env),
                                notes=list(candidate.notes))
        store.finish_trial(self.db, row, status="skipped", failure_kind="predicted_oom", error=reason,
                           values=values, constraints=constraints, goodput_tok_s=0.0, goodput_req_s=0.0)
        self.study.tell(trial, values)
        self.out(f"trial {trial.number}: {candidate.display()}: skipped, {reason}")

    def _evaluate(self, trial: optuna.Trial, candidate: Candidate, baseline: bool, launched: int) -> None:
        c = self.config
        row = store.start_trial(self.db, self.record.id, trial.number, is_baseline=baseline,
                                params=dict(candidate.params), flags=_jsonable(dict(candidate.flags)),
                                env=dict(candidate.env), notes=list(candidate.notes))
        self.out(f"trial {trial.number} ({launched + 1}/{c.n_trials}): {candidate.display()}")
        try:
            outcome = self.evaluator.evaluate(candidate, repeats=1)
        except BaseException:
            store.finish_trial(self.db, row, status="failed", failure_kind="interrupted",
                               error="interrupted while measuring; queued again for the next run")
            self.study.tell(trial, state=TrialState.FAIL)
            self.study.enqueue_trial(dict(trial.params), user_attrs={
                "retry_of": trial.number, **({"baseline": True} if baseline else {})})
            raise
        fields = outcome_fields(outcome, c.objective)
        if outcome.engine_version:
            store.update_study(self.db, self.record.id, engine_version=outcome.engine_version)
        blocker = baseline_blocker(outcome.failure_kind, outcome.never_ready, outcome.log_tail, outcome.error,
                                   [p.name for p in c.space.params]) if baseline else None
        if blocker is not None:
            # Every candidate would fail the same way: stop, and queue the baseline again so that a resumed
            # study (after the environment is fixed) starts by checking it.
            store.finish_trial(self.db, row, **{**fields, "status": "failed"})
            self.study.tell(trial, state=TrialState.FAIL)
            self.study.enqueue_trial({}, user_attrs={"baseline": True, "retry_of": trial.number})
            raise NothingCanLaunchError(
                f"the baseline (base flags only) could not launch [{outcome.failure_kind}]: {blocker}. No searched "
                f"flag can change that, so the search stopped after 1 launch; fix the model, engine or base flags "
                f"(log: {outcome.log_path})"
            )
        if outcome.status == "failed":
            store.finish_trial(self.db, row, **fields)
            self.study.tell(trial, state=TrialState.FAIL)
            self.out(f"  failed ({outcome.failure_kind}): {outcome.error}")
            return
        values = _finite(c.objective.values(outcome.search))
        constraints = c.objective.constraints(outcome.search)
        set_constraints(trial, c.objective.constraint_names, constraints)
        store.finish_trial(self.db, row, values=values, constraints=constraints, **fields)
        self.study.tell(trial, values)
        store.heartbeat(self.db, self.record.id)
        if outcome.status == "ok":
            self.out(f"  goodput {fields['goodput_tok_s']:.1f} tok/s ({fields['goodput_req_s']:.3f} req/s) at "
                     f"{_load_text(c.load_search, fields['max_load'])}")
        else:
            first_line = (outcome.error or "").strip().split("\n")[0][:300]
            self.out(f"  infeasible ({outcome.failure_kind}): {first_line}")

    # ---- re-measurement and result --------------------------------------------------------------------
    def _finish(self, max_remeasures: int | None = None) -> StudyResult:
        c = self.config
        trials = store.list_trials(self.db, self.record.id, kind="search")
        measured = [t for t in trials if t.status == "ok" and t.goodput_tok_s is not None]
        score_of = (lambda t: t.goodput_req_s or 0.0) if c.objective.kind == "goodput-req" \
            else (lambda t: t.goodput_tok_s or 0.0)
        ranked: list[store.FlagTrialRecord] = []
        seen: set[str] = set()
        for t in sorted(measured, key=score_of, reverse=True):
            key = json.dumps({"flags": t.flags, "env": t.env}, sort_keys=True)
            if key not in seen and score_of(t) > 0:
                seen.add(key)
                ranked.append(t)
        top = ranked[: c.top_k]
        base = next((t for t in trials if t.is_baseline and t.status in ("ok", "infeasible")), None)
        robust: dict[int, RobustScore] = {}
        if c.repeats and top:
            todo = list(top) + ([base] if base is not None and base.status == "ok" and base not in top
                                else [])
            remeasured = {t.trial_number: t for t in store.list_trials(self.db, self.record.id, "remeasure")
                          if t.status in ("ok", "infeasible")}
            for i, t in enumerate(todo):
                row = remeasured.get(t.trial_number)
                if row is None and (max_remeasures is None or i < max_remeasures):
                    row = self._remeasure(t)
                samples = [float(x) for x in (row.values or [])] if row is not None else []
                if samples:
                    robust[t.trial_number] = robust_score(samples)
        single = {t.trial_number: robust_score([score_of(t)]) for t in ranked}
        if base is not None and base.trial_number not in robust:
            single[base.trial_number] = robust_score([score_of(base)])
        scores = {**single, **robust}
        # Re-measured candidates rank first (by their robust score); the rest follow by their one value.
        candidates = sorted((t for t in ranked if t.trial_number in scores),
                            key=lambda t: (t.trial_number not in robust or scores[t.trial_number].median <= 0,
                                           -scores[t.trial_number].score))
        best = candidates[0] if candidates else None
        base_score = scores.get(base.trial_number, robust_score([0.0])) if base is not None else None
        g = gain(scores[best.trial_number], base_score) if best is not None and base_score is not None else None
        result = StudyResult(
            objective=_jsonable(c.objective.describe()),
            robust=bool(robust),
            ranking=tuple(RankedConfig(t.trial_number, t.params, _score(scores[t.trial_number]),
                                       t.trial_number in robust) for t in candidates),
            baseline=None if base is None or base_score is None else BaselineResult(
                base.trial_number, base.status, base.failure_kind, base.flags, base.env, _score(base_score)),
            best=None if best is None else BestConfig(best.trial_number, best.params, best.flags, best.env,
                                                      best.argv, _score(scores[best.trial_number])),
            gain=None if g is None else GainRecord(g.ratio, g.low, g.high))
        store.update_study(self.db, self.record.id, result=result)
        return result

    def _remeasure(self, t: store.FlagTrialRecord) -> store.FlagTrialRecord | None:
        c = self.config
        candidate = Candidate(params=t.params, flags=t.flags, env=t.env, is_baseline=t.is_baseline)
        row = store.start_trial(self.db, self.record.id, t.trial_number, kind="remeasure",
                                is_baseline=t.is_baseline, params=t.params, flags=t.flags, env=t.env)
        self.out(f"re-measuring trial {t.trial_number} ({c.repeats} load searches in one launch): "
                 f"{candidate.display()}")
        try:
            outcome = self.evaluator.evaluate(candidate, repeats=c.repeats)
        except BaseException:
            store.finish_trial(self.db, row, status="failed", failure_kind="interrupted",
                               error="interrupted while re-measuring")
            raise
        samples = search_samples(outcome, c.objective)
        fields = outcome_fields(outcome, c.objective)
        store.finish_trial(self.db, row, values=samples, **fields)
        score = robust_score(samples)
        self.out(f"  goodput median {score.median:.1f}, spread (1.4826 MAD) {score.sigma:.1f}, "
                 f"score {score.score:.1f}")
        return next((r for r in store.list_trials(self.db, self.record.id, "remeasure") if r.id == row), None)


def _row_key(row: store.FlagTrialRecord) -> str:
    """The candidate key (Candidate.key) of a stored trial: its flags and environment."""
    return Candidate(params=row.params, flags=row.flags, env=row.env).key


def _score(score: RobustScore) -> ScoreRecord:
    return ScoreRecord(score.samples, score.median, score.mad, score.sigma, score.score)


def _load_text(config: LoadSearchConfig, load: float | None) -> str:
    if load is None:
        return "everything at once" if config.mode == "rate" else "-"
    return f"concurrency {int(load)}" if config.mode == "concurrency" else f"{load:g} req/s"


def run_study(db: Database, config: StudyConfig, evaluator: Evaluator, *,
              out: Callable[[str], None] = print) -> StudyOutcome:
    """Search (or resume searching) until `config.n_trials` launches, re-measure the best, store the result."""
    return FlagStudyRun(db, config, evaluator, out=out).run()
