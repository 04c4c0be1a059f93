"""The job-kind registry: a kernel sweep asked for on the command line or as a JSON body is the same request and
the same job; the stored kind finds its kind; the worker loop dispatches every unit to its kind's handler; the
typed result reads what the sweep stored."""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar

import pytest

from tuner.cli import build_parser
from tuner.errors import JobError, TunerError
from tuner.jobs import kinds, units
from tuner.jobs.fields import from_dict, from_namespace, to_dict
from tuner.jobs.kernel_sweep import KernelSweepRequest
from tuner.jobs.worker import work
from tuner.store.kernels import BestConfig, get_or_create_sweep, save_best_configs


def test_the_command_line_and_a_json_body_give_the_same_kernel_sweep_request():
    args = build_parser().parse_args(["kernel-sweep", "--model", "GLM-4.7-FP8", "--tp", "8", "--batch-sizes", "1,64",
                                      "--no-shared-experts-fusion", "--kernel-source", "tuner", "--budget", "8"])
    from_cli = from_namespace(KernelSweepRequest, args)
    body = json.loads(json.dumps(to_dict(from_cli)))
    assert from_dict(KernelSweepRequest, body) == from_cli
    assert from_cli.shared_experts_fusion is False and from_cli.budget == 8 and from_cli.down_budget == 16
    neither = from_namespace(KernelSweepRequest, build_parser().parse_args(["kernel-sweep", "--model", "m"]))
    assert neither.shared_experts_fusion is None  # SGLang's own rule decides
    with pytest.raises(JobError, match="--kernel must be one of fused-moe, fp8-gemm, all"):
        from_dict(KernelSweepRequest, {"model": "m", "kernel": "gemm"})


def test_a_stored_kind_finds_its_kind_and_an_unknown_one_is_one_line():
    assert kinds.get_kind("kernel_sweep:NVIDIA H200").name == "kernel_sweep"
    assert "kernel_sweep" in [k.name for k in kinds.all_kinds()]
    with pytest.raises(TunerError) as err:
        kinds.get_kind("teleport:CPU")
    assert "unknown job kind 'teleport:CPU'" in str(err.value) and "\n" not in str(err.value)
    # a CPU worker takes no kernel sweeps: they are only valid timed on their device
    assert kinds.get_kind("kernel_sweep").claims(kinds.WorkerContext("sqlite://")) == []


def _request(**over):  # type: ignore[no-untyped-def]
    return KernelSweepRequest(**{"model": "GLM-4.7-FP8", "tp": 8, "batch_sizes": "1,64,4096",
                                 "device_name": "NVIDIA H200", **over})


def test_submitting_a_sweep_plans_a_search_and_a_second_pass_per_batch_size_and_again_finds_the_same_job(db, db_url):  # type: ignore[no-untyped-def]
    kind = kinds.get_kind("kernel_sweep")
    job = kind.submit(db_url, _request())
    assert job.kind == "kernel_sweep:NVIDIA H200"
    planned = units.list_units(db, job.id)
    assert [(u.key, u.stage) for u in planned] == [("M=4096", 0), ("M=64", 0), ("M=1", 0), ("second pass M=4096", 1),
                                                   ("second pass M=64", 1), ("second pass M=1", 1)]  # largest M first
    assert kind.submit(db_url, _request()).id == job.id  # a re-run resumes the same job
    assert kind.submit(db_url, _request(budget=8)).id != job.id
    # --kernel all on a block-FP8 model: the MoE and each dense GEMM shape, one job, units named by sweep
    both = kind.submit(db_url, _request(model="DeepSeek-V3", kernel="all", batch_sizes="16"))
    keys = [u.key for u in units.list_units(db, both.id)]
    assert keys[0] == "fused_moe M=16" and len(keys) > 2 and all(k.startswith("fp8_gemm N=") for k in keys[1:])


@pytest.mark.parametrize(("over", "message"), [
    ({"budget": 0}, "--budget must be a positive number of configs, got 0"),
    ({"batch_sizes": "1,x"}, "--batch-sizes must be comma-separated positive integers"),
    ({"shapes": "576,7168"}, "--shapes is for --kernel fp8-gemm or all"),
    ({"model": "no-such-model"}, "no-such-model"),
])
def test_a_bad_sweep_request_is_one_line_and_no_job(db, db_url, over, message):  # type: ignore[no-untyped-def]
    with pytest.raises(TunerError) as err:
        kinds.get_kind("kernel_sweep").submit(db_url, _request(**over))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert units.list_jobs(db) == []


def test_the_result_is_none_until_a_batch_size_is_stored_then_typed(db, db_url):  # type: ignore[no-untyped-def]
    kind = kinds.get_kind("kernel_sweep")
    job = kind.submit(db_url, _request())
    assert kind.result(db_url, job) is None
    sweep = job.spec["sweeps"][0]
    sid = get_or_create_sweep(
        db, model=sweep["model"], tp=8, ep=1, shared_experts_fusion=sweep["shared_experts_fusion"],
        dtype=sweep["shape"]["quant"], kernel="fused_moe", kernel_source="tuner", device_name="NVIDIA H200",
        triton_version="3.6.0", torch_version="2.11", bench_method="m", shape=sweep["shape"],
        shape_key=_shape_key(job), batch_sizes=[1, 64, 4096], strategy="adaptive")
    save_best_configs(db, sid, [BestConfig(64, {"BLOCK_SIZE_M": 16}, "cfg-64", 10.0, 14.0, engine_latency_us=12.0,
                                           kept_engine_choice=False)])
    result = kind.result(db_url, job)
    (outcome,) = result.sweeps
    assert outcome.device_name == "NVIDIA H200" and outcome.sweep_id == sid
    (batch,) = outcome.batches
    assert (batch.batch_size, batch.config_key, batch.latency_us, batch.engine_latency_us) == (64, "cfg-64", 10.0, 12.0)
    assert json.loads(json.dumps(dataclasses.asdict(result)))["sweeps"][0]["batches"][0]["default_latency_us"] == 14.0


def _shape_key(job: units.JobRecord) -> str:
    from tuner.jobs.kernel_sweep import stored_specs

    return stored_specs(job)[0].shape.key


class _Echo:
    """A CPU job kind for the dispatch test: each unit's result is its payload, doubled."""

    name, title, request_type = "echo", "Echo", dict

    def needs_gpu(self, job):  # type: ignore[no-untyped-def]
        return False

    def claims(self, context):  # type: ignore[no-untyped-def]
        return ["echo"] if context.device_index is None else []

    def submit(self, database_url, request):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def handler(self, job, context):  # type: ignore[no-untyped-def]
        class Doubler:
            def run(self, unit):  # type: ignore[no-untyped-def]
                context.say(f"{job.kind}/{unit.key}")
                return {"n": 2 * unit.payload["n"]}

            def close(self):  # type: ignore[no-untyped-def]
                pass

        return Doubler()

    def result(self, database_url, job):  # type: ignore[no-untyped-def]
        return None


def test_the_worker_dispatches_each_unit_to_its_kinds_handler(db, db_url):  # type: ignore[no-untyped-def]
    kinds.register(_Echo())
    echo = units.create_job(db, "echo", {"x": 1}, [("a", {"n": 1}), ("b", {"n": 5})])
    sweep = kinds.get_kind("kernel_sweep").submit(db_url, _request(batch_sizes="1"))
    said: list[str] = []
    context = kinds.WorkerContext(db_url, print_fn=said.append)
    assert sorted(kinds.claimed_kinds(context)) == ["echo", "export", "flag_search:sim"]  # no kernel sweeps
    work(db_url, kinds.handler_for(context), kinds=kinds.claimed_kinds(context))
    assert said == ["echo/a", "echo/b"]
    assert [u.result for u in units.list_units(db, echo.id)] == [{"n": 2}, {"n": 10}]
    assert units.job_progress(db, sweep.id).queued == 1  # not this CPU worker's kind
    # handed a kernel-sweep job anyway (a worker told to take every kind), the unit fails with what to do
    summary = work(db_url, kinds.handler_for(context), job_ids=[sweep.id])
    assert summary.failed and "tuner worker --gpu" in units.list_units(db, sweep.id)[0].error


class _StandInSession:
    """Stands in for a SweepSession on a GPU: opening takes `open_s`, each batch `batch_s` of which `wait_s` is
    blocked on compiles; records the compile pool it was given."""

    open_s, batch_s, wait_s = 0.0, 0.0, 0.0
    pools_given: ClassVar[list[object]] = []

    def __init__(self, *args, pool=None, **kwargs):  # type: ignore[no-untyped-def]
        import time
        import types

        type(self).pools_given.append(pool)
        time.sleep(self.open_s)  # engine kernel, weights, compile pool
        self.start_s = {"engine_kernel": self.open_s}
        self.pool = types.SimpleNamespace(wait_s=0.0)

    def run_batch(self, batch_size, refine=False):  # type: ignore[no-untyped-def]
        import time
        import types

        time.sleep(self.batch_s)
        self.pool.wait_s += self.wait_s
        return types.SimpleNamespace(best=None, best_latency_us=10.0, engine_latency_us=11.0,
                                     default_latency_us=12.0, kept_engine_choice=False, measured=3,
                                     gpu_seconds=0.04)

    def mark(self, status):  # type: ignore[no-untyped-def]
        pass

    def close(self):  # type: ignore[no-untyped-def]
        pass


def _stand_in_handler(monkeypatch, session: type, sweeps: int, **context):  # type: ignore[no-untyped-def]
    """A SweepHandler without a stored job, whose sessions are `session`."""
    import tuner.search.kernel_sweep as ks
    from tuner.jobs.context import WorkerContext
    from tuner.jobs.kernel_sweep import SweepHandler

    monkeypatch.setattr(ks, "SweepSession", session)
    monkeypatch.setattr(ks, "batch_line", lambda r: "line")
    handler = SweepHandler.__new__(SweepHandler)
    handler.specs, handler.sessions = [object()] * sweeps, {}
    handler.context = WorkerContext("sqlite://", 0, **context)
    return handler


def test_a_sweep_units_result_says_where_its_time_went(monkeypatch):  # type: ignore[no-untyped-def]
    """Each unit's stored result carries its wall time split into opening the sweep session (first unit of a sweep
    only), waiting on compiles and GPU timing, so a slow or badly scaling sweep is explained from the database."""
    import types

    class Session(_StandInSession):
        open_s, batch_s, wait_s = 0.2, 0.1, 0.05

    handler = _stand_in_handler(monkeypatch, Session, 1)
    first = handler.run(types.SimpleNamespace(payload={"sweep": 0, "batch_size": 64}))  # type: ignore[arg-type]
    second = handler.run(types.SimpleNamespace(payload={"sweep": 0, "batch_size": 1, "phase": "refine"}))  # type: ignore[arg-type]
    t1, t2 = first["timing_s"], second["timing_s"]
    assert t1["session_start"] >= 0.2 and t1["unit"] >= 0.3 and t1["compile_wait"] == 0.05 and t1["gpu"] == 0.04
    assert t1["session_engine_kernel"] == 0.2  # the opening unit also says where its start-up went
    assert t2["session_start"] == 0.0 and 0.1 <= t2["unit"] < t1["unit"] and t2["compile_wait"] == 0.05  # per unit
    assert "session_engine_kernel" not in t2


def test_a_sweep_uses_the_compile_pool_its_worker_started_before_the_job(monkeypatch):  # type: ignore[no-untyped-def]
    """A GPU worker starts its compile processes before its job exists; every sweep session of the job compiles
    in that pool instead of starting (and later stopping) its own."""
    import types

    class Session(_StandInSession):
        pools_given: ClassVar[list[object]] = []

    pool = object()
    handler = _stand_in_handler(monkeypatch, Session, 2, compile_pool=pool)
    for sweep in (0, 1):  # two sweeps of one job (e.g. two GEMM shapes): one pool for both
        handler.run(types.SimpleNamespace(payload={"sweep": sweep, "batch_size": 8}))  # type: ignore[arg-type]
    assert Session.pools_given == [pool, pool]
