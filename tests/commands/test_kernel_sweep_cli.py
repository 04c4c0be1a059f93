"""`tuner kernel-sweep` and `tuner export` as a user meets them on a machine without a GPU."""

import json

import pytest

from tuner.cli import main
from tuner.kernels.base import KernelConfig
from tuner.models.config import load_model_config
from tuner.models.shapes import derive_moe_shape
from tuner.store.db import open_database
from tuner.store.kernels import BestConfig, get_or_create_sweep, save_best_configs


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TUNER_DATABASE_URL", raising=False)
    return tmp_path / "data"


def test_no_gpu_is_a_clear_error_pointing_at_interpret(data_dir, capsys):
    assert main(["kernel-sweep", "--model", "GLM-4.7-FP8", "--tp", "8"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "--interpret" in err


def test_several_gpus_without_any_is_the_same_one_line_error_and_starts_no_worker(data_dir, capsys, monkeypatch):
    # the GPU workers start before the job is planned, but only on a host with NVIDIA device nodes
    from tuner.jobs import worker

    started = []
    monkeypatch.setattr(worker, "GpuWorkers", lambda *a, **k: started.append(a))
    assert main(["kernel-sweep", "--model", "GLM-4.7-FP8", "--tp", "8", "--gpus", "0,1"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert started == []
    assert main(["kernel-sweep", "--model", "GLM-4.7-FP8", "--tp", "8", "--gpus", "0,x"]) == 2
    assert "--gpus must be comma-separated GPU indices" in capsys.readouterr().err


def test_interpret_pass_checks_the_models_dtype_on_cpu(data_dir, capsys):
    assert main(["kernel-sweep", "--model", "DeepSeek-V3", "--tp", "8", "--interpret"]) == 0
    out = capsys.readouterr().out
    assert "fp8_w8a8_block" in out and "all configs correct" in out


def test_malformed_model_config_names_the_missing_field(data_dir, tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
                               "hidden_size": 7168, "num_experts_per_tok": 8, "n_routed_experts": 256}))
    assert main(["kernel-sweep", "--model", str(cfg), "--tp", "8", "--interpret"]) == 2
    assert "moe_intermediate_size" in capsys.readouterr().err


def test_bad_batch_sizes_are_rejected(data_dir, capsys):
    assert main(["kernel-sweep", "--model", "GLM-4.7-FP8", "--batch-sizes", "1,x", "--interpret"]) == 2
    assert "--batch-sizes" in capsys.readouterr().err


def _store_sweep(data_dir, device="NVIDIA H100 80GB HBM3"):
    shape = derive_moe_shape(load_model_config("GLM-4.7-FP8"), tp=8)
    db = open_database(f"sqlite:///{data_dir / 'tuner.db'}")
    sid = get_or_create_sweep(
        db, model="zai-org/GLM-4.7-FP8", tp=8, ep=1, shared_experts_fusion=True, dtype=shape.quant.value,
        kernel="fused_moe", kernel_source="tuner", device_name=device, triton_version="3.6.0",
        torch_version="2.11", bench_method="m", shape=shape, shape_key=shape.key, batch_sizes=[1, 64, 4096],
        strategy="adaptive")
    rows = []
    for m, c in [(64, KernelConfig(16, 128, 128, 1, 4, 4)), (1, KernelConfig(16, 64, 128, 1, 4, 3)),
                 (4096, KernelConfig(128, 128, 128, 16, 8, 3))]:
        rows.append(BestConfig(m, c.to_json_dict(), c.key, 10.0, 12.0))
    save_best_configs(db, sid, rows)
    db.dispose()


def test_export_writes_engine_files_from_the_database(data_dir, tmp_path, capsys):
    data_dir.mkdir(parents=True)
    _store_sweep(data_dir)
    out = tmp_path / "out"
    assert main(["export", "--model", "GLM-4.7-FP8", "--tp", "8", "--out", str(out)]) == 0
    sglang = out / "configs" / "triton_3_6_0" / (
        "E=161,N=192,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,per_channel_quant=True.json")
    data = json.loads(sglang.read_text())
    assert list(data) == ["1", "64", "4096"]
    assert data["64"] == KernelConfig(16, 128, 128, 1, 4, 4).to_json_dict()
    vllm_files = list((out / "vllm").glob("*.json"))
    assert [p.name for p in vllm_files] == ["E=160,N=192,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8.json"]
    assert "SGLANG_MOE_CONFIG_DIR" in capsys.readouterr().out
    # a second export refuses to overwrite, --force overwrites
    assert main(["export", "--model", "GLM-4.7-FP8", "--tp", "8", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["export", "--model", "GLM-4.7-FP8", "--tp", "8", "--out", str(out), "--force"]) == 0


def test_export_writes_down_twins_and_warns_about_a_proxy_kernel(data_dir, tmp_path, capsys):
    shape = derive_moe_shape(load_model_config("DeepSeek-V3"), tp=8)
    db = open_database(f"sqlite:///{data_dir / 'tuner.db'}")
    sid = get_or_create_sweep(
        db, model="deepseek-ai/DeepSeek-V3", tp=8, ep=1, shared_experts_fusion=True, dtype=shape.quant.value,
        kernel="fused_moe", kernel_source="tuner", device_name="NVIDIA H200", triton_version="3.6.0",
        torch_version="2.11", bench_method="m", shape=shape, shape_key=shape.key, batch_sizes=[1, 256],
        strategy="adaptive", notes={"proxy_for": "sglang"})
    up, down, single = KernelConfig(16, 64, 128, 1, 4, 5), KernelConfig(16, 128, 128, 16, 4, 2), KernelConfig(64, 128, 128, 32, 4, 3)
    save_best_configs(db, sid, [
        BestConfig(1, up.to_json_dict(), "k", 30.0, 50.0, down_config=down.to_json_dict(),
                   single_config=single.to_json_dict()),
        BestConfig(256, single.to_json_dict(), "k2", 300.0, 500.0, single_config=single.to_json_dict()),
    ])
    db.dispose()
    out = tmp_path / "out"
    assert main(["export", "--model", "DeepSeek-V3", "--tp", "8", "--out", str(out)]) == 0
    name = "E=257,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128, 128]"
    folder = out / "configs" / "triton_3_6_0"
    assert json.loads((folder / f"{name}.json").read_text()) == {"1": up.to_json_dict(), "256": single.to_json_dict()}
    # M=256 has no down config of its own: the twin repeats the up config there, which is what SGLang would run
    assert json.loads((folder / f"{name}_down.json").read_text()) == {"1": down.to_json_dict(),
                                                                       "256": single.to_json_dict()}
    (vllm,) = (out / "vllm").glob("*.json")
    assert json.loads(vllm.read_text())["1"] == single.to_json_dict()
    printed = capsys.readouterr().out
    assert "tuner's own kernel as a proxy for sglang's" in printed


def test_export_without_a_sweep_says_what_to_run(data_dir, tmp_path, capsys):
    assert main(["export", "--model", "GLM-4.7-FP8", "--tp", "8", "--out", str(tmp_path / "o")]) == 2
    assert "tuner kernel-sweep" in capsys.readouterr().err


def test_routing_file_problems_are_reported_before_any_work(data_dir, tmp_path, capsys):
    import torch

    base = ["kernel-sweep", "--model", "GLM-4.7-FP8", "--tp", "8", "--interpret", "--routing"]
    assert main([*base, str(tmp_path / "missing.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_text("not a tensor")
    assert main([*base, str(tmp_path / "junk.pt")]) == 2
    assert "torch.save" in capsys.readouterr().err
    torch.save(torch.full((4, 8), 160), tmp_path / "fused.pt")  # 160 is the fused shared expert, not routed
    assert main([*base, str(tmp_path / "fused.pt")]) == 2
    assert "0..159" in capsys.readouterr().err
    torch.save(torch.zeros((4, 3), dtype=torch.int64), tmp_path / "narrow.pt")
    assert main([*base, str(tmp_path / "narrow.pt")]) == 2
    assert "routes to 8" in capsys.readouterr().err


def test_a_valid_routing_file_is_sampled_as_recorded(tmp_path):
    import torch

    from tuner.kernels.fused_moe.problem import load_routing_trace

    shape = derive_moe_shape(load_model_config("GLM-4.7-FP8"), tp=8)
    recorded = torch.stack([torch.randperm(160)[:9] for _ in range(32)])  # k=9 recorded, model routes to 8
    torch.save(recorded, tmp_path / "ids.pt")
    trace = load_routing_trace(str(tmp_path / "ids.pt"), shape)
    sample = trace.sample(100, torch.Generator().manual_seed(0))
    assert sample.shape == (100, 8) and sample.dtype == torch.int32
    rows = {tuple(r) for r in recorded[:, :8].tolist()}
    assert all(tuple(r) in rows for r in sample.tolist())


def test_gemm_sweeps_export_sglang_files_with_sm90_keys_and_plain_vllm_files(data_dir, tmp_path, capsys, monkeypatch):
    import sys
    import types

    from tuner.kernels.base import GemmShape
    from tuner.kernels.family import get_family

    shape = GemmShape(576, 7168, (128, 128), ("kv_a_proj_with_mqa",))
    db = open_database(f"sqlite:///{data_dir / 'tuner.db'}")
    sid = get_or_create_sweep(
        db, model="deepseek-ai/DeepSeek-V3", tp=8, ep=1, shared_experts_fusion=False, dtype="fp8_w8a8_block",
        kernel="fp8_gemm", kernel_source="sglang", device_name="NVIDIA H200", triton_version="3.6.0",
        torch_version="2.11", bench_method="m", shape=get_family("fp8_gemm").shape_to_json(shape),
        shape_key=shape.key, batch_sizes=[1, 4096], strategy="adaptive")
    hopper = {**KernelConfig(16, 64, 128, 1, 4, 4).to_json_dict(), "SWAP_AB": True, "SPLIT_K": 4}
    plain = KernelConfig(64, 128, 128, 32, 4, 3).to_json_dict()
    save_best_configs(db, sid, [BestConfig(1, hopper, "k", 5.0, 8.0, single_config=plain),
                                BestConfig(4096, plain, "p", 50.0, 60.0, single_config=plain)])
    db.dispose()
    out = tmp_path / "out"
    # an installed SGLang's GEMM module, for --install to find its config folder
    package = tmp_path / "site" / "sglang" / "kernels" / "ops" / "gemm"
    (package / "configs").mkdir(parents=True)
    name = "N=576,K=7168,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128, 128].json"
    (package / "configs" / name).write_text("{}")
    module = types.ModuleType("sglang.kernels.ops.gemm.fp8_kernel")
    module.__file__ = str(package / "fp8_kernel.py")
    module.w8a8_block_fp8_matmul_triton = module.get_w8a8_block_fp8_configs = lambda *a: None
    monkeypatch.setitem(sys.modules, "sglang", types.ModuleType("sglang"))
    monkeypatch.setitem(sys.modules, "sglang.kernels.ops.gemm.fp8_kernel", module)
    assert main(["export", "--model", "DeepSeek-V3", "--tp", "8", "--out", str(out), "--install"]) == 0
    sglang = json.loads((out / "sglang-fp8-gemm" / name).read_text())
    assert sglang == {"1": hopper, "4096": plain}
    vllm = json.loads((out / "vllm" / name.replace("[128, 128]", "[128,128]")).read_text())
    assert vllm == {"1": plain, "4096": plain}  # vLLM's kernel knows no SWAP_AB / SPLIT_K
    printed = capsys.readouterr().out
    assert "(replaces the file there)" in printed and "installed" in printed
    assert json.loads((package / "configs" / name).read_text()) == sglang


def test_gemm_options_are_checked_before_any_work(data_dir, capsys):
    assert main(["kernel-sweep", "--model", "GLM-4.7-FP8", "--tp", "8", "--kernel", "fp8-gemm"]) == 2
    assert "not a block-FP8 checkpoint" in capsys.readouterr().err
    assert main(["kernel-sweep", "--model", "DeepSeek-V3", "--tp", "8", "--shapes", "576,7168"]) == 2
    assert "--shapes is for --kernel fp8-gemm" in capsys.readouterr().err
    assert main(["kernel-sweep", "--model", "DeepSeek-V3", "--tp", "8", "--kernel", "fp8-gemm", "--shapes", "5x7"]) == 2
    assert "N,K pairs" in capsys.readouterr().err


def test_the_interpreter_check_runs_as_a_user_starts_it(tmp_path):
    """A fresh process without TRITON_INTERPRET: the command itself must switch Triton to its interpreter
    before any kernel is defined (the test session sets the variable, which would hide that)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TUNER_DATA_DIR"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-m", "tuner", "kernel-sweep", "--model", "DeepSeek-V3", "--tp", "8",
                           "--interpret"], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.rstrip().endswith("all configs correct")


def test_a_sweep_whose_units_failed_says_which_and_exits_non_zero(tmp_path, capsys):
    from tuner.commands.kernel_sweep import _report_failed_units
    from tuner.jobs import units
    from tuner.store.db import open_database

    url = f"sqlite:///{tmp_path / 't.db'}"
    db = open_database(url)
    job = units.create_job(db, "kernel_sweep:Fake GPU", {"s": 1}, [("M=1", {}), ("M=2", {}), ("M=4", {})])
    for worker in ("w1", "w2"):
        claim = units.claim_unit(db, worker)
        units.fail(db, claim.unit.id, worker, "BrokenProcessPool: A child process terminated abruptly\ntraceback")
    claim = units.claim_unit(db, "w3")
    units.complete(db, claim.unit.id, "w3", {})
    db.dispose()
    assert _report_failed_units(url, job.id) == 1
    out = capsys.readouterr().out
    assert "2 unit(s) failed (M=1, M=2): BrokenProcessPool: A child process terminated abruptly\n" in out
    assert "re-run the same command to retry them" in out and "traceback" not in out
