"""PostgreSQL and MariaDB on 127.0.0.1 (started by the machine, not by the tests)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

#: Database name on both servers. Set STOREROOM_TEST_DATABASE to give parallel runs of the
#: suite (several checkouts on one machine) their own database; it must exist.
DATABASE = os.environ.get("STOREROOM_TEST_DATABASE", "test")


@dataclass(frozen=True)
class DatabaseUrls:
    """SQLAlchemy URLs for one database, with a sync and an async driver."""

    name: str
    sync: str
    async_: str


POSTGRES = DatabaseUrls(
    "postgresql",
    f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}",
    f"postgresql+asyncpg://postgres@127.0.0.1:5432/{DATABASE}",
)
MARIADB = DatabaseUrls(
    "mariadb",
    f"mysql+pymysql://root@127.0.0.1:3306/{DATABASE}",
    f"mysql+aiomysql://root@127.0.0.1:3306/{DATABASE}",
)


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def check_connects(url: str) -> str | None:
    """None when a connection with ``url`` works, else why not."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        engine.dispose()
    return None
