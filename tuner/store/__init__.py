"""The results store: SQLAlchemy models, Alembic migrations and plain repository functions.

Open it with `open_database(settings.resolved_database_url)`; kernels.py and bench.py hold the functions the
rest of tuner calls. Nothing here imports torch, triton or the web layer.
"""

import logging

# Alembic logs its plugin set-up and context at INFO, some of it on import; that means nothing to users.
# Give the "alembic" logger a level of your own before importing tuner.store to see those lines.
if logging.getLogger("alembic").level == logging.NOTSET:
    logging.getLogger("alembic").setLevel(logging.WARNING)

from tuner.store.db import Database, open_database

__all__ = ["Database", "open_database"]
