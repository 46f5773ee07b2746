"""``storeroom cors show|apply BACKEND``: read and set bucket CORS rules from the command line.

A click group, registered into the ``storeroom`` command by :mod:`storeroom.cli.commands`.
BACKEND is a storage URL (``s3://bucket``, ``az://container``; credentials from the
environment) or the key of a backend: one registered in a
:class:`~storeroom.registry.StorageRegistry` the embedding command put on the click context
(or in ``storages``), else one configured by ``storeroom --config FILE`` or the environment
(``STORAGE__<KEY>__URL``, ``STORAGE_BACKEND``...), looked up through the shared
:class:`~storeroom.cli.app.Context` like every other command. Rules are printed as S3's
``{"CORSRules": [...]}`` JSON; a bad argument or an unknown backend ends the command with
one line and exit code 2.
"""

from __future__ import annotations

import json

import click

from storeroom.backends.base import StorageBackend
from storeroom.backends.obstore.bucket_cors import apply_bucket_cors, get_bucket_cors
from storeroom.cli.app import Context, fail
from storeroom.cors import CorsRules
from storeroom.errors import ConfigurationError
from storeroom.registry import StorageRegistry, storages

__all__ = ["cors"]


def _backend(click_ctx: click.Context, name: str) -> StorageBackend:
    if "://" in name:
        from storeroom.backends.obstore import ObstoreBackend

        return ObstoreBackend("cli", fs=name)
    registry = click_ctx.find_object(StorageRegistry) or storages
    if name in registry:
        return registry.get_backend(name)
    shared = click_ctx.find_object(Context) or Context(None)
    return shared.backend(name)


def _print_rules(rules: list[CorsRules]) -> None:
    click.echo(json.dumps({"CORSRules": [rule.to_s3() for rule in rules]}, indent=2))


_BACKEND = click.argument("backend")


@click.group()
def cors() -> None:
    """Show or apply the CORS rules of a bucket (S3) or storage account (Azure)."""


@cors.command()
@_BACKEND
@click.pass_context
def show(ctx: click.Context, backend: str) -> None:
    """Print BACKEND's bucket CORS rules as JSON.

    \b
    Examples:
      storeroom --config storage.toml cors show uploads
      storeroom cors show s3://my-bucket
    """
    _print_rules(get_bucket_cors(_backend(ctx, backend)))


@cors.command()
@_BACKEND
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
    origins: tuple[str, ...],
    methods: tuple[str, ...],
    headers: tuple[str, ...],
    expose: tuple[str, ...],
    max_age: int,
) -> None:
    """Replace BACKEND's bucket CORS rules with one rule built from the options.

    \b
    Examples:
      storeroom cors apply uploads --origin https://app.example.com
      storeroom cors apply s3://my-bucket --origin https://app.example.com --method PUT
    """
    try:
        rule = CorsRules(
            allowed_origins=origins,
            allowed_methods=methods or ("GET", "PUT", "POST"),
            allowed_headers=headers or ("*",),
            expose_headers=expose or ("ETag",),
            max_age_seconds=max_age,
        )
    except ConfigurationError as exc:
        fail(str(exc))
    target = _backend(ctx, backend)
    apply_bucket_cors(target, rule)
    _print_rules(get_bucket_cors(target))
