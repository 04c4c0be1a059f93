"""`tuner kernel-sweep`: search fused-MoE Triton configs for a model on the local GPU(s), then export."""

from __future__ import annotations

import argparse

from tuner.errors import NoGpuError, TunerError
from tuner.kernels.base import STANDARD_BATCH_SIZES
from tuner.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "kernel-sweep",
        help="tune fused-MoE Triton configs for a model on this GPU and export engine config files",
        description="Search BLOCK_SIZE_M/N/K, GROUP_SIZE_M, num_warps, num_stages of the fused-MoE kernel for "
        "every batch size; every config is checked against a float32 reference before it is timed; every "
        "measurement is stored as it arrives and a re-run resumes.",
    )
    p.add_argument("--model", required=True, help="catalog name (see `tuner models list`), a config.json, or a folder holding one")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size (default 1)")
    p.add_argument("--ep", type=int, default=1, help="expert-parallel size (default 1)")
    fusion = p.add_mutually_exclusive_group()
    fusion.add_argument("--shared-experts-fusion", dest="fusion", action="store_true", default=None,
                        help="fuse the shared expert into the MoE (E+1, top-k+1); default: what SGLang does")
    fusion.add_argument("--no-shared-experts-fusion", dest="fusion", action="store_false",
                        help="as SGLang's --disable-shared-experts-fusion")
    p.add_argument("--kernel", default="fused-moe", choices=["fused-moe", "fp8-gemm", "all"],
                   help="which kernel: the fused MoE (default), the dense layers' block-FP8 GEMM (one sweep per "
                   "(N, K) of the model, or --shapes), or both")
    p.add_argument("--shapes", help="with --kernel fp8-gemm: GEMM shapes as N,K pairs, e.g. '576,7168 4096,512' "
                   "(default: every block-FP8 dense layer of the model at --tp)")
    p.add_argument("--batch-sizes", help="comma-separated M values (default: the 18 standard ones)")
    p.add_argument("--exhaustive", action="store_true", help="measure the whole config space of SGLang's tuner (slow; for comparison)")
    p.add_argument("--budget", type=int, default=32,
                   help="up-GEMM configs measured per batch size by the adaptive search (default 32)")
    p.add_argument("--down-budget", type=int, default=16,
                   help="down-GEMM configs per batch size, and as many up configs given the best down, where the engine reads _down files (default 16)")
    p.add_argument("--kernel-source", default="auto", choices=["auto", "tuner", "sglang", "vllm"],
                   help="whose kernel to time: the engine's own when importable (auto; else ours, as a proxy "
                   "that the output flags), or ours")
    p.add_argument("--routing", help="a torch file with recorded top-k ids [T, k] to sample routing from")
    p.add_argument("--gpus", help="comma-separated GPU indices; one worker process per GPU (default: 0)")
    p.add_argument("--compile-workers", type=int, help="parallel compile processes (default: CPU cores - 1, at most 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export", metavar="DIR", help="after the sweep, export config files into DIR")
    p.add_argument("--format", default="sglang,vllm", help="export formats, comma-separated (default: sglang,vllm)")
    p.add_argument("--force", action="store_true", help="with --export: overwrite existing files")
    p.add_argument("--interpret", action="store_true",
                   help="no GPU: correctness-only pass of our kernel at tiny shapes under TRITON_INTERPRET=1")
    p.set_defaults(func=run)


def parse_batch_sizes(text: str | None) -> tuple[int, ...]:
    if not text:
        return STANDARD_BATCH_SIZES
    try:
        sizes = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise TunerError(f"--batch-sizes must be comma-separated positive integers, got {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise TunerError(f"--batch-sizes must be comma-separated positive integers, got {text!r}")
    return sizes


def run(args: argparse.Namespace, settings: Settings) -> int:
    from tuner.models.config import load_model_config
    from tuner.models.shapes import derive_moe_shape

    cfg = load_model_config(args.model)
    batch_sizes = parse_batch_sizes(args.batch_sizes)
    moe = args.kernel in ("fused-moe", "all")
    shape = derive_moe_shape(cfg, tp=args.tp, ep=args.ep, shared_experts_fusion=args.fusion,
                             device=_local_fusion_device()) if moe else None
    if args.routing and shape is not None:  # a bad file is reported before any GPU work or database row
        from tuner.kernels.fused_moe.problem import load_routing_trace

        load_routing_trace(args.routing, shape)
    gemm_shapes = _gemm_shapes(args, cfg)
    if args.interpret:
        if shape is None:
            raise TunerError("--interpret checks the fused-MoE kernel; the GEMM's interpreter check is in the tests")
        from tuner.search.interpret_check import run_interpret_check

        return run_interpret_check(shape, print_fn=print)
    # imported only now: the kernels must be defined after --interpret has switched Triton to its interpreter
    from tuner.search.kernel_sweep import SweepSpec

    for flag, value in (("--budget", args.budget), ("--down-budget", args.down_budget)):
        if value < 1:
            raise TunerError(f"{flag} must be a positive number of configs, got {value}")
    gpus = _parse_gpus(args.gpus)
    common = {"model": cfg.name, "tp": args.tp, "ep": args.ep, "batch_sizes": batch_sizes,
              "strategy": "exhaustive" if args.exhaustive else "adaptive", "budget": args.budget,
              "down_budget": args.down_budget, "seed": args.seed,
              "kernel_source": None if args.kernel_source == "auto" else args.kernel_source}
    specs = []
    if shape is not None:
        print(f"{cfg.name} TP{args.tp} EP{args.ep}: {shape.key}")
        specs.append(SweepSpec(shared_experts_fusion=shape.fused_shared_experts > 0, shape=shape,
                               routing_path=args.routing, **common))  # type: ignore[arg-type]
    for g in gemm_shapes:
        print(f"{cfg.name} TP{args.tp}: FP8 GEMM {g.key} ({', '.join(g.layers)})")
        specs.append(SweepSpec(shared_experts_fusion=False, shape=g, kernel="fp8_gemm", **common))  # type: ignore[arg-type]
    from tuner.jobs.kernel_sweep import plan_sweep, sweep_results
    from tuner.jobs.worker import gpu_work, run_sweeps_on_gpus

    url = settings.resolved_database_url
    jobs = [plan_sweep(url, spec) for spec in specs]
    print(f"job(s) {', '.join(f'#{j.id}' for j in jobs)}: {len(batch_sizes)} batch sizes each on {len(gpus)} GPU(s); "
          "re-running this command resumes them")
    if len(gpus) == 1:
        gpu_work(url, gpus[0], job_ids=[j.id for j in jobs], compile_workers=args.compile_workers, print_fn=print)
    else:
        run_sweeps_on_gpus(url, [j.id for j in jobs], gpus, args.compile_workers)
    for spec in specs:
        for line in sweep_results(url, spec):
            print(("" if spec.kernel == "fused_moe" else f"FP8 GEMM {spec.shape.key}: ") + line)
    if args.export:
        from tuner.commands.export import export_latest, print_exported

        print_exported(export_latest(settings, model=cfg.name, tp=args.tp, ep=args.ep, out_dir=args.export,
                                     formats=args.format, force=args.force,
                                     shape_keys=[s.shape.key for s in specs]))
    return 0


def _gemm_shapes(args: argparse.Namespace, cfg) -> list:  # type: ignore[no-untyped-def]
    """The GEMM shapes to sweep: --shapes, else the model's block-FP8 dense layers; none for --kernel fused-moe.
    With --kernel all, a model that is not block-FP8 simply has none (said once)."""
    from tuner.errors import ModelConfigError
    from tuner.models.gemm_shapes import derive_gemm_shapes, parse_gemm_shapes, weight_block_shape

    if args.kernel == "fused-moe":
        if args.shapes:
            raise TunerError("--shapes is for --kernel fp8-gemm or all")
        return []
    if args.shapes:
        return parse_gemm_shapes(args.shapes, weight_block_shape(cfg) or (128, 128))
    try:
        return derive_gemm_shapes(cfg, tp=args.tp)
    except ModelConfigError as exc:
        if args.kernel == "all" and "not a block-FP8" in str(exc):
            print(f"note: {exc}")
            return []
        raise


def _local_fusion_device():  # type: ignore[no-untyped-def]
    """The local GPU for SGLang's shared-expert fusion rule (which depends on it); None (sm90) without one."""
    import torch

    from tuner.models.fusion import FusionDevice

    if not torch.cuda.is_available():
        return None
    return FusionDevice.from_device_name(torch.cuda.get_device_name(0))


def _parse_gpus(text: str | None) -> list[int]:
    import torch

    if not torch.cuda.is_available():
        raise NoGpuError(
            "no CUDA GPU is visible: kernel-sweep times kernels on an NVIDIA GPU. On this machine use "
            "`tuner kernel-sweep --model ... --interpret` for a correctness-only pass on the CPU."
        )
    count = torch.cuda.device_count()
    if not text:
        return [0]
    try:
        gpus = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise TunerError(f"--gpus must be comma-separated GPU indices, got {text!r}") from None
    bad = [g for g in gpus if not 0 <= g < count]
    if bad or not gpus:
        raise TunerError(f"--gpus {text}: this machine has GPUs 0..{count - 1}")
    return gpus

