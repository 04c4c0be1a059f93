"""`tuner models list` and `tuner models shape`: the built-in catalog, and the kernel shape a model has at a TP/EP.

Only parses flags and prints; the work is in tuner.models and tuner.export.naming.
"""

from __future__ import annotations

import argparse
import json
from importlib import metadata

from tuner.errors import TunerError
from tuner.export.naming import (
    describe_device_token,
    sglang_moe_file_name,
    triton_dir_name,
    vllm_moe_file_name,
)
from tuner.export.sglang import CONFIG_FOLDER
from tuner.export.vllm import VLLM_FOLDER
from tuner.kernels.base import MoeShape
from tuner.models.config import list_catalog, load_model_config
from tuner.models.fusion import SGLANG_VERSION, FusionDevice
from tuner.models.shapes import derive_moe_shape, dtype_label, shared_experts_fusion_decision
from tuner.settings import Settings

DEFAULT_DEVICE_NAME = "NVIDIA H100 80GB HBM3"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models", help="list built-in models; show a model's fused-MoE kernel shape"
    )
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")
    sub.required = True

    list_parser = sub.add_parser("list", help="the built-in model catalog (shapes at TP1)")
    list_parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    list_parser.set_defaults(func=run)

    shape = sub.add_parser(
        "shape",
        help="the fused-MoE shape (E, N, K, top-k, quant) and config file names at a given TP/EP",
        description="MODEL is a catalog name (see `tuner models list`), a config.json, or a folder holding one.",
    )
    shape.add_argument("model", metavar="MODEL")
    shape.add_argument("--tp", type=int, default=1, help="tensor-parallel size (default 1)")
    shape.add_argument("--ep", type=int, default=1, help="expert-parallel size, dividing --tp (default 1)")
    shape.add_argument(
        "--shared-experts-fusion",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fold the shared expert into the MoE kernel (E+1, top-k+1); default: what SGLang does for the model",
    )
    shape.add_argument(
        "--device-name",
        default=DEFAULT_DEVICE_NAME,
        help=f"torch.cuda.get_device_name() of the target GPU (default {DEFAULT_DEVICE_NAME!r})",
    )
    shape.add_argument(
        "--triton-version",
        default=None,
        help="Triton version for the SGLang folder (default: the installed one)",
    )
    shape.add_argument("--json", action="store_true", help="print JSON instead of text")
    shape.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.models_command == "list":
        return _run_list(args)
    return _run_shape(args)


def _installed_triton_version() -> str | None:
    try:
        return metadata.version("triton")
    except metadata.PackageNotFoundError:
        return None


def _top_k_text(shape: MoeShape) -> str:
    return f"{shape.top_k}+{shape.fused_shared_experts}" if shape.fused_shared_experts else str(shape.top_k)


def _run_list(args: argparse.Namespace) -> int:
    rows: list[dict[str, object]] = []
    for entry in list_catalog():
        try:
            shape = derive_moe_shape(load_model_config(entry.name))
        except TunerError as exc:  # a broken catalog entry should not hide the others
            rows.append({"name": entry.name, "error": str(exc), "origin": entry.origin})
            continue
        rows.append(
            {
                "name": entry.name,
                "E": shape.num_experts,
                "N_tp1": shape.intermediate_size,
                "K": shape.hidden_size,
                "top_k": _top_k_text(shape),
                "quant": dtype_label(shape),
                "origin": entry.origin,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("NAME", "E", "N@TP1", "K", "TOP-K", "QUANT", "ORIGIN")
    table: list[tuple[str, ...]] = [header]
    for row in rows:
        if "error" in row:
            table.append((str(row["name"]), "?", "?", "?", "?", f"error: {row['error']}", str(row["origin"])))
        else:
            table.append(tuple(str(row[k]) for k in ("name", "E", "N_tp1", "K", "top_k", "quant", "origin")))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip())
    print("\nE counts the shared expert SGLang fuses by default (top-k shows it as +1); N is per GPU at TP1.")
    return 0


def _run_shape(args: argparse.Namespace) -> int:
    cfg = load_model_config(args.model)
    fusion_device = FusionDevice.from_device_name(args.device_name)
    shape = derive_moe_shape(
        cfg, tp=args.tp, ep=args.ep, shared_experts_fusion=args.shared_experts_fusion, device=fusion_device
    )
    notes = [describe_device_token(args.device_name).note]
    if args.shared_experts_fusion is None and not shape.fused_shared_experts:
        reason = shared_experts_fusion_decision(cfg, args.ep, fusion_device).reason
        if "no shared expert" not in reason:
            notes.append(f"shared expert not fused: {reason} (SGLang {SGLANG_VERSION})")
    triton_version = args.triton_version or _installed_triton_version()
    sglang_name = sglang_moe_file_name(shape, args.device_name)
    sglang_path = (
        f"{CONFIG_FOLDER}/{triton_dir_name(triton_version)}/{sglang_name}" if triton_version else None
    )
    vllm_name = vllm_moe_file_name(shape, args.device_name)
    result = {
        "model": cfg.name,
        "source": cfg.source,
        "tp": args.tp,
        "ep": args.ep,
        "E": shape.num_experts,
        "routed_experts_per_gpu": shape.routed_experts,
        "fused_shared_experts": shape.fused_shared_experts,
        "N": shape.intermediate_size,
        "K": shape.hidden_size,
        "top_k": shape.top_k,
        "runtime_top_k": shape.runtime_top_k,
        "quant": dtype_label(shape),
        "block_shape": list(shape.block_shape) if shape.block_shape else None,
        "device_name": args.device_name,
        "sglang_file": sglang_name,
        "sglang_path": sglang_path,
        "vllm_file": vllm_name,
        "vllm_path": f"{VLLM_FOLDER}/{vllm_name}",
        "notes": [note for note in notes if note],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    fused = " (incl. 1 fused shared expert)" if shape.fused_shared_experts else ""
    print(f"model        {cfg.name}  [{cfg.source}]")
    print(f"parallelism  tp={args.tp} ep={args.ep}")
    print(f"E            {shape.num_experts}{fused}")
    print(f"N            {shape.intermediate_size}")
    print(f"K            {shape.hidden_size}")
    print(f"top-k        {_top_k_text(shape)}")
    print(f"quant        {dtype_label(shape)}")
    print(f"sglang file  {sglang_path or sglang_name}")
    print(f"vllm file    {VLLM_FOLDER}/{vllm_name}")
    for note in result["notes"]:
        print(f"note: {note}")
    return 0
