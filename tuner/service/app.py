"""The FastAPI app of `tuner serve`: the REST API (jobs, flag studies and trials, kernel sweeps and measurements,
the config database, exports as zip downloads), the web UI's static files, and `/metrics`.

Thin over the same functions as the CLI: jobs are created, cancelled and retried through the job-kind registry
(tuner.jobs.kinds) and tuner.jobs.units; reads are the bounded, indexed queries of tuner.store.browse. A
TunerError becomes a 400 with its one line as `detail`.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import tempfile
import time
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuner.errors import TunerError
from tuner.jobs import units
from tuner.service import config as cfg
from tuner.service.metrics import ServiceMetrics
from tuner.store import browse
from tuner.store.db import Database

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
UI_PAGES = ("jobs", "job", "new", "configs", "sweep", "study", "compare")


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 before it is read whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(self.limit)(scope, receive, send)
            return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, bounded, send)
        except _BodyTooLarge:
            await _too_large(self.limit)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"request body over {limit} bytes: send the job's options only"}, status_code=413)


def create_app(config: cfg.ServiceConfig, db: Database, *, metrics: ServiceMetrics | None = None) -> FastAPI:
    """The app over `db` (opened and migrated by the caller, who disposes it). Workers are not started here
    (see tuner.service.server)."""
    from tuner.jobs import kinds as registry

    metrics = metrics or ServiceMetrics(db)
    app = FastAPI(title="tuner", version="1", summary="Tuning jobs for LLM inference serving: kernel sweeps, "
                  "server-flag searches, exports", docs_url="/docs", redoc_url=None)
    app.add_middleware(BodyLimit, limit=cfg.MAX_BODY_BYTES)
    app.state.db = db
    app.state.config = config
    app.state.metrics = metrics

    @app.exception_handler(TunerError)
    async def tuner_error(_request: Request, exc: TunerError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.http_requests.labels(route=getattr(route, "path", "other"), code=str(response.status_code)).inc()
        return response

    def mutating(request: Request) -> None:
        """Dependency of every endpoint that changes something: the bearer token, or (no token configured) a
        request that is not from another origin's page."""
        if config.token:
            if not cfg.token_ok(config.token, request.headers.get("authorization")):
                raise HTTPException(401, f"this endpoint needs 'Authorization: Bearer <{cfg.TOKEN_ENV}>'",
                                    headers={"WWW-Authenticate": "Bearer"})
        elif not cfg.same_origin(request.headers.get("origin"), request.headers.get("host")):
            raise HTTPException(403, "cross-origin request refused: set TUNER_API_TOKEN to allow other clients")

    guard = [Depends(mutating)]

    # ------------------------------------------------------------------------------------------ service

    @app.get("/api/health", tags=["service"])
    def health() -> dict[str, Any]:
        return {"ok": True, "database": db.display_url, "auth": "token" if config.token else "localhost",
                "gpus": list(config.gpus), "cpu_workers": config.cpu_workers}

    @app.get("/metrics", tags=["service"], include_in_schema=False)
    def prometheus_metrics() -> Response:
        metrics.observe_new_trials()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # --------------------------------------------------------------------------------------------- jobs

    @app.get("/api/kinds", tags=["jobs"])
    def list_kinds() -> list[dict[str, Any]]:
        """The job kinds this service can create, with the options of each (what the form shows)."""
        from tuner.service.schemas import field_list

        return [{"name": k.name, "title": k.title, "needs_gpu": _needs_gpu_text(k),
                 "fields": field_list(k.request_type)} for k in _served_kinds(registry)]

    @app.get("/api/jobs", tags=["jobs"])
    def list_jobs(state: Annotated[list[str] | None, Query()] = None, offset: int = 0,
                  limit: int = browse.DEFAULT_PAGE, kind: str | None = None, sort: str = "-id") -> dict[str, Any]:
        _check_states(state, units.JOB_STATES, "job")
        return browse.jobs_page(db, offset=offset, limit=limit, states=state, kind=kind, sort=sort).to_dict()

    for job_kind in _served_kinds(registry):
        _add_create_route(app, db, job_kind, guard)

    @app.get("/api/demo-request", tags=["jobs"])
    def demo_request() -> dict[str, Any]:
        """The demo's flag search (simulated engine) as a request body for POST /api/jobs/flag_search."""
        from tuner.jobs.demo import demo_flag_search_request
        from tuner.jobs.fields import to_dict

        return {k: v for k, v in to_dict(demo_flag_search_request()).items() if v not in (None, [], False)}

    @app.get("/api/jobs/{job_id}", tags=["jobs"])
    def show_job(job_id: int) -> dict[str, Any]:
        job = browse.job_detail(db, job_id)
        if job is None:
            raise HTTPException(404, f"there is no job with id {job_id}")
        return job

    @app.get("/api/jobs/{job_id}/units", tags=["jobs"])
    def job_units(job_id: int, state: Annotated[list[str] | None, Query()] = None, offset: int = 0,
                  limit: int = browse.DEFAULT_PAGE) -> dict[str, Any]:
        show_job(job_id)
        _check_states(state, units.UNIT_STATES, "unit")
        return browse.units_page(db, job_id, offset=offset, limit=limit, states=state).to_dict()

    @app.post("/api/jobs/{job_id}/cancel", tags=["jobs"], dependencies=guard)
    def cancel_job(job_id: int) -> dict[str, Any]:
        """Cancel a job: queued units will not run; a running unit's worker stops at its next heartbeat."""
        show_job(job_id)
        units.cancel_job(db, job_id, "from the service")
        return show_job(job_id)

    @app.post("/api/jobs/{job_id}/retry", tags=["jobs"], dependencies=guard)
    def retry_job(job_id: int) -> dict[str, Any]:
        """Queue a failed job's failed units again (finished units are kept)."""
        job = show_job(job_id)
        if job["state"] != "failed":
            raise HTTPException(409, f"job {job_id} is {job['state']}; only a failed job can be retried")
        units.requeue_failed(db, job_id)
        return show_job(job_id)

    @app.get("/api/jobs/{job_id}/result", tags=["jobs"])
    def job_result(job_id: int) -> dict[str, Any]:
        """The job kind's typed result (null while nothing is done)."""
        import dataclasses

        show_job(job_id)
        record = units.get_job(db, job_id)
        result = registry.get_kind(record.kind).result(db.url, record)
        return {"job_id": job_id, "kind": record.kind,
                "result": None if result is None else browse._clean(dataclasses.asdict(result))}

    @app.get("/api/jobs/{job_id}/download", tags=["jobs"])
    def job_download(job_id: int) -> Response:
        """A finished export job's files as a zip in the engine's folder layout (plus, for a flag study, the
        engine's --config YAML and the launch command)."""
        from tuner.jobs.export_job import export_archive

        show_job(job_id)
        record = units.get_job(db, job_id)
        if record.kind.split(":", 1)[0] != "export":
            raise HTTPException(409, f"job {job_id} is a {record.kind} job; only export jobs have a download")
        result = registry.get_kind(record.kind).result(db.url, record)
        if result is None or not result.files:
            raise HTTPException(409, f"export job {job_id} has written nothing yet ({record.state})")
        name = cfg.safe_filename(f"export-job{job_id}-{Path(result.out_dir).name}", ".zip")
        return Response(export_archive(result), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    # ----------------------------------------------------------------------------------- flag studies

    @app.get("/api/studies", tags=["flag search"])
    def list_studies(offset: int = 0, limit: int = browse.DEFAULT_PAGE, engine: str | None = None,
                     model: str | None = None, sort: str = "-id") -> dict[str, Any]:
        return browse.studies_page(db, offset=offset, limit=limit, engine=engine, model=model, sort=sort).to_dict()

    def study_or_404(name: str) -> dict[str, Any]:
        study = browse.study_by_name(db, name)
        if study is None:
            raise HTTPException(404, f"there is no flag study named {name!r}")
        return study

    @app.get("/api/studies/{name:path}/trials", tags=["flag search"])
    def study_trials(name: str, offset: int = 0, limit: int = browse.DEFAULT_PAGE, kind: str | None = None,
                     status: str | None = None, sort: str = "trial_number") -> dict[str, Any]:
        study = study_or_404(name)
        return browse.trials_page(db, study["id"], offset=offset, limit=limit, kind=kind, status=status,
                                  sort=sort).to_dict()

    @app.get("/api/studies/{name:path}/pareto", tags=["flag search"])
    def study_pareto(name: str) -> dict[str, Any]:
        """Every measured load step of every search trial: throughput and goodput vs the study's Pareto latency
        metric (p99), the front marked; at most 3000 points (the whole front, a sample of the rest)."""
        study = study_or_404(name)
        return browse.study_pareto(db, study["id"]) or {}

    @app.get("/api/studies/{name:path}/export.zip", tags=["flag search"])
    def study_export(name: str) -> Response:
        """The study's report folder as a zip: best.json, launch command, the engine's --config YAML, trials."""
        from tuner.search.flags.report import load_report, write_report

        study_or_404(name)
        report = load_report(db, name)
        if report.best is None:
            raise HTTPException(409, f"study {name!r} has no best config yet")
        with tempfile.TemporaryDirectory(prefix="tuner-export-") as tmp:
            write_report(report, Path(tmp) / "report", force=True)
            return _zip_response(Path(tmp) / "report", cfg.safe_filename(name, ".zip"))

    @app.get("/api/studies/{name:path}", tags=["flag search"])
    def show_study(name: str) -> dict[str, Any]:
        """One study (its name may hold any character, "/" included)."""
        return study_or_404(name)

    @app.get("/api/trials/{trial_id}/log", tags=["flag search"])
    def trial_log(trial_id: int) -> dict[str, Any]:
        """The engine log tail of one trial."""
        found = browse.trial_log_tail(db, trial_id)
        if found is None:
            raise HTTPException(404, f"there is no trial with id {trial_id}")
        return found

    # ---------------------------------------------------------------------------------- kernel sweeps

    @app.get("/api/sweeps", tags=["kernel sweeps"])
    def list_sweeps(offset: int = 0, limit: int = browse.DEFAULT_PAGE, model: str | None = None,
                    device_name: str | None = None, kernel: str | None = None, sort: str = "-id") -> dict[str, Any]:
        return browse.sweeps_page(db, offset=offset, limit=limit, model=model, device_name=device_name,
                                  kernel=kernel, sort=sort).to_dict()

    @app.get("/api/sweeps/{sweep_id}", tags=["kernel sweeps"])
    def show_sweep(sweep_id: int) -> dict[str, Any]:
        """A sweep with its best config per batch size and the speed-ups over the engine's choice and default."""
        sweep = browse.sweep_detail(db, sweep_id)
        if sweep is None:
            raise HTTPException(404, f"there is no kernel sweep with id {sweep_id}")
        return sweep

    @app.get("/api/sweeps/{sweep_id}/measurements", tags=["kernel sweeps"])
    def sweep_measurements(sweep_id: int, offset: int = 0, limit: int = browse.DEFAULT_PAGE,
                           batch_size: int | None = None, status: str | None = None,
                           sort: str = "latency_us") -> dict[str, Any]:
        page = browse.measurements_page(db, sweep_id, offset=offset, limit=limit, batch_size=batch_size,
                                        status=status, sort=sort)
        if page is None:
            raise HTTPException(404, f"there is no kernel sweep with id {sweep_id}")
        return page.to_dict()

    @app.get("/api/sweeps/{sweep_id}/heatmap", tags=["kernel sweeps"])
    def sweep_heatmap(sweep_id: int, max_configs: int = Query(40, ge=1, le=200)) -> dict[str, Any]:
        found = browse.sweep_heatmap(db, sweep_id, max_configs=max_configs)
        if found is None:
            raise HTTPException(404, f"there is no kernel sweep with id {sweep_id}")
        return found

    @app.get("/api/sweeps/{sweep_id}/export.zip", tags=["kernel sweeps"])
    def sweep_export(sweep_id: int, formats: str = "sglang,vllm") -> Response:
        """The sweep's best configs as a zip in the engines' folder layout (SGLang configs/triton_x_y_z/,
        vllm/), with a README of how each engine is pointed at it."""
        from tuner.export.from_store import export_sweeps, usage_hints
        from tuner.store.kernels import get_sweep

        sweep = get_sweep(db, sweep_id)
        if sweep is None:
            raise HTTPException(404, f"there is no kernel sweep with id {sweep_id}")
        chosen = [f.strip() for f in formats.split(",") if f.strip()]
        with tempfile.TemporaryDirectory(prefix="tuner-export-") as tmp:
            out = Path(tmp) / "configs"
            written = export_sweeps(db, [sweep], out, chosen)
            notes = sorted({n for f in written for n in f.notes})
            title = f"sweep {sweep_id}: {sweep.model} TP{sweep.tp} EP{sweep.ep} on {sweep.device_name}"
            (out / "README.txt").write_text("\n".join([title, *usage_hints(".", chosen), *notes]) + "\n")
            name = f"{sweep.model.split('/')[-1]}-tp{sweep.tp}-ep{sweep.ep}-{sweep.device_name}-sweep{sweep_id}"
            return _zip_response(out, cfg.safe_filename(name, ".zip"))

    @app.get("/api/configs", tags=["kernel sweeps"])
    def config_database(device_name: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
        """The best config set per (GPU, model, TP/EP, dtype, kernel, engine and version)."""
        return browse.config_database(db, device_name=device_name, model=model)

    # ------------------------------------------------------------------------------------------- web UI

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/ui", include_in_schema=False)
    def ui_redirect() -> RedirectResponse:
        return RedirectResponse("/")

    return app


def _served_kinds(registry: Any) -> list[Any]:
    """The registered kinds whose request is a dataclass (the only kind of request a body can be derived from);
    any other is left out of the API with a warning."""
    import dataclasses

    served = []
    for kind in registry.all_kinds():
        if dataclasses.is_dataclass(kind.request_type):
            served.append(kind)
        else:
            log.warning("job kind %r: its request type %r is not a dataclass; not offered by the API", kind.name,
                        kind.request_type)
    return served


def _needs_gpu_text(kind: Any) -> str:
    value = getattr(kind, "needs_gpu", False)
    if callable(value):
        return "depends"
    return "yes" if value else "no"


def _check_states(states: list[str] | None, known: tuple[str, ...], what: str) -> None:
    unknown = sorted(set(states or ()) - set(known))
    if unknown:
        raise HTTPException(400, f"unknown {what} state(s) {', '.join(unknown)}: choose from {', '.join(known)}")


def _add_create_route(app: FastAPI, db: Database, kind: Any, guard: list[Any]) -> None:
    """POST /api/jobs/<kind>: the body is the kind's request (the CLI's options as JSON), checked by
    fields.from_dict; the same request again returns the same job (200 instead of 201)."""
    from tuner.jobs import fields as job_fields
    from tuner.service.schemas import body_schema

    def create(response: Response, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        request = job_fields.from_dict(kind.request_type, body)
        asked_at = dt.datetime.now(dt.UTC)
        started = time.monotonic()
        job = kind.submit(db.url, request)
        log.info("job %s (%s) submitted in %.2f s", job.id, job.kind, time.monotonic() - started)
        response.status_code = 201 if job.created_at >= asked_at else 200  # 200: this request's job existed
        return browse.job_detail(db, job.id) or {}

    create.__name__ = f"create_{kind.name}_job"
    app.post(f"/api/jobs/{kind.name}", tags=["jobs"], dependencies=guard, status_code=201,
             summary=f"Create a {kind.title} job",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": body_schema(kind.request_type)}}}})(create)


def _zip_response(folder: Path, filename: str) -> Response:
    """A zip of everything under `folder` (paths relative to it) as an attachment named `filename`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return Response(buffer.getvalue(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
