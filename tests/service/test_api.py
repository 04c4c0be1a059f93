"""The service's REST API on a real database (SQLite and PostgreSQL): jobs created, listed, cancelled and retried
through the job-kind registry; paged, sorted reads of trials and measurements; the config database; exports as
zip downloads; the token and localhost rules; bounded bodies; /metrics."""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tuner.errors import TunerError
from tuner.jobs import units
from tuner.service.app import create_app
from tuner.service.config import ServiceConfig, safe_filename

sys.path.insert(0, str(Path(__file__).parent))
import seed

TOKEN = "s3cret-token-for-tests-0123"
SWEEP_BODY = {"model": "GLM-4.7-FP8", "tp": 8, "batch_sizes": "1,64", "device_name": "NVIDIA H200"}


@pytest.fixture
def client(db, db_url):  # type: ignore[no-untyped-def]
    return TestClient(create_app(ServiceConfig(db_url), db))


@pytest.fixture
def token_client(db, db_url):  # type: ignore[no-untyped-def]
    return TestClient(create_app(ServiceConfig(db_url, token=TOKEN), db))


def test_a_kernel_sweep_job_is_created_from_its_request_and_the_same_request_finds_it(client, db) -> None:  # type: ignore[no-untyped-def]
    created = client.post("/api/jobs/kernel_sweep", json=SWEEP_BODY)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["kind"] == "kernel_sweep:NVIDIA H200" and job["state"] == "queued"
    assert job["units"] == {"queued": 4} and job["units_total"] == 4  # a pass per batch size, then a second pass
    again = client.post("/api/jobs/kernel_sweep", json=SWEEP_BODY)
    assert again.status_code == 200 and again.json()["id"] == job["id"]
    listed = client.get("/api/jobs").json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == job["id"]
    # in the order workers claim them: largest batch size first in each pass
    assert [u["key"] for u in client.get(f"/api/jobs/{job['id']}/units").json()["items"]] == [
        "M=64", "M=1", "second pass M=64", "second pass M=1"]
    assert client.get(f"/api/jobs/{job['id']}/result").json()["result"] is None  # nothing measured yet


def test_a_bad_request_body_is_one_line_naming_the_option(client) -> None:  # type: ignore[no-untyped-def]
    for body, expected in [({"tp": 8}, "--model is required"),
                           ({**SWEEP_BODY, "kernel": "gemm"}, "--kernel must be one of"),
                           ({**SWEEP_BODY, "tp": "eight"}, "--tp must be a whole number"),
                           ({**SWEEP_BODY, "teleport": 1}, "unknown option(s) teleport"),
                           ({**SWEEP_BODY, "model": "no-such-model-anywhere"}, "no-such-model-anywhere"),
                           ({**SWEEP_BODY, "model": "x" * 300}, "neither a file, a folder, nor a catalog name")]:
        r = client.post("/api/jobs/kernel_sweep", json=body)
        assert r.status_code == 400, (body, r.text)
        detail = r.json()["detail"]
        assert expected in detail and "\n" not in detail and "Traceback" not in detail
    assert client.get("/api/jobs").json()["total"] == 0
    assert client.post("/api/jobs/kernel_sweep", content=b"[1, 2]",
                       headers={"content-type": "application/json"}).status_code in (400, 422)


def test_cancel_ends_a_job_and_retry_requeues_only_a_failed_one(client, db) -> None:  # type: ignore[no-untyped-def]
    job = client.post("/api/jobs/kernel_sweep", json=SWEEP_BODY).json()
    r = client.post(f"/api/jobs/{job['id']}/retry")
    assert r.status_code == 409 and "only a failed job" in r.json()["detail"]
    cancelled = client.post(f"/api/jobs/{job['id']}/cancel").json()
    assert cancelled["state"] == "cancelled" and cancelled["units"] == {"cancelled": 4}
    # a failed job: its failed unit goes back to the queue, its finished one is kept
    # (exhaustive: one unit per batch size, no second pass waiting on the first)
    other = client.post("/api/jobs/kernel_sweep", json={**SWEEP_BODY, "exhaustive": True}).json()
    for outcome in ("done", "failed"):
        claim = units.claim_unit(db, "w1", job_ids=[other["id"]])
        assert claim is not None
        if outcome == "done":
            units.complete(db, claim.unit.id, "w1", {"ok": True})
        else:
            units.fail(db, claim.unit.id, "w1", "RuntimeError: boom")
    assert client.get(f"/api/jobs/{other['id']}").json()["state"] == "failed"
    retried = client.post(f"/api/jobs/{other['id']}/retry").json()
    assert retried["state"] == "running" and retried["units"] == {"done": 1, "queued": 1}
    assert client.post("/api/jobs/999/cancel").status_code == 404
    assert client.get("/api/jobs?state=bogus").status_code == 400


def test_trials_are_paged_filtered_and_sorted(client, db) -> None:  # type: ignore[no-untyped-def]
    seed.seed_study(db, "s1", 120)
    page = client.get("/api/studies/s1/trials?limit=50&offset=100").json()
    assert page["total"] == 120 and len(page["items"]) == 20 and page["items"][0]["trial_number"] == 100
    best = client.get("/api/studies/s1/trials?sort=-goodput_tok_s&limit=5").json()["items"]
    goodputs = [t["goodput_tok_s"] for t in best]
    assert goodputs == sorted(goodputs, reverse=True)
    every = client.get("/api/studies/s1/trials?sort=-goodput_tok_s&limit=500").json()["items"]
    assert goodputs[0] == max(t["goodput_tok_s"] for t in every)
    assert client.get("/api/studies/s1/trials?status=failed").json()["total"] == 0
    bad = client.get("/api/studies/s1/trials?sort=colour")
    assert bad.status_code == 400 and "cannot sort by 'colour'" in bad.json()["detail"]
    assert client.get("/api/studies/s1/trials?limit=100000").status_code == 400
    assert client.get("/api/studies/nope/trials").status_code == 404
    study = client.get("/api/studies").json()["items"][0]
    assert study["name"] == "s1" and study["trials"] == {"ok": 120}
    log = client.get(f"/api/trials/{every[0]['id']}/log").json()
    assert log["log_tail"].startswith("trial ")


def test_the_pareto_front_is_what_no_other_step_beats(client, db) -> None:  # type: ignore[no-untyped-def]
    seed.seed_study(db, "s1", 40)
    data = client.get("/api/studies/s1/pareto").json()
    assert data["metric"] == "tpot_p99" and data["total_points"] == 120 and len(data["points"]) == 120
    points = data["points"]
    for p in points:
        beaten = any(q["goodput_tok_s"] >= p["goodput_tok_s"] and q["latency_s"] <= p["latency_s"]
                     and (q["goodput_tok_s"] > p["goodput_tok_s"] or q["latency_s"] < p["latency_s"]) for q in points)
        assert p["on_front"] == (not beaten)


def test_a_sweep_shows_its_best_configs_speedups_and_heat_map(client, db) -> None:  # type: ignore[no-untyped-def]
    sweep_id = seed.seed_sweep(db, n_configs=12)
    sweep = client.get(f"/api/sweeps/{sweep_id}").json()
    assert [b["batch_size"] for b in sweep["best"]] == list(seed.BATCH_SIZES)
    assert sweep["geomean_speedup_vs_engine"] == pytest.approx(1.08)
    assert sweep["geomean_speedup_vs_default"] == pytest.approx(1.3)
    heat = client.get(f"/api/sweeps/{sweep_id}/heatmap").json()
    assert heat["batch_sizes"] == list(seed.BATCH_SIZES) and len(heat["configs"]) == 12
    for j, m in enumerate(heat["batch_sizes"]):
        column = [row[j] for row in heat["latency_us"]]
        assert heat["best_us"][j] == min(column)
        assert heat["best_us"][j] == pytest.approx(sweep["best"][j]["latency_us"])
    fastest = client.get(f"/api/sweeps/{sweep_id}/measurements?batch_size=64&limit=3").json()
    assert fastest["total"] == 12 and fastest["items"][0]["latency_us"] == pytest.approx(sweep["best"][6]["latency_us"])
    configs = client.get("/api/configs").json()
    assert len(configs) == 1 and configs[0]["sweep_id"] == sweep_id and configs[0]["best_count"] == 9


def test_exports_download_as_zips_in_the_engines_layout(client, db) -> None:  # type: ignore[no-untyped-def]
    sweep_id = seed.seed_sweep(db, n_configs=6)
    r = client.get(f"/api/sweeps/{sweep_id}/export.zip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == \
        f'attachment; filename="GLM-4.7-FP8-tp8-ep1-NVIDIA_H200-sweep{sweep_id}.zip"'
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert any(n.startswith("configs/triton_3_4_0/E=161,N=192,device_name=NVIDIA_H200") for n in names), names
    assert any(n.startswith("vllm/E=160,N=192,device_name=NVIDIA_H200") for n in names), names  # vLLM: no fusion
    seed.seed_study(db, 'my "study" ../x', 5)
    r = client.get("/api/studies/my \"study\" ..%2Fx/export.zip")
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"] == 'attachment; filename="my_study_.._x.zip"'
    files = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert "best.json" in files and any(f.endswith(".yaml") for f in files), files


def test_download_names_are_made_safe() -> None:
    assert safe_filename('../../etc/passwd"; x', ".zip") == "etc_passwd_x.zip"
    assert safe_filename("..", ".zip") == "download.zip"
    assert len(safe_filename("a" * 500)) == 100


def test_with_a_token_mutating_calls_need_it_and_reads_do_not(token_client) -> None:  # type: ignore[no-untyped-def]
    r = token_client.post("/api/jobs/kernel_sweep", json=SWEEP_BODY)
    assert r.status_code == 401 and "TUNER_API_TOKEN" in r.json()["detail"]
    wrong = token_client.post("/api/jobs/kernel_sweep", json=SWEEP_BODY, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = token_client.post("/api/jobs/kernel_sweep", json=SWEEP_BODY, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 201
    assert token_client.post(f"/api/jobs/{ok.json()['id']}/cancel").status_code == 401
    assert token_client.get("/api/jobs").json()["total"] == 1


def test_without_a_token_it_listens_on_localhost_only_and_refuses_other_origins(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TunerError, match="set TUNER_API_TOKEN"):
        ServiceConfig("sqlite://", host="0.0.0.0")
    with pytest.raises(TunerError, match="at least 16"):
        ServiceConfig("sqlite://", host="0.0.0.0", token="short")
    assert ServiceConfig("sqlite://", host="0.0.0.0", token=TOKEN).host == "0.0.0.0"
    assert "localhost only" in " ".join(ServiceConfig("sqlite://").start_lines())
    evil = client.post("/api/jobs/kernel_sweep", json=SWEEP_BODY, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403
    same = client.post("/api/jobs/kernel_sweep", json=SWEEP_BODY, headers={"Origin": "http://testserver"})
    assert same.status_code == 201


def test_request_bodies_are_bounded(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/jobs/kernel_sweep", json={**SWEEP_BODY, "model": "x" * 300_000})
    assert r.status_code == 413 and "request body over" in r.json()["detail"]


def test_kinds_describe_their_options_for_the_form_and_the_openapi_docs(client) -> None:  # type: ignore[no-untyped-def]
    kinds = {k["name"]: k for k in client.get("/api/kinds").json()}
    fields = {f["name"]: f for f in kinds["kernel_sweep"]["fields"]}
    assert fields["model"]["required"] and fields["kernel"]["choices"] == ["fused-moe", "fp8-gemm", "all"]
    assert fields["tp"]["type"] == "integer" and fields["tp"]["default"] == 1 and "device_name" in fields
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/api/jobs/kernel_sweep"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "model" in body["required"] and body["additionalProperties"] is False


def test_metrics_count_jobs_and_units_by_state_from_the_database(client, db) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client.parser import text_string_to_metric_families

    job = client.post("/api/jobs/kernel_sweep", json={**SWEEP_BODY, "exhaustive": True}).json()  # 2 units
    claim = units.claim_unit(db, "w-metrics", job_ids=[job["id"]])
    assert claim is not None
    units.complete(db, claim.unit.id, "w-metrics", {"ok": True})
    units.claim_unit(db, "w-metrics", job_ids=[job["id"]])
    seed.seed_study(db, "s1", 3)
    text = client.get("/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("tuner_jobs", (("kind", "kernel_sweep"), ("state", "running")))] == 1
    assert samples[("tuner_work_units", (("kind", "kernel_sweep"), ("state", "done")))] == 1
    assert samples[("tuner_work_units", (("kind", "kernel_sweep"), ("state", "claimed")))] == 1
    assert samples[("tuner_workers_live", ())] == 1
    assert samples[("tuner_job_progress_ratio", (("job_id", str(job["id"])), ("kind", "kernel_sweep")))] == 0.5
    best = [v for (name, labels), v in samples.items() if name == "tuner_study_best_objective"]
    assert len(best) == 1 and best[0] > 1500
    assert ("tuner_units_lease_expired", ()) in samples


def test_an_export_job_runs_on_a_cpu_worker_and_downloads_as_a_zip(client, db, db_url, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from tuner.jobs import kinds
    from tuner.jobs.worker import work

    monkeypatch.setenv("TUNER_DATA_DIR", str(tmp_path / "data-dir"))
    seed.seed_sweep(db, n_configs=4)
    job = client.post("/api/jobs/export", json={"model": "zai-org/GLM-4.7-FP8", "tp": 8}).json()
    assert client.get(f"/api/jobs/{job['id']}/download").status_code == 409  # nothing written yet
    context = kinds.WorkerContext(db_url)
    summary = work(db_url, kinds.handler_for(context), kinds=kinds.claimed_kinds(context), job_ids=[job["id"]])
    assert summary.failed == [] and client.get(f"/api/jobs/{job['id']}").json()["state"] == "finished"
    r = client.get(f"/api/jobs/{job['id']}/download")
    assert r.status_code == 200 and r.headers["content-disposition"].startswith(f'attachment; filename="export-job{job["id"]}')
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert any(n.startswith("configs/triton_3_4_0/") for n in names) and any(n.startswith("vllm/") for n in names)
    sweep_job = client.post("/api/jobs/kernel_sweep", json=SWEEP_BODY).json()
    assert client.get(f"/api/jobs/{sweep_job['id']}/download").status_code == 409  # only exports have files
