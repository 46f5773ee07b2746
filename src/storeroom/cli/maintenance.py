"""``storeroom verify`` and ``storeroom gc``: compare rows with the store, delete orphans.

:func:`collect_findings` holds the comparison (on top of :func:`storeroom.orm.find_dangling`
and :func:`storeroom.orm.find_orphans`) so other tools can produce the same report.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import click

from storeroom.backends.base import ObjectInfo
from storeroom.checksums import matches as checksum_matches
from storeroom.cli.app import Context, fail, pass_context
from storeroom.cli.formatting import human_size
from storeroom.cli.rows import (
    columns_of,
    load_model,
    model_options,
    parse_duration,
    session_factory,
)
from storeroom.registry import StorageRegistry
from storeroom.streams import Meter

__all__ = ["collect_findings", "gc", "verify"]

def _columns(models: tuple[str, ...], column: str | None) -> list[Any]:
    if not models:
        fail("--model MODULE:CLASS is required (repeat it for several models)")
    if column is not None and len(models) > 1:
        fail("--column applies to a single --model")
    return [col for spec in models for col in columns_of(load_model(spec), column)]


def collect_findings(
    session: Any,
    columns: list[Any],
    registry: StorageRegistry,
    *,
    orphans_in: str | None = None,
    prefix: str = "",
    grace: timedelta = timedelta(hours=1),
    checksums: bool = False,
) -> dict[str, Any]:
    """Compare the files ``columns`` reference with the stores.

    Returns ``{"dangling": [...], "mismatched": [...], "orphans": [...], "summary": {...}}``:
    references whose object is missing; objects whose size (or, with ``checksums``, whose
    SHA-256, read in full) differs from the row's record; and objects of backend
    ``orphans_in`` under ``prefix`` that no row references, older than ``grace``.
    """
    from sqlalchemy import inspect

    from storeroom.orm import find_dangling, find_orphans, referenced_files

    dangling = find_dangling(session, columns, registry=registry)
    missing = {(d.file.backend, d.file.path) for d in dangling}
    listings: dict[str, dict[str, ObjectInfo]] = {}
    mismatched: list[dict[str, Any]] = []
    references = 0
    for row, column, file in referenced_files(session, columns):
        references += 1
        if (file.backend, file.path) in missing:
            continue
        key = file.backend or registry.default_key or ""
        store = registry.get_backend(key)
        if key not in listings:
            listings[key] = {info.path: info for info in store.list()}
        info = listings[key].get(file.path)
        where = {"model": type(row).__name__,
                 "key": [str(k) for k in (inspect(row).identity or ())],
                 "column": column, "backend": key, "path": file.path}
        if info is None:
            continue  # uploaded after the dangling check ran: not a finding
        if file.size is not None and info.size != file.size:
            mismatched.append({**where, "kind": "size", "recorded": file.size,
                               "stored": info.size})
        elif checksums and file.checksum:
            meter = Meter.expecting(file.checksum)
            for chunk in store.stream(file.path):
                meter.update(chunk)
            stored = meter.checksum
            if not checksum_matches(file.checksum, stored):
                mismatched.append({**where, "kind": "checksum", "recorded": file.checksum,
                                   "stored": stored})
    orphans: list[dict[str, Any]] = []
    if orphans_in is not None:
        orphans = [
            {"backend": orphans_in, "path": o.path, "size": o.size,
             "last_modified": o.last_modified.isoformat() if o.last_modified else None}
            for o in find_orphans(session, columns, orphans_in, prefix=prefix, grace=grace,
                                  registry=registry)
        ]
    return {
        "dangling": [{"model": d.model, "key": [str(k) for k in d.primary_key],
                      "column": d.column, "backend": d.file.backend, "path": d.file.path}
                     for d in dangling],
        "mismatched": mismatched,
        "orphans": orphans,
        "summary": {"references": references, "dangling": len(dangling),
                    "mismatched": len(mismatched), "orphans": len(orphans),
                    "orphans_checked": orphans_in is not None, "checksums_read": checksums},
    }


@click.command(short_help="Find dangling references, mismatches and orphans.")
@model_options(multiple=True)
@click.option("--backend", "backend_key", metavar="KEY",
              help="Also list orphans: objects of this backend that no row of the named "
              "models references (name every model whose files live there).")
@click.option("--prefix", default="", help="With --backend: only objects under this prefix.")
@click.option("--grace", default="1h", show_default=True, metavar="DURATION",
              help="Objects younger than this are not orphans (uploads of transactions in "
              "flight), e.g. 30m, 2h, 1d.")
@click.option("--checksums", is_flag=True,
              help="Also read every referenced object and compare its SHA-256 with the row's.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@pass_context
def verify(ctx: Context, database: str | None, models: tuple[str, ...], column: str | None,
           backend_key: str | None, prefix: str, grace: str, checksums: bool,
           as_json: bool) -> None:
    """Compare rows with the store: dangling references, mismatches, orphans.

    Dangling: a row references an object that does not exist. Mismatched: the object's
    size (with --checksums also its SHA-256) differs from what the row records. Orphans
    (with --backend): objects no row references, older than --grace.

    Exit codes: 0 rows and store agree, 1 findings, 2 bad arguments.

    \b
    Examples:
      storeroom verify --model app.models:Document
      storeroom verify --model app.models:Document --backend s3 --json
    """
    columns = _columns(models, column)
    registry = ctx.registry
    if backend_key is not None:
        ctx.backend(backend_key)
    with session_factory(database)() as session:
        found = collect_findings(session, columns, registry, orphans_in=backend_key,
                                 prefix=prefix.rstrip("/"), grace=parse_duration(grace, "--grace"),
                                 checksums=checksums)
    summary = found["summary"]
    if as_json:
        click.echo(json.dumps(found, indent=2))
    else:
        for entry in found["dangling"]:
            click.echo(f"dangling   {entry['model']} {','.join(entry['key'])} "
                       f"{entry['column']} -> {entry['backend']}:{entry['path']}")
        for entry in found["mismatched"]:
            click.echo(f"mismatched {entry['model']} {','.join(entry['key'])} "
                       f"{entry['backend']}:{entry['path']} {entry['kind']}: row "
                       f"{entry['recorded']}, store {entry['stored']}")
        for entry in found["orphans"]:
            click.echo(f"orphan     {entry['backend']}:{entry['path']} "
                       f"{human_size(entry['size'])}")
        orphans = (f"orphans {summary['orphans']}" if summary["orphans_checked"]
                   else "orphans not checked (pass --backend)")
        click.echo(f"{summary['references']} references: dangling {summary['dangling']}, "
                   f"mismatched {summary['mismatched']}, {orphans}")
    if summary["dangling"] or summary["mismatched"] or summary["orphans"]:
        click.get_current_context().exit(1)


@click.command(short_help="Delete orphans older than a grace period (dry run by default).")
@model_options(multiple=True)
@click.option("--backend", "backend_key", metavar="KEY", required=True,
              help="The backend to clean.")
@click.option("--prefix", default="", help="Only objects under this prefix.")
@click.option("--grace", default="1h", show_default=True, metavar="DURATION",
              help="Only delete orphans older than this, e.g. 30m, 2h, 1d.")
@click.option("--yes", is_flag=True, help="Really delete (without it, only list).")
@pass_context
def gc(ctx: Context, database: str | None, models: tuple[str, ...], column: str | None,
       backend_key: str, prefix: str, grace: str, yes: bool) -> None:
    """Delete orphans (objects no row references) older than --grace; dry run by default.

    The rows are read again just before deleting, so an object a row started to
    reference meanwhile is kept. Every model whose files live in the backend must be
    named with --model (repeat it): files of models left out look like orphans.

    \b
    Examples:
      storeroom gc --model app.models:Document --backend s3
      storeroom gc --model app.models:Document --backend s3 --grace 1d --yes
    """
    from storeroom.orm import referenced_files

    columns = _columns(models, column)
    store = ctx.backend(backend_key)
    delay = parse_duration(grace, "--grace")
    sessions = session_factory(database)
    with sessions() as session:
        found = collect_findings(session, columns, ctx.registry, orphans_in=store.key,
                                 prefix=prefix.rstrip("/"), grace=delay)
    orphans = found["orphans"]
    deleted = 0
    if yes:
        with sessions() as session:
            now_referenced = {f.path for _r, _c, f in referenced_files(session, columns)
                              if (f.backend or ctx.registry.default_key) == store.key}
        for entry in orphans:
            if entry["path"] in now_referenced:
                click.echo(f"kept {entry['path']} (referenced since the scan)")
                continue
            store.delete(entry["path"])
            deleted += 1
            click.echo(f"deleted {entry['path']}")
        click.echo(f"{deleted} orphans deleted from {store.key}")
        return
    for entry in orphans:
        click.echo(f"would delete {entry['path']}  {human_size(entry['size'])}")
    total = sum(e["size"] or 0 for e in orphans)
    click.echo(f"{len(orphans)} orphans ({human_size(total)}) older than {grace} in "
               f"{store.key}; dry run: pass --yes to delete")
