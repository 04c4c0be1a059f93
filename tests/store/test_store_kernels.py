"""Kernel results: measurements round-trip and replace, best configs per batch size, resumable sweeps."""

from __future__ import annotations

import datetime as dt

import pytest

from tuner.kernels.base import MoeShape, Quant
from tuner.store import kernels
from tuner.store.kernels import Measurement, MeasurementContext
from tuner.store.models import KernelSweep

CTX = MeasurementContext("fused_moe", "tuner", "NVIDIA H100 80GB HBM3", "3.6.0", "cuda_graph_v1")
SHAPE = MoeShape(
    num_experts=161,
    intermediate_size=192,
    hidden_size=5120,
    top_k=8,
    quant=Quant.FP8_PER_CHANNEL,
    fused_shared_experts=1,
)


def ok(batch_size: int, config_key: str, latency_us: float) -> Measurement:
    return Measurement(batch_size, config_key, "ok", latency_us, 0.2, 1e-3, None, 1.5)


def sweep_fields(**overrides):  # type: ignore[no-untyped-def]
    fields = {
        "model": "zai-org/GLM-4.6-FP8",
        "tp": 8,
        "ep": 1,
        "shared_experts_fusion": True,
        "dtype": "fp8_w8a8_per_channel",
        "kernel": "fused_moe",
        "kernel_source": "tuner",
        "device_name": CTX.device_name,
        "triton_version": "3.6.0",
        "torch_version": "2.11.0",
        "bench_method": "cuda_graph_v1",
        "shape": SHAPE,
        "shape_key": SHAPE.key,
        "batch_sizes": [1, 2, 4],
        "strategy": "grid",
    }
    fields.update(overrides)
    return fields


def test_measurements_round_trip(db) -> None:  # type: ignore[no-untyped-def]
    written = [
        ok(1, "M16_N64_K128_G1_w4_s3", 12.5),
        Measurement(1, "M64_N64_K128_G1_w4_s5", "oom", None, None, None, "out of shared memory", 0.3),
        Measurement(2, "M16_N64_K128_G1_w4_s3", "wrong", None, None, 0.7, "max rel error 0.7", 0.9),
    ]
    for m in written:
        kernels.record_measurement(db, CTX, SHAPE.key, m)
    loaded = kernels.load_measurements(db, CTX, SHAPE.key)
    assert sorted(loaded, key=lambda m: (m.batch_size, m.config_key)) == sorted(
        written, key=lambda m: (m.batch_size, m.config_key)
    )
    assert kernels.load_measurements(db, CTX, SHAPE.key, batch_size=2) == [written[2]]


def test_measurements_of_another_context_or_shape_are_kept_apart(db) -> None:  # type: ignore[no-untyped-def]
    kernels.record_measurement(db, CTX, SHAPE.key, ok(1, "a", 10.0))
    other_method = MeasurementContext(
        CTX.kernel, CTX.kernel_source, CTX.device_name, CTX.triton_version, "v2"
    )
    other_gpu = MeasurementContext(
        CTX.kernel, CTX.kernel_source, "NVIDIA H200", CTX.triton_version, CTX.bench_method
    )
    assert kernels.load_measurements(db, other_method, SHAPE.key) == []
    assert kernels.load_measurements(db, other_gpu, SHAPE.key) == []
    assert kernels.load_measurements(db, CTX, "another-shape") == []


def test_same_key_replaces_instead_of_duplicating(db) -> None:  # type: ignore[no-untyped-def]
    kernels.record_measurement(
        db, CTX, SHAPE.key, Measurement(8, "a", "timeout", None, None, None, "120 s", 120.0)
    )
    kernels.record_measurement(db, CTX, SHAPE.key, ok(8, "a", 33.0))
    assert kernels.load_measurements(db, CTX, SHAPE.key) == [ok(8, "a", 33.0)]


def test_best_is_fastest_ok_per_batch_size(db) -> None:  # type: ignore[no-untyped-def]
    for m in [
        ok(1, "a", 20.0),
        ok(1, "b", 15.0),
        ok(1, "c", 18.0),
        Measurement(1, "d", "wrong", None, None, 3.0, "fast but wrong", 0.1),
        ok(64, "a", 50.0),
        ok(64, "b", 70.0),
        Measurement(128, "a", "compile_error", None, None, None, "too many registers", 2.0),
    ]:
        kernels.record_measurement(db, CTX, SHAPE.key, m)
    best = kernels.best_measurements(db, CTX, SHAPE.key)
    assert {bs: m.config_key for bs, m in best.items()} == {1: "b", 64: "a"}
    assert best[1].latency_us == 15.0


def test_latency_of_a_failed_measurement_is_not_stored(db) -> None:  # type: ignore[no-untyped-def]
    kernels.record_measurement(db, CTX, SHAPE.key, Measurement(1, "a", "wrong", 1.0, None, 0.5, None, 0.1))
    assert kernels.load_measurements(db, CTX, SHAPE.key)[0].latency_us is None
    assert kernels.best_measurements(db, CTX, SHAPE.key) == {}


@pytest.mark.parametrize(
    "bad",
    [
        Measurement(1, "a", "fast", 1.0, None, None, None, 0.0),
        Measurement(1, "a", "ok", None, None, None, None, 0.0),
    ],
)
def test_invalid_measurement_is_refused(db, bad: Measurement) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        kernels.record_measurement(db, CTX, SHAPE.key, bad)
    assert kernels.load_measurements(db, CTX, SHAPE.key) == []


def test_rerunning_a_sweep_resumes_the_same_row(db) -> None:  # type: ignore[no-untyped-def]
    sweep_id = kernels.get_or_create_sweep(db, **sweep_fields())
    kernels.set_sweep_status(db, sweep_id, "interrupted", gpu_seconds_delta=40.0)
    again = kernels.get_or_create_sweep(
        db, **sweep_fields(batch_sizes=[4, 8], engine_version="sglang 0.5.23")
    )
    assert again == sweep_id
    (record,) = kernels.list_sweeps(db)
    assert record.status == "running"
    assert record.batch_sizes == (1, 2, 4, 8)
    assert record.gpu_seconds == 40.0
    assert record.engine_version == "sglang 0.5.23"
    assert record.shape["num_experts"] == 161 and record.shape["quant"] == "fp8_w8a8_per_channel"
    assert record.created_at.tzinfo is not None and record.updated_at >= record.created_at
    # a different key field is a different sweep
    assert kernels.get_or_create_sweep(db, **sweep_fields(tp=4)) != sweep_id


def test_sweep_needs_its_key_fields(db) -> None:  # type: ignore[no-untyped-def]
    fields = sweep_fields()
    del fields["device_name"]
    with pytest.raises(TypeError, match="device_name"):
        kernels.get_or_create_sweep(db, **fields)
    with pytest.raises(TypeError, match="colour"):
        kernels.get_or_create_sweep(db, **sweep_fields(colour="red"))


def test_sweep_status_and_gpu_seconds_accumulate(db) -> None:  # type: ignore[no-untyped-def]
    sweep_id = kernels.get_or_create_sweep(db, **sweep_fields())
    kernels.set_sweep_status(db, sweep_id, "running", gpu_seconds_delta=1.5)
    kernels.set_sweep_status(db, sweep_id, "finished", gpu_seconds_delta=2.0)
    record = kernels.get_sweep(db, sweep_id)
    assert record is not None and record.status == "finished" and record.gpu_seconds == 3.5
    with pytest.raises(ValueError):
        kernels.set_sweep_status(db, sweep_id, "done")
    with pytest.raises(LookupError):
        kernels.set_sweep_status(db, sweep_id + 100, "finished")


def test_best_configs_saved_per_batch_size_and_replaced(db) -> None:  # type: ignore[no-untyped-def]
    sweep_id = kernels.get_or_create_sweep(db, **sweep_fields())
    cfg_a = {
        "BLOCK_SIZE_M": 16,
        "BLOCK_SIZE_N": 64,
        "BLOCK_SIZE_K": 128,
        "GROUP_SIZE_M": 1,
        "num_warps": 4,
        "num_stages": 3,
    }
    cfg_b = dict(cfg_a, BLOCK_SIZE_M=64)
    down = dict(cfg_b, USE_TMA=True)
    best = kernels.BestConfig
    kernels.save_best_configs(db, sweep_id, [best(1, cfg_a, "a", 10.0, 14.0), best(2, cfg_a, "a", 11.0, None)])
    second = best(2, cfg_b, "b/down:c", 9.0, 12.0, down_config=down, engine_config={"up": cfg_a, "down": None},
                  engine_source="triton_3_5_1/E=1.json", engine_latency_us=9.5, single_config=cfg_b,
                  single_latency_us=9.2, kept_engine_choice=False, noise_us=0.1)
    kernels.save_best_configs(db, sweep_id, [second])
    assert kernels.load_best_configs(db, sweep_id) == {1: best(1, cfg_a, "a", 10.0, 14.0), 2: second}
    other = kernels.get_or_create_sweep(db, **sweep_fields(ep=8))
    assert kernels.load_best_configs(db, other) == {}
    with pytest.raises(LookupError):
        kernels.save_best_configs(db, 12345, [best(1, cfg_a, "a", 1.0, None)])


def test_list_sweeps_filters_by_model_and_device(db) -> None:  # type: ignore[no-untyped-def]
    kernels.get_or_create_sweep(db, **sweep_fields())
    kernels.get_or_create_sweep(db, **sweep_fields(model="Qwen/Qwen3-235B-A22B"))
    kernels.get_or_create_sweep(db, **sweep_fields(device_name="NVIDIA H200"))
    assert len(kernels.list_sweeps(db)) == 3
    assert {s.device_name for s in kernels.list_sweeps(db, model="zai-org/GLM-4.6-FP8")} == {
        CTX.device_name,
        "NVIDIA H200",
    }
    assert [
        s.model for s in kernels.list_sweeps(db, model="zai-org/GLM-4.6-FP8", device_name="NVIDIA H200")
    ] == ["zai-org/GLM-4.6-FP8"]


def test_mark_interrupted_sweeps(db) -> None:  # type: ignore[no-untyped-def]
    running = kernels.get_or_create_sweep(db, **sweep_fields())
    finished = kernels.get_or_create_sweep(db, **sweep_fields(tp=4))
    kernels.set_sweep_status(db, finished, "finished")
    stale = kernels.get_or_create_sweep(db, **sweep_fields(tp=2))
    with db.session() as session:
        session.get(KernelSweep, stale).updated_at = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    # only sweeps idle for an hour: the live one stays running
    assert kernels.mark_interrupted_sweeps(db, stale_after_s=3600) == 1
    assert kernels.get_sweep(db, stale).status == "interrupted"  # type: ignore[union-attr]
    assert kernels.mark_interrupted_sweeps(db) == 1
    statuses = {s.id: s.status for s in kernels.list_sweeps(db)}
    assert statuses == {running: "interrupted", finished: "finished", stale: "interrupted"}
