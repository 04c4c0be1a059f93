"""Alembic environment of the results store: runs the migrations on the connection `tuner.store` hands in.

Run through `tuner.store.migrate` (or `tuner db upgrade`), never through an alembic.ini: there is none.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from tuner.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    dialect_name = connection.dialect.name if connection is not None else (url or "").split(":", 1)[0]
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: later migrations copy-and-move tables instead.
        render_as_batch=dialect_name.startswith("sqlite"),
        compare_type=True,
        literal_binds=connection is None,
        # tuner.store.db makes SQLite transactions real (it issues BEGIN itself), DDL included.
        transactional_ddl=True if connection is not None and dialect_name == "sqlite" else None,
    )


def run_migrations_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        # The caller (tuner.store.migrate) owns the transaction; on SQLite it is BEGIN IMMEDIATE, so two
        # processes opening a fresh file at once migrate one after the other.
        _configure(connection=connection)
        context.run_migrations()
        return
    from tuner.store.database import create_store_engine

    engine = create_store_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.begin() as conn:
            _configure(connection=conn)
            context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
