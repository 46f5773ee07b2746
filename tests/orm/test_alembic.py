"""`alembic revision --autogenerate` writes migrations for StoredObject columns that run.

A fresh Alembic project (``alembic init``) whose env.py passes storeroom's ``render_item``:
autogenerate a table with one file column, upgrade, add a table with several file columns
(one of them a list) and a list column to the first table, autogenerate and upgrade again;
then a third autogenerate finds nothing to do, and rows with files round-trip through the
migrated tables. On SQLite and on PostgreSQL (JSONB there).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.servers.databases import DatabaseUrls

ROOT = Path(__file__).resolve().parents[2]

MODELS_V1 = """
from sqlalchemy import MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storeroom import FileObject, StoredObject


class Base(DeclarativeBase):
    metadata = MetaData()


class Doc(Base):
    __tablename__ = "doc_{uid}"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    file: Mapped[FileObject] = mapped_column(StoredObject(backend="files"))
"""

MODELS_V2_EXTRA = """

class Album(Base):
    __tablename__ = "album_{uid}"

    id: Mapped[int] = mapped_column(primary_key=True)
    cover: Mapped[FileObject | None] = mapped_column(StoredObject(backend="files"), nullable=True)
    photos: Mapped[list[FileObject]] = mapped_column(StoredObject(backend="files", multiple=True))
    thumbnail: Mapped[FileObject | None] = mapped_column(StoredObject(), nullable=True)


Doc.attachments = mapped_column(
    "attachments", StoredObject(backend="files", multiple=True), nullable=True
)
"""


def _env_py(original: str, uid: str) -> str:
    source = original.replace(
        "target_metadata = None",
        "from models import Base\nfrom storeroom.orm.alembic import render_item\n"
        "target_metadata = Base.metadata\n\n\n"
        "def include_name(name, type_, parent_names):\n"
        "    # The shared test database holds other tests' tables: compare only this test's.\n"
        f"    return type_ != 'table' or name.endswith('_{uid}')\n",
    )
    configured = source.replace(
        "target_metadata=target_metadata",
        f"target_metadata=target_metadata, render_item=render_item, "
        f"include_name=include_name, version_table='alembic_version_{uid}'",
    )
    assert configured.count("render_item=render_item") == 2, "env.py template changed"
    return configured


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/app.db"
        return
    urls: DatabaseUrls = request.getfixturevalue("postgres_url")
    yield urls.sync


def _alembic(project: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(project), str(ROOT / "src")])},
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_autogenerate_writes_migrations_that_run(tmp_path: Path, database: str) -> None:
    uid = uuid.uuid4().hex[:8]
    project = tmp_path / "project"
    project.mkdir()
    _alembic(project, "init", "migrations")
    env_py = project / "migrations" / "env.py"
    env_py.write_text(_env_py(env_py.read_text(), uid))
    ini = project / "alembic.ini"
    ini.write_text(ini.read_text().replace("driver://user:pass@localhost/dbname", database))
    models = project / "models.py"
    models.write_text(MODELS_V1.format(uid=uid))
    engine = create_engine(database)
    try:
        _alembic(project, "revision", "--autogenerate", "-m", "documents")
        (first,) = (project / "migrations" / "versions").glob("*documents.py")
        script = first.read_text()
        assert "from storeroom import StoredObject" in script
        assert "StoredObject(backend='files')" in script and "storeroom.orm.types" not in script
        _alembic(project, "upgrade", "head")

        models.write_text(MODELS_V1.format(uid=uid) + MODELS_V2_EXTRA.format(uid=uid))
        _alembic(project, "revision", "--autogenerate", "-m", "albums")
        (second,) = (project / "migrations" / "versions").glob("*albums.py")
        script = second.read_text()
        assert "from storeroom import StoredObject" in script
        assert "sa.Column('photos', StoredObject(backend='files', multiple=True)" in script
        assert "sa.Column('thumbnail', StoredObject()" in script
        assert f"op.add_column('doc_{uid}', sa.Column('attachments', StoredObject(" in script
        _alembic(project, "upgrade", "head")

        _alembic(project, "revision", "--autogenerate", "-m", "nothing")
        (third,) = (project / "migrations" / "versions").glob("*nothing.py")
        upgrade = third.read_text().split("def upgrade()", 1)[1].split("def downgrade()", 1)[0]
        assert "op." not in upgrade, upgrade  # no spurious type changes

        columns = {c["name"]: c["type"] for c in inspect(engine).get_columns(f"album_{uid}")}
        if engine.dialect.name == "postgresql":
            assert {type(columns[n]).__name__ for n in ("cover", "photos")} == {"JSONB"}
        _rows_round_trip(project, database, uid)

        _alembic(project, "downgrade", "base")
        assert not {f"doc_{uid}", f"album_{uid}"} & set(inspect(engine).get_table_names())
    finally:
        with engine.begin() as connection:
            for table in (f"album_{uid}", f"doc_{uid}", f"alembic_version_{uid}"):
                connection.execute(text(f'DROP TABLE IF EXISTS "{table}"'))
        engine.dispose()


def _rows_round_trip(project: Path, database: str, uid: str) -> None:
    script = textwrap.dedent(f"""
        from sqlalchemy import create_engine, select
        from sqlalchemy.orm import Session

        from models import Album, Doc
        from storeroom import FileObject, storages
        from storeroom.backends.obstore import ObstoreBackend

        storages.register_backend(ObstoreBackend(key="files", fs="file://{project}/files"))
        engine = create_engine({database!r})
        with Session(engine) as session:
            session.add(Doc(title="t", file=FileObject(filename="a.txt", content=b"a"),
                            attachments=[FileObject(filename="b.txt", content=b"b")]))
            session.add(Album(photos=[FileObject(filename=f"p{{i}}.jpg", content=b"p")
                                      for i in range(2)]))
            session.commit()
        with Session(engine) as session:
            doc = session.scalars(select(Doc)).one()
            album = session.scalars(select(Album)).one()
            assert doc.file.get_content() == b"a"
            assert [f.get_content() for f in doc.attachments] == [b"b"]
            assert [f.filename for f in album.photos] == ["p0.jpg", "p1.jpg"]
        print("rows ok")
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(project), str(ROOT / "src")])},
        timeout=120,
    )
    assert done.stdout.strip() == "rows ok", done.stdout + done.stderr
