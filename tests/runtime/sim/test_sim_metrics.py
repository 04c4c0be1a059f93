"""The simulator's /metrics against SGLang 0.5.23's own series (../shared/fixtures/sglang-0.5.23/metrics.json):
same names, kinds, label names and bucket edges."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tuner.runtime.sim.metrics import SimMetrics

FIXTURE = Path(__file__).resolve().parents[3] / ".." / "shared" / "fixtures" / "sglang-0.5.23" / "metrics.json"
# the `labels` dict each SGLang 0.5.23 collector is built with (no priority scheduling, no DP, no extra labels)
COLLECTOR_LABELS = {
    "TokenizerMetricsCollector": ["model_name", "engine_type"],
    "SchedulerMetricsCollector": ["model_name", "engine_type", "tp_rank", "pp_rank", "moe_ep_rank"],
}


def _sglang_series() -> dict[str, dict]:
    if not FIXTURE.is_file():
        pytest.skip(f"fixture {FIXTURE} not present")
    return {entry["name"]: entry for entry in json.loads(FIXTURE.read_text())}


def _label_names(entry: dict) -> set[str]:
    # "labels.keys()", "list(labels.keys()) + ['is_streaming']", "[*labels.keys(), 'mode']"
    return {*COLLECTOR_LABELS[entry["collector"]], *re.findall(r"'(\w+)'", entry["labels"])}


def _exposed() -> dict[str, tuple[str, set[str], list[float]]]:
    m = SimMetrics("zai-org/GLM-4.7-FP8")
    m.observe_first_token(0.05, streaming=True)
    m.observe_finished(10, 5, 4, 0.3, streaming=False)
    m.queue_time.observe(0.017)
    out = {}
    for family in text_string_to_metric_families(m.exposition().decode()):
        name = family.name + ("_total" if family.type == "counter" else "")
        labels: set[str] = set()
        edges = []
        for sample in family.samples:
            labels |= set(sample.labels) - {"le"}
            if sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf":
                edges.append(float(sample.labels["le"]))
        out[name] = (family.type, labels, sorted(set(edges)))
    return out


def test_every_series_has_sglangs_name_kind_and_labels():
    sglang = _sglang_series()
    for name, (kind, labels, _) in _exposed().items():
        assert name in sglang, f"{name} is not a SGLang 0.5.23 series"
        assert kind == sglang[name]["kind"].lower(), name
        assert labels == _label_names(sglang[name]), name


def test_queue_time_buckets_are_sglangs():
    sglang_edges = ast.literal_eval(_sglang_series()["sglang:queue_time_seconds"]["buckets"])
    assert _exposed()["sglang:queue_time_seconds"][2] == [float(e) for e in sglang_edges]
    # a 17 ms queue time lands between 10 and 50 ms, not in one sub-100 ms bucket
    assert 0.01 in sglang_edges and 0.05 in sglang_edges
