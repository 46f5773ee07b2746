"""Declarative base classes: ``Base``, ``UUIDBase`` and ``UUIDAuditBase``."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, ClassVar

from sqlalchemy import DateTime, String, Uuid
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = ["Base", "UTCDateTime", "UUIDAuditBase", "UUIDBase"]


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database (MariaDB and SQLite drop the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: store timezone-aware datetimes")
        value = value.astimezone(timezone.utc)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base for models with file columns.

    ``str`` annotations map to ``VARCHAR(255)`` (MariaDB needs a length) and ``datetime`` to
    timezone-aware UTC values on every database.
    """

    type_annotation_map: ClassVar[dict[Any, Any]] = {
        str: String(255),
        datetime: UTCDateTime(),
    }


class UUIDBase(Base):
    """Abstract base with a UUID primary key ``id`` (generated in Python)."""

    __abstract__ = True

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)


class UUIDAuditBase(UUIDBase):
    """``UUIDBase`` plus ``created_at`` and ``updated_at`` (UTC, maintained automatically)."""

    __abstract__ = True

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now, onupdate=_now)
