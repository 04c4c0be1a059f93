"""What every table of the store is built on: the declarative `Base` (with constraint names every backend
can refer to) and the portable column types (UTC timestamps, JSON that stores None as NULL).

Only portable types, so SQLite and PostgreSQL both work. The tables themselves are in models.py,
flag_models.py and job_models.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, TypeAlias, TypeVar

from sqlalchemy import JSON, DateTime, MetaData, TypeDecorator
from sqlalchemy.orm import DeclarativeBase

# What a JSON column holds once read back: the typed fields of the records the store hands out.
Json: TypeAlias = None | bool | int | float | str | list["Json"] | dict[str, "Json"]
JsonObject: TypeAlias = dict[str, Json]


R = TypeVar("R")


def json_object(value: Json) -> dict[str, Any] | None:
    """`value` when it is a JSON object (to read its fields), else None."""
    return value if isinstance(value, dict) else None

# Named constraints, so later migrations can refer to them on every backend (SQLite batch mode needs names).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def record_of(cls: type[R], row: object, **values: Any) -> R:
    """A frozen record of dataclass `cls` from an ORM `row`: each field read from the row's attribute of the same
    name, unless given in `values` (conversions); JSON objects copied so the record shares nothing with the row."""
    fields = {f.name: values[f.name] if f.name in values else getattr(row, f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: dict(v) if isinstance(v, dict) else v for k, v in fields.items()})


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored with time zone, always handed back timezone-aware in UTC.

    PostgreSQL keeps the zone; SQLite stores naive text, so the zone is re-attached on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware one (UTC)")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# None is stored as SQL NULL, not as the JSON text 'null'.
JsonOrNull = JSON(none_as_null=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
