"""PostgreSQL and MariaDB on 127.0.0.1 (started by the machine, not by the tests)."""

from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class DatabaseUrls:
    """SQLAlchemy URLs for one database, with a sync and an async driver."""

    name: str
    sync: str
    async_: str


POSTGRES = DatabaseUrls(
    "postgresql",
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
)
MARIADB = DatabaseUrls(
    "mariadb",
    "mysql+pymysql://root@127.0.0.1:3306/test",
    "mysql+aiomysql://root@127.0.0.1:3306/test",
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
