"""The model, stores and database probes the upload-session race tests share.

``Report`` has a unique name (a second one makes the commit fail) and a file column on
backend ``docs``. The fixtures that use these live in ``tests/uploads/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import String, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from storeroom import FileObject, ObstoreBackend
from storeroom.orm import StoredObject
from storeroom.uploads import UploadLimits, metadata, upload_sessions
from tests.servers.databases import DatabaseUrls
from tests.servers.moto import MotoServer

PDF = b"%PDF-1.4\n" + b"x" * 500 + b"\n%%EOF\n"
LIMITS = UploadLimits(max_size=4096, content_types=["application/pdf"])


class Base(DeclarativeBase):
    pass


class Report(Base):
    __tablename__ = "race_reports"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject(backend="docs"))


@contextmanager
def empty_tables(found: DatabaseUrls) -> Iterator[DatabaseUrls]:
    """The upload-session and report tables, created empty and dropped afterwards."""
    engine = create_engine(found.sync)
    for tables in (metadata, Base.metadata):
        tables.drop_all(engine)
        tables.create_all(engine)
    try:
        yield found
    finally:
        for tables in (metadata, Base.metadata):
            tables.drop_all(engine)
        engine.dispose()


def staging_s3(
    server: MotoServer, bucket: str, kind: type[ObstoreBackend] = ObstoreBackend
) -> ObstoreBackend:
    """S3 (moto) with a credential provider and no static key: uploads are staged.

    Without a static key storeroom cannot sign the size, type and ``if-none-match`` into
    the URL, so the browser uploads to a staging path and completion copies to the final one.
    """

    def credentials() -> dict[str, Any]:
        return {
            "access_key_id": server.access_key,
            "secret_access_key": server.secret_key,
            "expires_at": datetime.now(timezone.utc) + timedelta(hours=1),
        }

    return kind(
        "docs",
        f"s3://{bucket}/prefix",
        aws_endpoint=server.endpoint,
        aws_region=server.region,
        aws_allow_http=True,
        credential_provider=credentials,
    )


def session_rows(urls: DatabaseUrls) -> list[Any]:
    """The upload-session rows as committed."""
    engine = create_engine(urls.sync)
    try:
        with Session(engine) as db:
            return list(db.execute(select(upload_sessions)).all())
    finally:
        engine.dispose()


def stored(urls: DatabaseUrls, name: str) -> bytes:
    """The bytes of Report ``name``'s committed file, read back from its store."""
    engine = create_engine(urls.sync)
    try:
        with Session(engine) as db:
            report = db.execute(select(Report).where(Report.name == name)).scalar_one()
            assert report.file is not None
            return report.file.get_content()
    finally:
        engine.dispose()


def reports(urls: DatabaseUrls) -> list[str]:
    """The names of the committed reports."""
    engine = create_engine(urls.sync)
    try:
        with Session(engine) as db:
            return list(db.execute(select(Report.name).order_by(Report.name)).scalars())
    finally:
        engine.dispose()


def waiting_for_a_lock(urls: DatabaseUrls, statement: str) -> int:
    """How many statements starting with ``statement`` wait for a lock right now.

    PostgreSQL and MariaDB only (SQLite locks the whole database and shows no waits).
    MariaDB lists a lock wait in ``innodb_trx`` only once InnoDB has registered the waiting
    transaction as a writer, which lags for one that read first; its process list shows the
    statement at once, and a single-row statement by primary key that is still running is
    one waiting for that row's lock.
    """
    query = {
        "postgresql": "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database() AND query LIKE :statement",
        "mariadb": "SELECT count(*) FROM information_schema.processlist WHERE command = "
        "'Query' AND id <> connection_id() AND info LIKE :statement",
    }[urls.name]
    engine = create_engine(urls.sync)
    try:
        with engine.connect() as conn:
            found = conn.execute(text(query), {"statement": f"{statement}%"}).scalar_one()
            return int(found)
    finally:
        engine.dispose()
