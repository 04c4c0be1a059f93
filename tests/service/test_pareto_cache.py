"""The Pareto chart's cache of a study that keeps changing: after the first read, each view reads only the trials
added, finished or re-run since, and answers what a read of every trial would (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tuner.store import browse
from tuner.store import flags as flag_store
from tuner.store.flag_models import FlagTrial

sys.path.insert(0, str(Path(__file__).parent))
import seed


def _searches(*steps: tuple[float, float]) -> list[dict[str, Any]]:
    """One load search whose steps have these (tpot_p99 in s, goodput in tok/s)."""
    return [{"steps": [{"index": i, "load": 1.0 + i, "meets_slo": True,
                        "figures": {"latency_s": {"tpot_p99": latency}, "output_throughput_tok_s": goodput,
                                    "goodput_tok_s": goodput}}
                       for i, (latency, goodput) in enumerate(steps)]}]


def _front(answer: dict[str, Any]) -> set[tuple[int, int]]:
    return {(p["trial"], p["step"]) for p in answer["points"] if p["on_front"]}


def _from_scratch(db, study_id: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    browse._PARETO_CACHE.clear()
    return browse.study_pareto(db, study_id)  # type: ignore[return-value]


@pytest.fixture
def read_trials(monkeypatch):  # type: ignore[no-untyped-def]
    """The trial numbers whose load searches the cache turns into points, call by call."""
    seen: list[int] = []
    real = browse._trial_points

    def spy(number, *args):  # type: ignore[no-untyped-def]
        seen.append(number)
        return real(number, *args)

    monkeypatch.setattr(browse, "_trial_points", spy)
    return seen


def _add_trial(db, study_id: int, number: int, *steps: tuple[float, float], **finish: Any) -> int:  # type: ignore[no-untyped-def]
    trial_id = flag_store.start_trial(db, study_id, number)
    flag_store.finish_trial(db, trial_id, status="ok", searches=_searches(*steps), **finish)
    return trial_id


def test_a_new_trial_updates_the_front_reading_only_that_trial(db, read_trials) -> None:  # type: ignore[no-untyped-def]
    study_id = seed.seed_study(db, "s1", 300)
    first = browse.study_pareto(db, study_id)
    assert first is not None and first["total_points"] == 900 and len(read_trials) == 300
    assert browse.study_pareto(db, study_id) is first  # nothing changed: nothing read
    read_trials.clear()
    # a step with less latency and more goodput than any before: it alone is the front's fast end now
    _add_trial(db, study_id, 300, (0.001, 99_000.0), (0.5, 1.0))
    after = browse.study_pareto(db, study_id)
    assert read_trials == [300]
    assert after["total_points"] == 902 and _front(after) == {(300, 0)}
    assert after["points"] == _from_scratch(db, study_id)["points"]


def test_a_trial_that_finishes_later_even_with_an_older_clock_joins_the_front(db) -> None:  # type: ignore[no-untyped-def]
    study_id = seed.seed_study(db, "s1", 50)
    trial_id = flag_store.start_trial(db, study_id, 50)  # running: no points yet
    before = browse.study_pareto(db, study_id)
    assert before["total_points"] == 150
    # an external worker whose clock is a day behind finishes it: its finish is older than any seen
    flag_store.finish_trial(db, trial_id, status="ok", searches=_searches((0.001, 99_000.0)),
                            finished_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    after = browse.study_pareto(db, study_id)
    assert after["total_points"] == 151 and _front(after) == {(50, 0)}


def test_a_re_run_or_deleted_front_trial_leaves_the_front(db) -> None:  # type: ignore[no-untyped-def]
    study_id = seed.seed_study(db, "s1", 50)
    _add_trial(db, study_id, 50, (0.001, 99_000.0))
    _add_trial(db, study_id, 51, (0.002, 98_000.0))
    assert _front(browse.study_pareto(db, study_id)) == {(50, 0)}
    # trial 50 is run again (its row replaced by a running one): trial 51 is the fast end again
    flag_store.start_trial(db, study_id, 50)
    after = browse.study_pareto(db, study_id)
    assert after["total_points"] == 151 and _front(after) == {(51, 0)}
    assert after["points"] == _from_scratch(db, study_id)["points"]
    # trial 51 deleted: the seeded front comes back
    db.transaction(lambda s: s.execute(sa.delete(FlagTrial).where(FlagTrial.study_id == study_id,
                                                                  FlagTrial.trial_number == 51)))
    seeded = browse.study_pareto(db, study_id)
    assert seeded["total_points"] == 150 and all(p["trial"] < 50 for p in seeded["points"])
    assert seeded["points"] == _from_scratch(db, study_id)["points"]


def test_the_chart_stays_bounded_and_keeps_the_whole_front(db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(browse, "MAX_PARETO_POINTS", 100)
    study_id = seed.seed_study(db, "s1", 200)
    answer = browse.study_pareto(db, study_id)
    assert answer["total_points"] == 600 and len(answer["points"]) <= 100
    full_front = _front(answer)
    for number in range(200, 210):  # a growing front: each trial faster and better than the last
        _add_trial(db, study_id, number, (0.001 - number * 1e-6, 90_000.0 + number))
        answer = browse.study_pareto(db, study_id)
        assert len(answer["points"]) <= 100
    assert _front(answer) == _front(_from_scratch(db, study_id)) and (209, 0) in _front(answer)
    assert full_front  # the seeded study had a front of its own


def test_a_service_start_warms_the_fronts_of_the_latest_studies_so_no_view_pays_the_full_read(db, read_trials) -> None:  # type: ignore[no-untyped-def]
    browse._PARETO_CACHE.clear()
    ids = [seed.seed_study(db, f"w{i}", 20) for i in range(3)]
    assert browse.warm_pareto_caches(db, limit=2) == 2
    warmed = len(read_trials)
    assert warmed > 0
    newest = max(ids)
    browse.study_pareto(db, newest)  # warmed: nothing read again
    assert len(read_trials) == warmed
    browse.study_pareto(db, min(ids))  # beyond the limit: read on its first view
    assert len(read_trials) > warmed
