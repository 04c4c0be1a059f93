"""`tuner export`: write tuned configs from the database as SGLang / vLLM config files."""

from __future__ import annotations

import argparse

from tuner.errors import TunerError
from tuner.paths import writable_folder
from tuner.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write tuned kernel configs as the JSON files SGLang and vLLM load",
                       description="Export the best config per batch size of the matching kernel sweeps.")
    p.add_argument("--model", help="model name as given to kernel-sweep (catalog name or path)")
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--ep", type=int, default=1)
    p.add_argument("--device-name", help='only sweeps on this GPU, e.g. "NVIDIA H100 80GB HBM3"')
    p.add_argument("--out", help="output folder (SGLang: SGLANG_MOE_CONFIG_DIR=<out>; vLLM: <out>/vllm)")
    p.add_argument("--format", default="sglang,vllm", help="comma-separated: sglang, vllm (default both)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--install", action="store_true",
                   help="also copy FP8 GEMM files into the installed SGLang's config folder (it reads them only "
                   "there), after listing the files it replaces")
    p.add_argument("--list", action="store_true", help="list the sweeps in the database and exit")
    p.add_argument("--flag-study", metavar="NAME",
                   help="instead of kernel configs: export a flag study's best config (SGLang --config YAML, "
                   "launch command, JSON, Pareto front) into --out")
    p.set_defaults(func=run)


def export_latest(settings: Settings, model: str, tp: int, ep: int, out_dir: str, formats: str, force: bool,
                  shape_keys: list[str] | None = None, device_name: str | None = None) -> list:
    from tuner.export.from_store import export_sweeps, find_sweeps
    from tuner.models.config import load_model_config
    from tuner.store.db import open_database

    name = load_model_config(model).name
    db = open_database(settings.resolved_database_url)
    try:
        sweeps = [s for s in find_sweeps(db, name, tp, ep, device_name=device_name)
                  if shape_keys is None or s.shape_key in shape_keys]
        return export_sweeps(db, sweeps, out_dir, _formats(formats), force)
    finally:
        db.dispose()


def print_exported(files: list) -> None:
    """`wrote PATH` per file, each note (a proxy kernel, a renamed device, ...) once, indented below."""
    shown: set[str] = set()
    for f in files:
        print(f"wrote {f.path}")
        for note in f.notes:
            if note not in shown:
                shown.add(note)
                print(f"  note: {note}")


def _install_gemm(paths: list) -> None:  # type: ignore[no-untyped-def]
    from tuner.export.gemm import install_sglang_gemm_files
    from tuner.kernels.fp8_gemm.backends import load_sglang_gemm

    if not paths:
        raise TunerError("--install copies SGLang FP8 GEMM files, and this export wrote none (no fp8_gemm sweep)")
    backend = load_sglang_gemm()
    folder = backend.config_folder() if backend is not None else None
    if folder is None:
        raise TunerError("--install: SGLang's block-FP8 GEMM is not importable here, so there is no folder to install "
                         "into; copy the files from --out into sglang/kernels/ops/gemm/configs/ yourself")
    for path in install_sglang_gemm_files(paths, folder, print):
        print(f"installed {path}")


def _formats(text: str) -> list[str]:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    if not formats:
        raise TunerError("--format needs at least one of: sglang, vllm")
    return formats


def run(args: argparse.Namespace, settings: Settings) -> int:
    from tuner.export.from_store import export_sweeps, find_sweeps, usage_hints
    from tuner.store.db import open_database
    from tuner.store.kernels import list_sweeps, load_best_configs

    db = open_database(settings.resolved_database_url)
    try:
        if args.list:
            for s in list_sweeps(db):
                n = len(load_best_configs(db, s.id))
                proxy = (s.notes or {}).get("proxy_for")
                source = f"{s.kernel_source} as a proxy for {proxy}" if proxy else s.kernel_source
                print(f"#{s.id} {s.model} TP{s.tp} EP{s.ep} {s.shape_key} on {s.device_name} triton {s.triton_version} "
                      f"[{source}, {s.strategy}] {s.status}: {n} batch sizes tuned")
            return 0
        if args.flag_study:
            if not args.out:
                raise TunerError("tuner export --flag-study NAME needs --out DIR")
            from tuner.search.flags.export import export_flag_study

            for path in export_flag_study(db, args.flag_study, args.out, force=args.force):
                print(f"wrote {path}")
            return 0
        if not args.model or not args.out:
            raise TunerError("tuner export needs --model and --out (or --list, or --flag-study NAME --out DIR)")
        from tuner.models.config import load_model_config

        name = load_model_config(args.model).name
        sweeps = find_sweeps(db, name, args.tp, args.ep, device_name=args.device_name)
        formats = _formats(args.format)
        writable_folder(args.out, "--out")
        exported = export_sweeps(db, sweeps, args.out, formats, args.force)
        print_exported(exported)
        if args.install:
            from tuner.export.gemm import SGLANG_GEMM_FOLDER

            _install_gemm([f.path for f in exported if f.path.parent.name == SGLANG_GEMM_FOLDER])
        for hint in usage_hints(args.out, formats):
            print(hint)
        return 0
    finally:
        db.dispose()
