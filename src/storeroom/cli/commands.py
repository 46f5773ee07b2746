"""The commands of ``storeroom``: objects, migration, verification and garbage collection."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

import click

from storeroom.backends.base import StorageBackend
from storeroom.cli.app import Context, cli, fail, pass_context, run_async
from storeroom.cors_cli import cors
from storeroom.errors import ObjectNotFound

cli.add_command(cors)

CHUNK = 1024 * 1024


def _echo_table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*header, box=None, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    Console(soft_wrap=True).print(table)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def _target(ctx: Context, spec: str) -> tuple[StorageBackend, str]:
    key, sep, path = spec.partition(":")
    if not sep or not path:
        fail(f"expected BACKEND:PATH, got {spec!r}")
    return ctx.backend(key), path


# -- objects -------------------------------------------------------------------------------


@cli.command()
@pass_context
def backends(ctx: Context) -> None:
    """List the configured backends (no secrets)."""
    rows = [(b.key, type(b).__name__, b.location,
             "yes" if ctx.registry.default_key == b.key else "")
            for b in sorted(ctx.registry, key=lambda b: b.key)]
    if not rows:
        fail("no backends configured: pass --config FILE or set STORAGE__<KEY>__URL")
    _echo_table(rows, ("key", "type", "location", "default"))


@cli.command("ls")
@click.argument("backend")
@click.argument("prefix", default="")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_context
def ls(ctx: Context, backend: str, prefix: str, as_json: bool) -> None:
    """List objects of BACKEND under PREFIX."""
    store = ctx.backend(backend)
    infos = sorted(store.list(prefix), key=lambda i: i.path)
    if as_json:
        for info in infos:
            click.echo(json.dumps({"path": info.path, "size": info.size,
                                   "last_modified": str(info.last_modified or "")}))
        return
    _echo_table([(_size(i.size), str(i.last_modified or "")[:19], i.path) for i in infos],
                ("size", "modified", "path"))


@cli.command()
@click.argument("target", metavar="BACKEND:PATH")
@pass_context
def stat(ctx: Context, target: str) -> None:
    """Show what the store knows about one object."""
    store, path = _target(ctx, target)
    info = store.head(path)
    for name, value in (("path", info.path), ("size", info.size), ("etag", info.etag),
                        ("version", info.version), ("content type", info.content_type),
                        ("last modified", info.last_modified)):
        click.echo(f"{name:<14} {value if value is not None else '-'}")


@cli.command()
@click.argument("target", metavar="BACKEND:PATH")
@click.argument("source", type=click.Path(allow_dash=True, dir_okay=False), default="-")
@click.option("--content-type", help="Content type to store (default: guessed from the name).")
@pass_context
def put(ctx: Context, target: str, source: str, content_type: str | None) -> None:
    """Upload SOURCE (a file, or - for standard input) to BACKEND:PATH, streamed."""
    from storeroom.file import guess_content_type

    store, path = _target(ctx, target)
    if source != "-" and not os.access(source, os.R_OK):
        fail(f"cannot read {source!r}")
    stream: BinaryIO | Path = sys.stdin.buffer if source == "-" else Path(source)
    result = store.put(path, stream, content_type=content_type or guess_content_type(path))
    click.echo(f"{path}  {_size(result.size)}  {result.checksum}")


@cli.command()
@click.argument("target", metavar="BACKEND:PATH")
@click.argument("destination", type=click.Path(allow_dash=True, dir_okay=False), default="-")
@pass_context
def get(ctx: Context, target: str, destination: str) -> None:
    """Download BACKEND:PATH to DESTINATION (a file, or - for standard output), streamed."""
    store, path = _target(ctx, target)
    chunks = store.stream(path, chunk_size=CHUNK)
    if destination == "-":
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    partial = Path(destination + ".part")
    with partial.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)
    partial.replace(destination)


@cli.command()
@click.argument("target", metavar="BACKEND:PATH")
@pass_context
def rm(ctx: Context, target: str) -> None:
    """Delete BACKEND:PATH."""
    store, path = _target(ctx, target)
    if not store.exists(path):
        raise ObjectNotFound(f"object {path!r} does not exist in backend {store.key!r}")
    store.delete(path)


@cli.command()
@click.argument("source", metavar="SRC_BACKEND:PATH")
@click.argument("destination", metavar="DST_BACKEND:PATH")
@pass_context
def cp(ctx: Context, source: str, destination: str) -> None:
    """Copy an object, within a backend (server-side) or between backends (streamed)."""
    src, src_path = _target(ctx, source)
    dst, dst_path = _target(ctx, destination)
    if src is dst:
        src.copy(src_path, dst_path)
    else:
        info = src.head(src_path)
        dst.put(dst_path, src.stream(src_path, chunk_size=CHUNK),
                content_type=info.content_type)
    click.echo(f"copied {source} -> {destination}")


@cli.command()
@click.argument("target", metavar="BACKEND:PATH")
@click.option("--expires", default=3600, show_default=True, help="Seconds the URL is valid.")
@click.option("--upload", is_flag=True, help="Sign a PUT (upload) URL instead of a download.")
@pass_context
def sign(ctx: Context, target: str, expires: int, upload: bool) -> None:
    """Print a signed URL for BACKEND:PATH."""
    store, path = _target(ctx, target)
    click.echo(store.sign(path, expires_in=expires, for_upload=upload))


# -- rows ----------------------------------------------------------------------------------


def _model(spec: str) -> Any:
    module_name, sep, name = spec.partition(":")
    if not sep:
        fail(f"--model must be module:Class, got {spec!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        fail(f"cannot import {module_name!r}: {exc}")
    model = getattr(module, name, None)
    if model is None:
        fail(f"module {module_name!r} has no {name!r}")
    return model


def _column(model: Any, name: str | None) -> Any:
    from sqlalchemy import inspect

    from storeroom.orm.lifecycle import file_columns

    names = [n for n, _kind in file_columns(inspect(model))]
    if not names:
        fail(f"{model.__name__} has no StoredObject columns")
    if name is None:
        if len(names) > 1:
            fail(f"{model.__name__} has several file columns ({', '.join(names)}); pass --column")
        name = names[0]
    if name not in names:
        fail(f"{model.__name__} has no file column {name!r}; file columns: {', '.join(names)}")
    return getattr(model, name)


def _session_factory(database: str) -> Any:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    return sessionmaker(create_engine(database), expire_on_commit=False)


model_options = [
    click.option("--database", envvar="DATABASE_URL",
                 help="SQLAlchemy URL of the database (sync driver) [env: DATABASE_URL]."),
    click.option("--model", "model_spec", help="The model, as module:Class."),
    click.option("--column", help="Its StoredObject column (default: its only one)."),
]


def with_model_options(func: Any) -> Any:
    for option in reversed(model_options):
        func = option(func)
    return func


# -- migrate -------------------------------------------------------------------------------


@cli.command()
@click.argument("source")
@click.argument("destination")
@click.option("--prefix", default="", help="Only objects under this prefix.")
@with_model_options
@click.option("--state", "state_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Journal of verified copies [default: .storeroom-migrate-SRC-DST.jsonl].")
@click.option("--concurrency", default=8, show_default=True, help="Copies in flight.")
@click.option("--verify-read/--no-verify-read", default=True, show_default=True,
              help="Read each copy back and compare its SHA-256.")
@click.option("--update-rows", is_flag=True,
              help="Then repoint the model's rows at DESTINATION, in batches.")
@click.option("--batch-size", default=100, show_default=True)
@click.option("--dry-run", is_flag=True, help="Show what would be copied; change nothing.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@pass_context
def migrate(ctx: Context, source: str, destination: str, prefix: str, database: str | None,
            model_spec: str | None, column: str | None, state_path: Path | None,
            concurrency: int, verify_read: bool, update_rows: bool, batch_size: int,
            dry_run: bool, progress: bool) -> None:
    """Copy every object of SOURCE (or those a model references) to DESTINATION.

    Each copy is streamed, verified on the destination and journaled, so running the same
    command again after an interruption copies only what is missing. Source objects are
    never deleted. With --update-rows the rows are then switched to DESTINATION, in
    batches of one transaction each, only for verified copies.
    """
    from storeroom import migrate as migration

    src, dst = ctx.backend(source), ctx.backend(destination)
    if src is dst:
        fail("SOURCE and DESTINATION are the same backend")
    if (model_spec or update_rows) and not (model_spec and database):
        fail("--model and --database are needed to select or update rows")
    target_column = _column(_model(model_spec), column) if model_spec else None
    if target_column is not None:
        from storeroom.orm import referenced_files

        with _session_factory(database or "")() as session:
            files = [f for _r, _c, f in referenced_files(session, target_column)]
        items = migration.plan_rows(files, src.key)
    else:
        items = migration.plan_objects(src, prefix)
    total = sum(i.size or 0 for i in items)
    if dry_run:
        click.echo(f"would copy {len(items)} objects ({_size(total)}) from {src.key} to "
                   f"{dst.key}")
        for item in items[:20]:
            click.echo(f"  {item.source}")
        return
    state = migration.MigrationState(state_path or f".storeroom-migrate-{src.key}-{dst.key}.jsonl")
    try:
        report = _run_copy(src, dst, items, state, concurrency, verify_read, progress, total)
        if update_rows and target_column is not None and not report.failed:
            report.rows_updated = migration.update_rows(
                _session_factory(database or ""), target_column, src.key, dst.key, state,
                batch_size=batch_size,
            )
    finally:
        state.close()
    click.echo(f"copied {report.copied}, already done {report.skipped}, failed "
               f"{len(report.failed)}, {_size(report.bytes_copied)}; rows updated "
               f"{report.rows_updated}")
    for path, error in report.failed[:20]:
        click.echo(f"  failed {path}: {error}", err=True)
    if report.failed:
        sys.exit(1)


def _run_copy(src: StorageBackend, dst: StorageBackend, items: list[Any], state: Any,
              concurrency: int, verify_read: bool, progress: bool, total: int) -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from storeroom import migrate as migration

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), disable=not progress,
                  transient=True) as bar:
        task = bar.add_task(f"{src.key} -> {dst.key}", total=total or None)

        def advance(item: Any, size: int) -> None:
            bar.advance(task, item.size or size)

        return run_async(lambda: migration.copy_objects(
            src, dst, items, state=state, concurrency=concurrency, verify_read=verify_read,
            on_progress=advance,
        ))


# -- verify and gc -------------------------------------------------------------------------


@cli.command()
@with_model_options
@click.option("--backend", "backend_key", help="Also look for orphans in this backend.")
@click.option("--grace", default="1h", show_default=True,
              help="Ignore orphans younger than this (e.g. 30m, 2h, 1d).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
def verify(ctx: Context, database: str | None, model_spec: str | None, column: str | None,
           backend_key: str | None, grace: str, as_json: bool) -> None:
    """Compare rows with the store: dangling references, size mismatches, orphans.

    Exits 1 when anything is found, 0 when rows and store agree.
    """
    findings = _findings(ctx, database, model_spec, column, backend_key, grace)
    if as_json:
        click.echo(json.dumps(findings, indent=2))
    else:
        for kind in ("dangling", "mismatched", "orphans"):
            for entry in findings[kind]:
                click.echo(f"{kind[:-1] if kind.endswith('s') else kind}: {entry}")
        counts = {k: len(v) for k, v in findings.items()}
        click.echo(f"dangling {counts['dangling']}, size mismatches {counts['mismatched']}, "
                   f"orphans {counts['orphans']}")
    if any(findings.values()):
        sys.exit(1)


@cli.command()
@with_model_options
@click.option("--backend", "backend_key", required=True, help="Backend to clean.")
@click.option("--grace", default="1h", show_default=True,
              help="Only delete orphans older than this (e.g. 30m, 2h, 1d).")
@click.option("--yes", is_flag=True, help="Really delete (default: only list).")
@pass_context
def gc(ctx: Context, database: str | None, model_spec: str | None, column: str | None,
       backend_key: str, grace: str, yes: bool) -> None:
    """Delete objects no row references (orphans) older than --grace. Dry run by default."""
    findings = _findings(ctx, database, model_spec, column, backend_key, grace)
    store = ctx.backend(backend_key)
    for entry in findings["orphans"]:
        if yes:
            store.delete(entry["path"])
        click.echo(f"{'deleted' if yes else 'would delete'} {entry['path']}")
    click.echo(f"{len(findings['orphans'])} orphans {'deleted' if yes else 'found'}"
               + ("" if yes else " (dry run: pass --yes to delete)"))


def _grace(text: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return timedelta(seconds=float(text[:-1]) * units[text[-1]]) if text[-1] in units \
            else timedelta(seconds=float(text))
    except (ValueError, IndexError):
        fail(f"--grace must be a duration such as 30m, 2h or 1d, got {text!r}")


def _findings(ctx: Context, database: str | None, model_spec: str | None,
              column: str | None, backend_key: str | None, grace: str) -> dict[str, list[Any]]:
    from storeroom.orm import find_dangling, find_orphans, referenced_files

    if not (database and model_spec):
        fail("--database and --model are required")
    target = _column(_model(model_spec), column)
    registry = ctx.registry
    with _session_factory(database)() as session:
        dangling = find_dangling(session, target, registry=registry)
        missing = {(d.file.backend, d.file.path) for d in dangling}
        mismatched = []
        for _row, _col, file in referenced_files(session, target):
            if (file.backend, file.path) in missing or file.size is None:
                continue
            try:
                size = registry.get_backend(file.backend).head(file.path).size
            except ObjectNotFound:
                continue
            if size != file.size:
                mismatched.append({"backend": file.backend, "path": file.path,
                                   "recorded": file.size, "stored": size})
        orphans = []
        if backend_key:
            orphans = [{"path": o.path, "size": o.size}
                       for o in find_orphans(session, target, ctx.backend(backend_key),
                                             grace=_grace(grace), registry=registry)]
    return {
        "dangling": [{"model": d.model, "key": [str(k) for k in d.primary_key],
                      "column": d.column, "backend": d.file.backend, "path": d.file.path}
                     for d in dangling],
        "mismatched": mismatched,
        "orphans": orphans,
    }
