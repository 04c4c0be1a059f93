"""`tuner suffix-replay`: tune suffix-decoding parameters on the CPU by replaying a trace (or a synthetic
agentic one) through a SuffixDecoding speculator, ranking parameter sets by estimated decode speed-up, and
handing the best to a live flag search as SGLang SUFFIX flag sets.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tuner.errors import TunerError
from tuner.settings import Settings


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("suffix-replay", help="tune suffix-decoding parameters by replaying a trace on the CPU",
                       description="Replay a trace through a SuffixDecoding speculator for a grid of "
                       "parameter sets, rank them by estimated decode speed-up, and hand the best to "
                       "flag-search as SGLang SUFFIX flag sets.")
    t = p.add_argument_group("trace")
    t.add_argument("trace", nargs="?", help="trace file: JSONL (tokens, text, OpenAI messages) or ShareGPT JSON")
    t.add_argument("--format", default="auto", choices=("auto", "tokens", "text", "openai", "sharegpt"),
                   help="trace format (default: detected from the first record)")
    t.add_argument("--tokenizer", metavar="FOLDER", help="local folder with tokenizer.json for text traces "
                   "(default: a word-level stand-in)")
    t.add_argument("--synthetic", metavar="LEVEL", help="replay a synthetic agentic trace instead: low, "
                   "medium, high or a repetition share in [0, 1]")
    t.add_argument("--sessions", type=int, default=20, help="synthetic sessions (default 20)")
    t.add_argument("--turns", type=int, default=8, help="synthetic turns per session (default 8)")
    t.add_argument("--response-tokens", type=int, default=200, help="synthetic response length (default 200)")
    t.add_argument("--seed", type=int, default=0, help="synthetic trace seed (default 0)")
    t.add_argument("--write-trace", metavar="FILE", help="also write the trace replayed (tokens JSONL)")
    t.add_argument("--max-requests", type=int, help="replay only the first N requests")
    t.add_argument("--max-cached-requests", type=int, default=10000,
                   help="responses in the global tree, oldest evicted first (default 10000, as the engine)")
    g = p.add_argument_group("grid (comma-separated values; the engine defaults are always replayed too)")
    g.add_argument("--depths", type=_ints, default=(16, 32, 64), help="cache max depth (default 16,32,64)")
    g.add_argument("--factors", type=_floats, default=(0.5, 1.0, 2.0), help="max spec factor (default 0.5,1,2)")
    g.add_argument("--offsets", type=_floats, default=(0.0, 2.0, 4.0, 8.0), help="max spec offset "
                   "(default 0,2,4,8)")
    g.add_argument("--min-probs", type=_floats, default=(0.05, 0.1, 0.2, 0.4), help="min token prob "
                   "(default 0.05,0.1,0.2,0.4)")
    g.add_argument("--draft-tokens", type=_ints, default=(4, 8, 12, 16), help="num draft tokens "
                   "(default 4,8,12,16)")
    c = p.add_argument_group("verify-cost model")
    c.add_argument("--decode-step-ms", type=float, default=20.0, help="plain decode step (default 20 ms)")
    c.add_argument("--verify-token-ms", type=float, default=0.8,
                   help="added per extra verified token per sequence (default 0.8 ms)")
    c.add_argument("--draft-ms", type=float, default=0.8, help="CPU drafting per step (default 0.8 ms)")
    o = p.add_argument_group("output")
    o.add_argument("--top", type=int, default=10, help="rows of the table (default 10)")
    o.add_argument("--json", metavar="FILE", help="write every ranked set with its figures as JSON")
    o.add_argument("--handoff", metavar="FILE", help="write the best sets as SGLang SUFFIX flag sets (YAML)")
    o.add_argument("--handoff-top", type=int, default=3, help="sets in the hand-off (default 3)")
    o.add_argument("--handoff-space", metavar="FILE",
                   help="write a flag-search space (YAML) narrowed to the hand-off sets' values")
    p.set_defaults(func=run)


def _requests(args: argparse.Namespace) -> tuple[list, str]:
    from tuner.suffix.synthetic import REPETITION_LEVELS, synthetic_agentic_trace
    from tuner.suffix_decoding.traces import load_tokenizer, read_trace

    if (args.trace is None) == (args.synthetic is None):
        raise TunerError("give a trace file or --synthetic LEVEL (one of them)")
    if args.synthetic is not None:
        level = REPETITION_LEVELS.get(args.synthetic)
        if level is None:
            try:
                level = float(args.synthetic)
            except ValueError:
                level = -1.0
        if not 0.0 <= level <= 1.0:
            raise TunerError(f"--synthetic {args.synthetic!r}: use low, medium, high or a number in [0, 1]")
        for flag, value in (("--sessions", args.sessions), ("--turns", args.turns),
                            ("--response-tokens", args.response_tokens)):
            if value < 1:
                raise TunerError(f"{flag} must be >= 1")
        requests = synthetic_agentic_trace(sessions=args.sessions, turns_per_session=args.turns,
                                           repetition=level, response_tokens=args.response_tokens,
                                           seed=args.seed)
        name = f"synthetic repetition={level:g} seed={args.seed}"
    else:
        tokenize = load_tokenizer(args.tokenizer) if args.tokenizer else None
        requests = read_trace(args.trace, args.format, tokenize)
        name = str(args.trace)
    if args.max_requests is not None:
        requests = requests[:max(args.max_requests, 0)]
    return requests, name


def run(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from tuner.paths import writable_file
    from tuner.suffix.cost import VerifyCostModel
    from tuner.suffix.handoff import handoff_document, narrowed_space, write_yaml
    from tuner.suffix.sweep import SweepGrid, sweep
    from tuner.suffix_decoding.traces import write_token_trace

    outputs = {flag: writable_file(path, flag) for flag, path in (
        ("--json", args.json), ("--handoff", args.handoff), ("--handoff-space", args.handoff_space),
        ("--write-trace", args.write_trace)) if path}
    try:
        cost = VerifyCostModel(args.decode_step_ms / 1e3, args.verify_token_ms / 1e3, args.draft_ms / 1e3)
        grid = SweepGrid(args.depths, args.factors, args.offsets, args.min_probs, args.draft_tokens)
        grid.param_sets()
    except ValueError as exc:
        raise TunerError(f"bad grid or cost model: {exc}") from None
    requests, name = _requests(args)
    if not requests:
        raise TunerError("no requests to replay")
    if "--write-trace" in outputs:
        write_token_trace(outputs["--write-trace"], requests)
    console = Console(stderr=True)
    total_tokens = sum(int(r.prompt_token_ids.size + r.response_token_ids.size) for r in requests)
    with Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TextColumn("requests"),
                  TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task("replay", total=len(requests))
        ranked = sweep(requests, grid, cost, max_cached_requests=args.max_cached_requests,
                       on_request=lambda _: progress.advance(task))
    table = Table(title=f"suffix-replay: {name}: {len(requests)} requests, {total_tokens} tokens, "
                  f"{len(ranked)} parameter sets")
    for column in ("rank", "depth", "factor", "offset", "min prob", "draft tokens", "acceptance",
                   "accepted/step", "tokens/step", "est. speed-up"):
        table.add_column(column, justify="right")
    defaults = next(r for r in ranked if r.to_json()["engine_defaults"])
    shown = ranked[:max(args.top, 0)] + ([defaults] if defaults.rank > args.top else [])
    for r in shown:
        p, f = r.params, r.figures
        table.add_row(str(r.rank) + (" (defaults)" if r is defaults else ""), str(p.cache_max_depth),
                      f"{p.max_spec_factor:g}", f"{p.max_spec_offset:g}", f"{p.min_token_prob:g}",
                      str(p.num_draft_tokens), f"{f.acceptance_rate:.1%}", f"{f.accepted_per_step:.2f}",
                      f"{f.tokens_per_step:.2f}", f"{r.speedup:.3f}x")
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)
    out.print(table)
    if "--json" in outputs:
        outputs["--json"].write_text(json.dumps({"trace": name, "requests": len(requests),
                                                 "tokens": total_tokens, "ranked": [r.to_json() for r in ranked]},
                                                indent=1))
    if "--handoff" in outputs:
        write_yaml(outputs["--handoff"], handoff_document(ranked, args.handoff_top, cost, name,
                                                          args.max_cached_requests))
        print(f"wrote {args.handoff_top} SUFFIX flag set(s) to {outputs['--handoff']}")
    if "--handoff-space" in outputs:
        write_yaml(outputs["--handoff-space"], narrowed_space(ranked, args.handoff_top,
                                                              args.max_cached_requests))
        print(f"wrote a narrowed flag-search space to {outputs['--handoff-space']} "
              f"(tuner flag-search --space {Path(outputs['--handoff-space'])})")
    return 0
