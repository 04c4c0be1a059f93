"""Running `tuner serve`: open (and migrate) the database, start the workers, serve the app under uvicorn until
Ctrl-C or SIGTERM, then stop the workers (each gives its unit back and tears its engine down).

Restart recovery is the work-unit queue's: jobs live in the database, so a service started again on it carries
on: units that were queued run, a unit whose worker was killed is claimed again when its lease (`lease_s`) ends,
and everything already measured (finished trials, kernel measurements) is kept.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from tuner.service.config import ServiceConfig
from tuner.store.db import Database, open_database

log = logging.getLogger(__name__)


def serve(config: ServiceConfig, *, before_start: Callable[[Database], None] | None = None,
          print_fn: Callable[[str], None] = print, log_dir: Path | None = None) -> None:
    """Serve until interrupted. `before_start(db)` runs once the database is open and before the workers start
    (the demo queues its flag search there). Worker output goes to `log_dir`/worker-*.log (default: the
    console)."""
    import uvicorn

    from tuner.service.app import create_app
    from tuner.service.metrics import ServiceMetrics
    from tuner.service.workers import WorkerPool
    from tuner.store.browse import warm_pareto_caches

    db = open_database(config.database_url)
    metrics_dir = Path(tempfile.mkdtemp(prefix="tuner-service-metrics-"))
    pool = WorkerPool(config, metrics_dir, log_dir)
    try:
        if before_start is not None:
            before_start(db)
        metrics = ServiceMetrics(db, str(metrics_dir))
        app = create_app(config, db, metrics=metrics)
        server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                               access_log=False, timeout_graceful_shutdown=5))
        pool.start()
        # the first Pareto view of a large study reads every trial (~11 s for 100 000): do it now, in the background
        threading.Thread(target=warm_pareto_caches, args=(db,), name="pareto-warm-up", daemon=True).start()
        for line in config.start_lines():
            print_fn(line)
        workers = ", ".join(pool.slots) or "none (external `tuner worker` processes only)"
        print_fn(f"workers: {workers}; database: {db.display_url}; Ctrl-C stops everything")
        server.run()
    finally:
        print_fn("stopping the workers ...")
        pool.stop()
        db.dispose()
        shutil.rmtree(metrics_dir, ignore_errors=True)
