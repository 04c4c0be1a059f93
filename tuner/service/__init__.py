"""`tuner serve`: the tuning service (FastAPI app, its workers, its metrics, the web UI in static/)."""
