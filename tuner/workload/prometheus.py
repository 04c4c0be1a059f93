"""Read an engine's series from Prometheus with one PromQL range query (prometheus-api-client), as a
`SeriesWindow` for `tuner.workload.fit`.

The user's selector is merged into the query as label matchers; nothing is built by a shell. Failures a user
can fix (unreachable server, bad selector, a query Prometheus refuses) become WorkloadSourceError.
"""

from __future__ import annotations

import datetime as dt
import math
import re

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from tuner.errors import WorkloadSourceError
from tuner.workload.fit import ENGINES, Series, SeriesWindow, fit_workload
from tuner.workload_model import WorkloadModel

MAX_POINTS = 11000  # Prometheus refuses range queries of more points per series
DEFAULT_STEPS = 240  # rate-profile resolution when no step is given
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration_s(text: str, what: str = "duration") -> float:
    """'90s', '5m', '24h', '7d', or plain seconds, as seconds."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        m = _DURATION.match(text)
        if not m:
            raise WorkloadSourceError(f"{what} {text!r} is not a duration: use e.g. 90s, 5m, 24h or 7d") from None
        value = float(m.group(1)) * _UNIT_S[m.group(2)]
    if not value > 0 or not math.isfinite(value):
        raise WorkloadSourceError(f"{what} must be positive, got {text!r}")
    return value


def selector_matchers(selector: str) -> str:
    """The matchers inside a PromQL selector '{job="sglang", instance=~"a.*"}' (without braces)."""
    text = selector.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise WorkloadSourceError(f"--selector {selector!r} is not a label selector; write it like "
                                  "'{job=\"sglang\"}'")
    inner = text[1:-1].strip().rstrip(",")
    if "__name__" in inner:
        raise WorkloadSourceError("--selector must not match __name__: the metric names are the engine's")
    return inner


def query_window(
    url: str, selector: str, start_s: float, end_s: float, *, step_s: float | None = None,
    timeout_s: float = 30.0,
) -> SeriesWindow:
    """Every learned-from series of SGLang and vLLM matching `selector` between start_s and end_s (Unix
    seconds), sampled every `step_s` (default: window / 240, at least 1 s)."""
    if not end_s > start_s:
        raise WorkloadSourceError("the window is empty: its end is not after its start")
    window_s = end_s - start_s
    step = step_s or max(1.0, window_s / DEFAULT_STEPS)
    if window_s / step > MAX_POINTS:
        raise WorkloadSourceError(f"step {step:g}s gives more than {MAX_POINTS} points over {window_s:g}s; "
                                  "give a larger --step")
    names = sorted({n for e in ENGINES.values() for n in e.series_names()})
    matchers = selector_matchers(selector)
    name_re = "|".join(re.escape(n) for n in names)
    query = "{" + f'__name__=~"{name_re}"' + (f", {matchers}" if matchers else "") + "}"
    where = f"{selector} at {url}"
    client = PrometheusConnect(url=url.rstrip("/"), disable_ssl=True, retry=Retry(total=0))
    try:
        # start/end as exact floats (the library rounds its own arguments to whole seconds)
        result = client.custom_query_range(
            query, dt.datetime.fromtimestamp(start_s, dt.UTC), dt.datetime.fromtimestamp(end_s, dt.UTC),
            step=f"{step:g}", params={"start": f"{start_s:.3f}", "end": f"{end_s:.3f}"}, timeout=timeout_s,
        )
    except requests.RequestException as exc:
        raise WorkloadSourceError(f"cannot reach Prometheus at {url}: {type(exc).__name__}; check --prometheus "
                                  "and that the server is up") from None
    except PrometheusApiClientException as exc:
        raise WorkloadSourceError(f"Prometheus at {url} refused the query for {selector}: {_api_error(exc)}") \
            from None
    finally:
        client.close()
    n = math.floor(window_s / step + 1e-9) + 1
    times = tuple(start_s + i * step for i in range(n))
    by_name: dict[str, list[Series]] = {}
    for row in result:
        labels = dict(row.get("metric", {}))
        name = labels.pop("__name__", "")
        values: list[float | None] = [None] * n
        for ts, text in row.get("values", []):
            i = round((float(ts) - start_s) / step)
            if 0 <= i < n:
                values[i] = float(text)
        by_name.setdefault(name, []).append(Series(labels, tuple(values)))
    return SeriesWindow(times, by_name, where)


def _api_error(exc: PrometheusApiClientException) -> str:
    text = str(exc)
    m = re.search(r'"error":"((?:[^"\\]|\\.)*)"', text)
    return m.group(1) if m else text.splitlines()[0][:300]


def learn_from_prometheus(url: str, selector: str, start_s: float, end_s: float, *, step_s: float | None = None,
                          engine: str = "auto") -> WorkloadModel:
    """Query the window and fit it (engine: auto, sglang or vllm); WorkloadSourceError on bad input."""
    window = query_window(url, selector, start_s, end_s, step_s=step_s)
    if engine != "auto" and engine not in ENGINES:
        raise WorkloadSourceError(f"--engine must be auto, {' or '.join(ENGINES)}; got {engine!r}")
    return fit_workload(window, None if engine == "auto" else ENGINES[engine])
