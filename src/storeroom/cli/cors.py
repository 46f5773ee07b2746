"""``storeroom cors show|apply BACKEND``: read and set bucket CORS rules from the command line.

A click group, registered into the ``storeroom`` command by :mod:`storeroom.cli`. BACKEND is
a storage URL (``s3://bucket``, ``az://container``; credentials from the environment) or the
key of a backend configured by ``--config FILE``, by the environment (``STORAGE_BACKEND``,
``{NAME}_STORAGE_URI``...) or already registered in ``storages`` (or in a
:class:`~storeroom.registry.StorageRegistry` the parent command put on the click context).
Rules are printed as S3's ``{"CORSRules": [...]}`` JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from storeroom.backends.base import StorageBackend
from storeroom.backends.obstore.bucket_cors import apply_bucket_cors, get_bucket_cors
from storeroom.cors import CorsRules
from storeroom.errors import StoreroomError
from storeroom.registry import StorageRegistry, storages

__all__ = ["cors"]


def _backend(ctx: click.Context, name: str, config: Path | None) -> StorageBackend:
    from storeroom.backends.obstore import ObstoreBackend

    if "://" in name:
        return ObstoreBackend("cli", fs=name)
    if config is not None:
        from storeroom.config import configure_from_file

        registry = StorageRegistry()
        configure_from_file(config, registry)
        return registry.get_backend(name)
    registry = ctx.find_object(StorageRegistry) or storages
    if name in registry:
        return registry.get_backend(name)
    from storeroom.config import configure_from_env

    from_env = StorageRegistry()
    configure_from_env(from_env)
    return from_env.get_backend(name)


def _print_rules(rules: list[CorsRules]) -> None:
    click.echo(json.dumps({"CORSRules": [rule.to_s3() for rule in rules]}, indent=2))


_BACKEND = click.argument("backend")
_CONFIG = click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A TOML/JSON/YAML storage configuration file that defines BACKEND.",
)


@click.group()
def cors() -> None:
    """Show or apply the CORS rules of a bucket (S3) or storage account (Azure)."""


@cors.command()
@_BACKEND
@_CONFIG
@click.pass_context
def show(ctx: click.Context, backend: str, config: Path | None) -> None:
    """Print BACKEND's bucket CORS rules as JSON."""
    try:
        _print_rules(get_bucket_cors(_backend(ctx, backend, config)))
    except (StoreroomError, KeyError) as exc:
        raise click.ClickException(str(exc)) from exc


@cors.command()
@_BACKEND
@_CONFIG
@click.option(
    "--origin",
    "origins",
    multiple=True,
    required=True,
    help="An allowed origin, e.g. https://app.example.com (repeatable).",
)
@click.option(
    "--method",
    "methods",
    multiple=True,
    help="An allowed method (repeatable; default GET, PUT, POST).",
)
@click.option(
    "--header", "headers", multiple=True, help="An allowed request header (repeatable; default *)."
)
@click.option(
    "--expose-header",
    "expose",
    multiple=True,
    help="A response header scripts may read (repeatable; default ETag).",
)
@click.option(
    "--max-age",
    type=click.IntRange(min=0),
    default=3000,
    show_default=True,
    help="Seconds a browser may cache the preflight answer.",
)
@click.pass_context
def apply(
    ctx: click.Context,
    backend: str,
    config: Path | None,
    origins: tuple[str, ...],
    methods: tuple[str, ...],
    headers: tuple[str, ...],
    expose: tuple[str, ...],
    max_age: int,
) -> None:
    """Replace BACKEND's bucket CORS rules with one rule built from the options."""
    try:
        rule = CorsRules(
            allowed_origins=origins,
            allowed_methods=methods or ("GET", "PUT", "POST"),
            allowed_headers=headers or ("*",),
            expose_headers=expose or ("ETag",),
            max_age_seconds=max_age,
        )
        target = _backend(ctx, backend, config)
        apply_bucket_cors(target, rule)
        _print_rules(get_bucket_cors(target))
    except (StoreroomError, KeyError) as exc:
        raise click.ClickException(str(exc)) from exc
