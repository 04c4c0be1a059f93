"""What a flag search hands over: the best config with its gain over the baseline (and the spread), the
Pareto front of throughput vs p99 latency (PNG plus CSV/JSON data), the exact launch command, an engine
`--config` YAML, and everything as JSON. Built from the database only, so `tuner export` can write it again
at any time.

Reads the store's typed records (FlagStudyRecord with its StudyResult, FlagTrialRecord) and writes files; it
launches nothing and never changes the study.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuner.errors import ExportError, TunerError
from tuner.paths import describe_os_error, writable_folder
from tuner.search.flags.load_search import LoadSearchResult
from tuner.store import flags as store
from tuner.store.base import json_object
from tuner.store.db import Database
from tuner.store.flag_results import BestConfig, StudyResult

FILES = ("best.json", "best-config.yaml", "launch-command.txt", "pareto.csv", "pareto.json", "pareto.png",
         "trials.csv")
DEFAULT_PORT = 30000


@dataclass(frozen=True)
class StudyReport:
    study: store.FlagStudyRecord
    trials: tuple[store.FlagTrialRecord, ...]  # search trials
    remeasures: tuple[store.FlagTrialRecord, ...]

    @property
    def result(self) -> StudyResult | None:
        """The study's result as it stands (None before its first step ended)."""
        return self.study.result

    @property
    def best(self) -> BestConfig | None:
        return self.result.best if self.result is not None else None

    @property
    def trial_counts(self) -> dict[str, int]:
        """Search trials per status, in TRIAL_STATUSES order (statuses with none left out)."""
        return {status: n for status in store.TRIAL_STATUSES
                if (n := sum(1 for t in self.trials if t.status == status))}

    def best_launch_argv(self) -> list[str]:
        """The best config's engine command line (KeyError-free: call only when `best` is not None)."""
        assert self.best is not None
        return launch_argv(self, self.best.flags)

    @property
    def pareto_metric(self) -> str:
        return str(self.study.objective.get("pareto_metric") or "tpot_p99")

    @property
    def slos(self) -> list[str]:
        """The SLOs as given ('ttft_p99<=2s', ...)."""
        slos = self.study.objective.get("slos")
        return [str(s) for s in slos] if isinstance(slos, list) else []

    @property
    def engine_options(self) -> dict[str, Any]:
        return json_object((self.study.settings or {}).get("engine_options")) or {}

    def searches(self, trial: store.FlagTrialRecord) -> list[LoadSearchResult]:
        """A trial's load searches, typed as they were measured."""
        return [LoadSearchResult.from_dict(s) for s in trial.searches or []]


def load_report(db: Database, study_name: str) -> StudyReport:
    record = store.get_study(db, study_name)
    if record is None:
        names = ", ".join(s.name for s in store.list_studies(db)) or "none yet"
        raise ExportError(f"no flag study named {study_name!r} in {db.display_url} (studies: {names})")
    return StudyReport(record, tuple(store.list_trials(db, record.id, "search")),
                       tuple(store.list_trials(db, record.id, "remeasure")))


# ----------------------------------------------------------------------------------------------------
# The launch command and the config file

def launch_argv(report: StudyReport, flags: Mapping[str, Any], *, port: int = DEFAULT_PORT) -> list[str]:
    """The engine's command line for `flags` (listening on all interfaces, port `port`)."""
    from tuner.runtime.engines import get_engine

    engine = get_engine(report.study.engine, **report.engine_options)
    return engine.build_argv(report.study.model, port, spelled_flags(report, flags), host="0.0.0.0")


def spelled_flags(report: StudyReport, flags: Mapping[str, Any]) -> dict[str, Any]:
    """`flags` (knob names, as searched) in the installed engine's spelling (as given when its flag surface
    cannot be read, e.g. exporting on a machine without the engine)."""
    from tuner.runtime.engines import get_engine
    from tuner.runtime.session import engine_flags

    try:
        return engine_flags(get_engine(report.study.engine, **report.engine_options), flags, required=False)
    except TunerError:
        return dict(flags)


def launch_command(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """A display string a shell reads back as exactly `argv` (with `env` in front)."""
    prefix = [f"{k}={shlex.quote(str(v))}" for k, v in sorted(env.items())]
    return " ".join(prefix + [shlex.quote(a) for a in argv])


def config_yaml(flags: Mapping[str, Any], env: Mapping[str, str], *, header: Sequence[str] = ()) -> str:
    """An engine `--config` file: flag names as keys, switches as true, lists as lists; False and None are
    left out (they mean 'not given'). Environment variables cannot go in it: they are listed as comments."""
    data: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None or value is False:
            continue
        data[key] = list(value) if isinstance(value, tuple) else value
    lines = [f"# {h}" for h in header]
    if env:
        lines.append("# Set these environment variables before launching (a config file cannot):")
        lines += [f"#   export {k}={shlex.quote(str(v))}" for k, v in sorted(env.items())]
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False) if data else "{}\n"
    return "\n".join(lines) + ("\n" if lines else "") + body


# ----------------------------------------------------------------------------------------------------
# Pareto front

@dataclass(frozen=True)
class ParetoPoint:
    trial: int
    step: int
    load: float
    throughput_tok_s: float
    goodput_tok_s: float
    latency_s: float
    meets_slo: bool
    is_baseline: bool
    params: Mapping[str, Any]
    on_front: bool = False


def pareto_points(report: StudyReport) -> list[ParetoPoint]:
    """Every measured load step of every search trial (throughput vs the Pareto latency), the front marked:
    no other point has at least the throughput and at most the latency, one of them strictly."""
    metric = report.pareto_metric
    points: list[ParetoPoint] = []
    for t in report.trials:
        for search in report.searches(t)[:1]:
            for step in search.steps:
                latency = step.figures.latency_s.get(metric)
                if latency is None:
                    continue
                points.append(ParetoPoint(
                    trial=t.trial_number, step=step.index, load=step.load,
                    throughput_tok_s=step.figures.output_throughput_tok_s,
                    goodput_tok_s=step.figures.goodput_tok_s, latency_s=latency,
                    meets_slo=step.meets_slo, is_baseline=t.is_baseline, params=t.params))
    out = []
    for p in points:
        dominated = any(q.throughput_tok_s >= p.throughput_tok_s and q.latency_s <= p.latency_s
                        and (q.throughput_tok_s > p.throughput_tok_s or q.latency_s < p.latency_s)
                        for q in points)
        out.append(ParetoPoint(**{**p.__dict__, "on_front": not dominated}))
    return out


def _slo_limit(report: StudyReport, metric: str) -> float | None:
    from tuner.search.flags.objective import parse_slo_text

    slos = report.slos
    try:
        parsed = parse_slo_text(",".join(slos)) if slos else ()
    except TunerError:  # a stored SLO this version cannot read: draw no line
        return None
    for s in parsed:
        if f"{s.metric}_{s.stat}" == metric:
            return s.limit_s
    return None


def write_pareto_png(report: StudyReport, points: Sequence[ParetoPoint], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        raise ExportError("the Pareto plot needs matplotlib: pip install matplotlib") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = report.pareto_metric
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    bad = [p for p in points if not p.meets_slo]
    good = [p for p in points if p.meets_slo]
    ax.scatter([p.latency_s * 1e3 for p in bad], [p.throughput_tok_s for p in bad], s=14, c="#bbbbbb",
               label="misses the SLOs")
    ax.scatter([p.latency_s * 1e3 for p in good], [p.throughput_tok_s for p in good], s=18, c="#3b73b9",
               label="meets the SLOs")
    front = sorted((p for p in points if p.on_front), key=lambda p: p.latency_s)
    if front:
        ax.plot([p.latency_s * 1e3 for p in front], [p.throughput_tok_s for p in front], "-o", c="#d1495b",
                ms=4, lw=1.5, label="Pareto front")
    base = [p for p in points if p.is_baseline]
    if base:
        ax.scatter([p.latency_s * 1e3 for p in base], [p.throughput_tok_s for p in base], marker="s", s=40,
                   facecolors="none", edgecolors="black", label="baseline (engine defaults)")
    best = report.best
    if best is not None:
        mine = [p for p in points if p.trial == best.trial]
        ax.scatter([p.latency_s * 1e3 for p in mine], [p.throughput_tok_s for p in mine], marker="*", s=120,
                   c="#f4a259", edgecolors="black", label=f"best (trial {best.trial})", zorder=5)
    limit = _slo_limit(report, metric)
    if limit is not None:
        ax.axvline(limit * 1e3, ls="--", c="#888888", lw=1)
        ax.text(limit * 1e3, ax.get_ylim()[1], f" SLO {metric}", va="top", fontsize=8, color="#555555")
    ax.set_xlabel(f"{metric} (ms)")
    ax.set_ylabel("output throughput (tok/s)")
    ax.set_title(f"{report.study.name}: {report.study.model} on {report.study.gpu or report.study.engine}",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------
# Writing it all

def _as_json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else None
    if isinstance(value, Mapping):
        return {str(k): _as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    return value


def summary(report: StudyReport) -> dict[str, Any]:
    """The JSON document of a study's result (best.json)."""
    s = report.study
    result = report.result
    best = report.best
    out: dict[str, Any] = {
        "study": s.name, "engine": s.engine, "engine_version": s.engine_version, "gpu": s.gpu,
        "model": s.model, "workload": s.workload, "objective": s.objective, "sampler": s.sampler,
        "load_search": s.load_search, "status": s.status, "trials": report.trial_counts,
        "baseline": result.baseline.to_json() if result is not None and result.baseline is not None else None,
        "gain": result.gain.to_json() if result is not None and result.gain is not None else None,
        "ranking": [r.to_json() for r in result.ranking] if result is not None else None,
        "robust": result.robust if result is not None else None,
    }
    if best is not None:
        argv = report.best_launch_argv()
        out["best"] = {**best.to_json(), "launch_argv": argv, "launch_command": launch_command(argv, best.env)}
    return _as_json(out)


def write_report(report: StudyReport, out_dir: str | Path, *, force: bool = False) -> list[Path]:
    """Write FILES into `out_dir`; refuses to overwrite unless `force`. Returns the paths written."""
    out = Path(out_dir)
    if report.best is None:
        raise ExportError(f"study {report.study.name!r} has no config that met the SLOs yet: nothing to export "
                          "(run more trials, relax the SLOs or widen the load range)")
    targets = [out / name for name in FILES]
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        raise ExportError(f"{', '.join(str(p) for p in existing)} already exist(s); use --force to overwrite")
    writable_folder(out, "--out")
    try:
        return _write_files(report, out)
    except OSError as exc:
        raise ExportError(f"cannot write the study's files into --out {out}: {describe_os_error(exc)}") from None


def _write_files(report: StudyReport, out: Path) -> list[Path]:
    doc = summary(report)
    best = report.best
    assert best is not None and report.result is not None
    argv = report.best_launch_argv()
    written: list[Path] = []

    def put(name: str, text: str) -> None:
        path = out / name
        path.write_text(text)
        written.append(path)

    put("best.json", json.dumps(doc, indent=2) + "\n")
    gain_text = ""
    if report.result.gain is not None:
        gain_text = f"; {report.result.gain.ratio * 100:+.1f}% goodput over the engine's defaults"
    put("best-config.yaml", config_yaml(spelled_flags(report, best.flags), best.env, header=[
        f"Best config of flag-search study {report.study.name!r} (trial {best.trial}){gain_text}.",
        (f"Model {report.study.model}, {report.study.gpu or report.study.engine}; SLOs "
         f"{', '.join(report.slos)}."),
        ("Launch: python -m sglang.launch_server --model-path MODEL --config best-config.yaml"
         if report.study.engine != "vllm" else "Launch: vllm serve MODEL --config best-config.yaml"),
    ]))
    put("launch-command.txt", launch_command(argv, best.env) + "\n")
    points = pareto_points(report)
    fields = ["trial", "step", "load", "throughput_tok_s", "goodput_tok_s", f"{report.pareto_metric}_s",
              "meets_slo", "on_front", "is_baseline", "params"]
    path = out / "pareto.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for p in points:
            w.writerow([p.trial, p.step, "inf" if math.isinf(p.load) else p.load, round(p.throughput_tok_s, 3),
                        round(p.goodput_tok_s, 3), round(p.latency_s, 6), p.meets_slo, p.on_front,
                        p.is_baseline, json.dumps(p.params, sort_keys=True)])
    written.append(path)
    put("pareto.json", json.dumps(_as_json({
        "metric": report.pareto_metric, "throughput": "output_throughput_tok_s",
        "points": [p.__dict__ for p in points]}), indent=2) + "\n")
    write_pareto_png(report, points, out / "pareto.png")
    written.append(out / "pareto.png")
    path = out / "trials.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", "baseline", "status", "failure_kind", "goodput_tok_s", "goodput_req_s", "max_load",
                    "params", "error"])
        for t in report.trials:
            w.writerow([t.trial_number, t.is_baseline, t.status, t.failure_kind or "", t.goodput_tok_s,
                        t.goodput_req_s, t.max_load, json.dumps(t.params, sort_keys=True),
                        (t.error or "").splitlines()[0][:200] if t.error else ""])
    written.append(path)
    return written


def render_summary(report: StudyReport) -> str:
    """A few lines for the terminal: best config, gain over the baseline with spread, the command."""
    s = report.study
    lines = [f"study {s.name}: {s.model} on {s.gpu or s.engine}; "
             + ", ".join(f"{n} {k}" for k, n in report.trial_counts.items())]
    result = report.result
    base = result.baseline if result is not None else None
    if base is not None:
        lines.append(f"baseline (trial {base.trial}): " + (
            f"goodput {base.score.median:.1f} ± {base.score.sigma:.1f} tok/s" if base.status == "ok"
            else f"{base.status} ({base.failure_kind})"))
    best = report.best
    if result is None or best is None:
        lines.append("no config met the SLOs")
        return "\n".join(lines)
    lines.append(f"best (trial {best.trial}): goodput {best.score.median:.1f} ± {best.score.sigma:.1f} tok/s "
                 f"(score median - 1.4826 MAD = {best.score.score:.1f}, {len(best.score.samples)} sample(s))")
    lines.append("  " + (" ".join(f"{k}={v}" for k, v in best.params.items()) or "(the engine's defaults: no "
                                                                                    "searched flag set)"))
    g = result.gain
    if g is not None:
        lines.append(f"gain over the baseline: {g.ratio * 100:+.1f}% "
                     f"(spread {g.low * 100:+.1f}% .. {g.high * 100:+.1f}%)")
    lines.append("launch: " + launch_command(report.best_launch_argv(), best.env))
    return "\n".join(lines)
