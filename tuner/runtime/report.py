"""Terminal rendering of a BenchResult: a bench_serving-like table with client and engine columns.

Only formatting; no measurement and no storage.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tuner.runtime.bench import BenchResult


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:,.2f}"


def _num(value: float | None, fmt: str = "{:,.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def print_bench_result(result: BenchResult, console: Console | None = None) -> None:
    console = console or Console()
    engine = f"{result.engine} {result.engine_version}" if result.engine_version else result.engine
    title = f"{engine} | {result.model} | {result.gpu or 'GPU unknown'}"
    if not result.ok:
        console.print(f"[bold red]bench failed[/] ({escape(result.failure_kind or 'unknown')}): "
                      f"{escape(title)}", highlight=False)
        console.print(result.error or "", markup=False, highlight=False, soft_wrap=True)
        if result.log_path:
            console.print(f"engine log: {result.log_path}", markup=False, highlight=False, soft_wrap=True)
        if result.client is None:
            _print_stages(console, result)
            _print_run_id(console, result)
            return
    c = result.client
    e = result.engine_figures
    if c is not None:
        t = Table(title=title, title_justify="left")
        t.add_column("")
        t.add_column("client", justify="right")
        t.add_column("engine", justify="right")
        t.add_column("bucket (ms)", justify="right")
        by_metric = {row.metric: row for row in result.comparison}
        t.add_row("Requests ok", str(c.completed), _num(e.requests if e else None, "{:,.0f}"), "")
        t.add_row("Requests failed", str(c.failed), "", "")
        t.add_row("Duration (s)", _num(c.duration_s), _num(e.window_s if e else None), "")
        t.add_row("Input tokens", f"{c.total_input_tokens:,}",
                  _num(e.prompt_tokens if e else None, "{:,.0f}"), "")
        t.add_row("Output tokens", f"{c.total_output_tokens:,}",
                  _num(e.generation_tokens if e else None, "{:,.0f}"), "")
        t.add_row("Requests/s", _num(c.request_throughput_req_s), "", "")
        t.add_row("Input tok/s", _num(c.input_throughput_tok_s),
                  _num(e.prompt_tokens_per_s if e else None), "")
        t.add_row("Output tok/s", _num(c.output_throughput_tok_s),
                  _num(e.generation_tokens_per_s if e else None), "")
        t.add_row("Total tok/s", _num(c.total_throughput_tok_s), "", "")
        t.add_row("Mean concurrency", _num(c.mean_concurrency),
                  _gauge(e, "running"), "")
        if e is not None and e.cache_hit_rate is not None:
            t.add_row("Prefix cache hits", "", f"{e.cache_hit_rate:.1%}", "")
        accept = e.spec_accept_length if e else None
        if c.accept_length is not None or accept is not None:
            t.add_row("Accept length", _num(c.accept_length), _num(accept), "")
        t.add_section()
        for label, key in (("TTFT", "ttft"), ("TPOT", "tpot"), ("ITL", "itl"), ("E2E", "e2e")):
            for stat, name in (("mean", "mean"), ("median", "p50"), ("p90", "p90"), ("p95", "p95"),
                               ("p99", "p99")):
                client_value = getattr(c, f"{key}_{stat}_s")
                row = by_metric.get(f"{key}_{name}")
                engine_value = row.engine_s if row else None
                if row is None and e is not None and stat == "mean":
                    engine_value = getattr(e, f"{key}_mean_s", None)
                bucket = ("" if row is None or row.bucket_low_s is None or row.bucket_high_s is None
                          else f"{row.bucket_low_s * 1e3:g}-{row.bucket_high_s * 1e3:g}")
                if row is not None and row.agrees is False:
                    bucket += " [yellow]differs[/]"
                t.add_row(f"{label} {stat} (ms)", _ms(client_value), _ms(engine_value), bucket)
            if key == "itl":
                t.add_row("ITL max (ms)", _ms(c.itl_max_s), "", "")
        t.add_section()
        for check in c.slo_checks:
            verdict = "[green]met[/]" if check.met else "[red]missed[/]"
            t.add_row(f"SLO {check.slo}", f"{_ms(check.value_s)} {verdict}", "", "")
        if c.goodput_req_s is not None:
            t.add_row("SLO attainment", _num(c.slo_attainment, "{:.1%}"), "", "")
            t.add_row("Goodput req/s", _num(c.goodput_req_s), "", "")
            t.add_row("Goodput output tok/s", _num(c.goodput_output_tok_s), "", "")
        t.add_row("Send lag p50/p99 (ms)", f"{_num(c.send_lag_p50_ms, '{:.3f}')} / "
                  f"{_num(c.send_lag_p99_ms, '{:.3f}')}", "", "")
        t.add_row("Loop lag p99/max (ms)", f"{_num(c.loop_lag_p99_ms, '{:.3f}')} / "
                  f"{_num(c.loop_lag_max_ms, '{:.3f}')}", "", "")
        console.print(t)
    _print_stages(console, result)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    _print_run_id(console, result)


def _print_run_id(console: Console, result: BenchResult) -> None:
    if result.run_id is not None:
        console.print(f"stored as bench run {result.run_id}", highlight=False)


def _gauge(e: Any, concept: str) -> str:
    if e is None:
        return ""
    stat = e.gauges.get(concept)
    return "-" if stat is None else f"{stat.mean:.1f} (max {stat.max:.0f})"


def _print_stages(console: Console, result: BenchResult) -> None:
    if result.stage_seconds:
        console.print("stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.stage_seconds.items()),
                      highlight=False)
