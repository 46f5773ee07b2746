"""Options and helpers of the commands that read rows: ``--database``, ``--model``, ``--column``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import click

from storeroom.cli.app import fail
from storeroom.errors import ConfigurationError
from storeroom.orm.columns import import_model, stored_columns

__all__ = ["columns_of", "load_model", "model_options", "parse_duration", "session_factory"]

F = TypeVar("F", bound=Callable[..., Any])


def model_options(*, multiple: bool = False) -> Callable[[F], F]:
    """Add ``--database``, ``--model`` (repeatable if ``multiple``) and ``--column``."""

    def decorate(func: F) -> F:
        options = [
            click.option(
                "--database",
                metavar="URL",
                envvar="DATABASE_URL",
                help="SQLAlchemy URL of the database, with a sync driver [env: DATABASE_URL].",
            ),
            click.option(
                "--model",
                "models",
                metavar="MODULE:CLASS",
                multiple=multiple,
                help="The model whose file columns to use, e.g. app.models:Document"
                + (" (repeat for several)." if multiple else "."),
            ),
            click.option(
                "--column",
                metavar="NAME",
                help="Only this file column of the model (default: all its StoredObject columns).",
            ),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def load_model(spec: str) -> type:
    """Import ``module:Class`` for ``--model`` (stops with the reason when it cannot)."""
    try:
        return import_model(spec)
    except ConfigurationError as exc:
        fail(f"--model: {exc}")


def columns_of(model: type, name: str | None) -> list[Any]:
    """The model's StoredObject columns (instrumented attributes), or just ``name``."""
    try:
        return stored_columns(model, name)
    except ConfigurationError as exc:
        fail(str(exc))


def session_factory(database: str | None) -> Callable[[], Any]:
    """A ``sessionmaker`` for ``database`` (objects stay usable after commit)."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    if not database:
        fail("--database URL (or DATABASE_URL) is required with --model")
    return sessionmaker(create_engine(database), expire_on_commit=False)


def parse_duration(text: str, option: str) -> timedelta:
    """``'90s'``, ``'30m'``, ``'2h'``, ``'7d'`` or plain seconds as a timedelta."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        scale = units.get(text[-1:], 0)
        seconds = float(text[:-1]) * scale if scale else float(text)
    except ValueError:
        seconds = -1
    if seconds < 0:
        fail(f"{option} must be a duration such as 30m, 2h or 1d, got {text!r}")
    return timedelta(seconds=seconds)
