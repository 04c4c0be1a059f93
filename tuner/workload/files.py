"""Workload sources from files: a folder of scraped `/metrics` snapshots (parsed with prometheus_client's
text parser) and a JSONL request log. Snapshots become a `SeriesWindow`; a request log is fitted directly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tuner.errors import WorkloadSourceError
from tuner.workload.fit import Series, SeriesWindow
from tuner.workload_model import LengthDistribution, WorkloadModel, histogram_from_values

_EQ_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def equality_matchers(selector: str | None) -> dict[str, str]:
    """`{a="x", b="y"}` as a dict; files support only `=` matchers."""
    if not selector:
        return {}
    text = selector.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise WorkloadSourceError(f"--selector {selector!r} is not a label selector like '{{job=\"sglang\"}}'")
    inner, out, pos = text[1:-1], {}, 0
    while pos < len(inner.strip()):
        m = _EQ_MATCHER.match(inner, pos)
        if not m:
            raise WorkloadSourceError(f"--selector {selector!r}: snapshots and logs support only label=\"value\" "
                                      "matchers")
        out[m.group(1)] = m.group(2)
        pos = m.end()
    return out


def _snapshot_time(path: Path) -> float:
    try:
        return float(path.stem)  # e.g. 1767225600.5.prom written by a scraper
    except ValueError:
        return path.stat().st_mtime


def read_snapshots(folder: Path, selector: str | None = None) -> SeriesWindow:
    """Every file in `folder` is one `/metrics` text scrape; its time is its name (Unix seconds, e.g.
    `1767225600.5.prom`) or else its modification time."""
    if not folder.is_dir():
        raise WorkloadSourceError(f"{folder} is not a folder of /metrics snapshots")
    files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")), key=_snapshot_time)
    if len(files) < 2:
        raise WorkloadSourceError(f"{folder} holds {len(files)} snapshot(s); at least two scrapes are needed")
    wanted = equality_matchers(selector)
    times = tuple(_snapshot_time(p) for p in files)
    values: dict[tuple[str, tuple[tuple[str, str], ...]], list[float | None]] = {}
    for i, path in enumerate(files):
        try:
            families = list(text_string_to_metric_families(path.read_text()))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise WorkloadSourceError(f"{path} is not a Prometheus text scrape ({exc})") from None
        for family in families:
            for sample in family.samples:
                if any(sample.labels.get(k) != v for k, v in wanted.items()):
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                values.setdefault(key, [None] * len(files))[i] = float(sample.value)
    by_name: dict[str, list[Series]] = {}
    for (name, labels), vals in values.items():
        by_name.setdefault(name, []).append(Series(dict(labels), tuple(vals)))
    return SeriesWindow(times, by_name, f"{selector or 'all series'} in {folder}")


_TIME_KEYS = ("timestamp", "created_time", "time")
_PROMPT_KEYS = ("prompt_tokens", "input_len")
_OUTPUT_KEYS = ("completion_tokens", "output_len", "generation_tokens")


def _first(row: dict, keys: tuple[str, ...]) -> float | None:
    for k in keys:
        if row.get(k) is not None:
            return float(row[k])
    return None


def fit_request_log(path: Path, step_s: float | None = None) -> WorkloadModel:
    """A JSONL of one request per line: a time (`timestamp`|`created_time`, Unix or relative seconds),
    `prompt_tokens`|`input_len`, `completion_tokens`|`output_len`, optional `cached_tokens` and
    `spec_accept_length` (SGLang's request logs carry these names)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise WorkloadSourceError(f"cannot read request log {path}: {exc.strerror}") from None
    rows: list[tuple[float, float, float, float | None, float | None]] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            t, p, o = _first(row, _TIME_KEYS), _first(row, _PROMPT_KEYS), _first(row, _OUTPUT_KEYS)
            if t is None or p is None or o is None:
                raise ValueError("needs a timestamp, prompt_tokens and completion_tokens")
            rows.append((t, p, o, _first(row, ("cached_tokens",)), _first(row, ("spec_accept_length",))))
        except (ValueError, TypeError, AttributeError) as exc:
            raise WorkloadSourceError(f"{path}:{lineno}: bad request line ({exc}); expected e.g. "
                                      '{"timestamp": 1767225600.5, "prompt_tokens": 1024, '
                                      '"completion_tokens": 128}') from None
    if len(rows) < 2:
        raise WorkloadSourceError(f"request log {path} has {len(rows)} request(s); at least two are needed")
    rows.sort()
    t0, t1 = rows[0][0], rows[-1][0]
    if not t1 > t0:
        raise WorkloadSourceError(f"all requests in {path} have the same timestamp")
    step = step_s or max(1e-3, (t1 - t0) / 60)
    n_steps = max(1, int((t1 - t0) // step) + 1)
    counts = [0] * n_steps
    for r in rows:
        counts[min(n_steps - 1, int((r[0] - t0) // step))] += 1
    mean = len(rows) / n_steps
    prompts = [r[1] for r in rows]
    cached = [r[3] for r in rows if r[3] is not None]
    accept = [r[4] for r in rows if r[4] is not None]
    prompt_dist: LengthDistribution = histogram_from_values(prompts, "request-log")
    return WorkloadModel(
        engine="unknown", window_start_s=t0, window_end_s=t0 + n_steps * step, step_s=step,
        num_requests=len(rows), rate_rps=len(rows) / (n_steps * step),
        rate_profile_rps=tuple(c / step for c in counts),
        burstiness=sum((c - mean) ** 2 for c in counts) / n_steps / mean,
        prompt_tokens=prompt_dist, output_tokens=histogram_from_values([r[2] for r in rows], "request-log"),
        prefix_cache_hit_ratio=sum(cached) / sum(prompts) if cached and sum(prompts) > 0 else None,
        spec_accept_length=sum(accept) / len(accept) if accept else None,
    )
