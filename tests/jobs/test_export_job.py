"""Export as a job: a CPU worker writes the engine files of a stored sweep, the typed result lists them, and the
download zip keeps each engine's folder layout."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from tuner.errors import TunerError
from tuner.jobs import kinds, units
from tuner.jobs.export_job import ExportRequest, export_archive
from tuner.jobs.fields import from_dict
from tuner.jobs.worker import cpu_work
from tuner.kernels.base import KernelConfig
from tuner.models.config import load_model_config
from tuner.models.shapes import derive_moe_shape
from tuner.store.kernels import BestConfig, get_or_create_sweep, save_best_configs

SGLANG_FILE = "configs/triton_3_6_0/E=161,N=192,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,per_channel_quant=True.json"


def _store_sweep(db):  # type: ignore[no-untyped-def]
    shape = derive_moe_shape(load_model_config("GLM-4.7-FP8"), tp=8)
    sid = get_or_create_sweep(
        db, model="zai-org/GLM-4.7-FP8", tp=8, ep=1, shared_experts_fusion=True, dtype=shape.quant.value,
        kernel="fused_moe", kernel_source="tuner", device_name="NVIDIA H100 80GB HBM3", triton_version="3.6.0",
        torch_version="2.11", bench_method="m", shape=shape, shape_key=shape.key, batch_sizes=[1, 64],
        strategy="adaptive")
    c = KernelConfig(16, 128, 128, 1, 4, 4)
    save_best_configs(db, sid, [BestConfig(m, c.to_json_dict(), c.key, 10.0, 12.0) for m in (1, 64)])


def test_a_cpu_worker_exports_and_the_zip_keeps_the_engines_layout(db, db_url, tmp_path):  # type: ignore[no-untyped-def]
    _store_sweep(db)
    kind = kinds.get_kind("export")
    request = ExportRequest(model="GLM-4.7-FP8", tp=8, out=str(tmp_path / "out"))
    job = kind.submit(db_url, request)
    assert kind.result(db_url, job) is None and not kind.needs_gpu(job)
    summary = cpu_work(db_url, job_ids=[job.id])
    assert len(summary.done) == 1 and not summary.failed
    result = kind.result(db_url, units.get_job(db, job.id))
    assert result.state == "finished" and (tmp_path / "out" / SGLANG_FILE).is_file()
    assert any(f.endswith(SGLANG_FILE) for f in result.files) and any("/vllm/" in f for f in result.files)
    with zipfile.ZipFile(io.BytesIO(export_archive(result))) as archive:
        names = archive.namelist()
        assert SGLANG_FILE in names and any(n.startswith("vllm/E=160") for n in names)
        assert json.loads(archive.read(SGLANG_FILE))["64"] == KernelConfig(16, 128, 128, 1, 4, 4).to_json_dict()
        assert "SGLANG_MOE_CONFIG_DIR" in archive.read("NOTES.txt").decode()


def test_an_export_of_nothing_fails_its_unit_with_what_to_do(db, db_url, tmp_path):  # type: ignore[no-untyped-def]
    job = kinds.get_kind("export").submit(db_url, ExportRequest(model="GLM-4.7-FP8", tp=8, out=str(tmp_path)))
    cpu_work(db_url, job_ids=[job.id])
    (unit,) = units.list_units(db, job.id)
    assert unit.state == "failed" and "run `tuner kernel-sweep` first" in unit.error


@pytest.mark.parametrize(("body", "message"), [
    ({}, "an export needs --model (kernel configs) or --flag-study NAME"),
    ({"model": "m", "flag_study": "s"}, "not both"),
    ({"model": "m", "formats": "sglang,trt"}, "--formats 'sglang,trt'"),
])
def test_a_bad_export_request_is_one_line(body, message):  # type: ignore[no-untyped-def]
    with pytest.raises(TunerError) as err:
        from_dict(ExportRequest, body)
    assert message in str(err.value) and "\n" not in str(err.value)
