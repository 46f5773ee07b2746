"""``storeroom verify`` and ``storeroom gc``: compare rows with the store, delete orphans.

The comparison lives in the library (:func:`storeroom.orm.maintenance.iter_findings`,
:func:`storeroom.orm.maintenance.remove_orphans`), in bounded memory; these commands parse
options and print what it yields as it comes.
"""

from __future__ import annotations

import json
import sys
import textwrap
from datetime import timedelta
from typing import Any, TextIO

import click

from storeroom.cli.app import Context, fail, pass_context
from storeroom.cli.formatting import human_size, print_finding
from storeroom.cli.rows import (
    columns_of,
    load_model,
    model_options,
    parse_duration,
    session_factory,
)
from storeroom.cli.sharded import Sharding, sharded_options, start_and_follow
from storeroom.errors import UnsafePath

__all__ = ["gc", "verify"]


def __getattr__(name: str) -> Any:
    # collect_findings moved to the library; imported lazily so the CLI starts without the ORM.
    if name == "collect_findings":
        from storeroom.orm.maintenance import collect_findings

        return collect_findings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_SECTIONS = ("dangling", "mismatched", "orphans")


def _columns(models: tuple[str, ...], column: str | None) -> list[Any]:
    if not models:
        fail("--model MODULE:CLASS is required (repeat it for several models)")
    if column is not None and len(models) > 1:
        fail("--column applies to a single --model")
    return [col for spec in models for col in columns_of(load_model(spec), column)]


class _JsonReport:
    """Writes the findings as one JSON object while they stream, one entry at a time."""

    def __init__(self) -> None:
        self._open = -1  # index of the section whose list is open
        self._entries = 0
        # Written to directly: click.echo checks the terminal again for every call, and a
        # large store has hundreds of thousands of entries.
        self._out: TextIO = sys.stdout
        self._out.write("{\n")

    def _advance(self, upto: int) -> None:
        while self._open < upto:
            if self._open >= 0:
                self._out.write("\n  ],\n" if self._entries else "],\n")
            self._open += 1
            self._entries = 0
            if self._open < len(_SECTIONS):
                self._out.write(f'  "{_SECTIONS[self._open]}": [')

    def entry(self, section: str, entry: dict[str, Any]) -> None:
        self._advance(_SECTIONS.index(section))
        text = textwrap.indent(json.dumps(entry, indent=2), "    ")
        self._out.write(("," if self._entries else "") + "\n" + text)
        self._entries += 1

    def summary(self, summary: dict[str, Any]) -> None:
        self._advance(len(_SECTIONS))
        body = textwrap.indent(json.dumps(summary, indent=2), "  ")[2:]
        self._out.write(f'  "summary": {body}\n}}\n')
        self._out.flush()


@click.command(short_help="Find dangling references, mismatches and orphans.")
@model_options(multiple=True)
@click.option(
    "--backend",
    "backend_key",
    metavar="KEY",
    help="Also list orphans: objects of this backend that no row of the named "
    "models references (name every model whose files live there).",
)
@click.option("--prefix", default="", help="With --backend: only objects under this prefix.")
@click.option(
    "--grace",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="Objects younger than this are not orphans (uploads of transactions in "
    "flight), e.g. 30m, 2h, 1d.",
)
@click.option(
    "--checksums",
    is_flag=True,
    help="Also read every referenced object and compare its checksum with the row's "
    "(hashed with the algorithm the row records).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@sharded_options
@pass_context
def verify(
    ctx: Context,
    database: str | None,
    models: tuple[str, ...],
    column: str | None,
    backend_key: str | None,
    prefix: str,
    grace: str,
    checksums: bool,
    as_json: bool,
    sharding: Sharding | None,
) -> None:
    """Compare rows with the store: dangling references, mismatches, orphans.

    Dangling: a row references an object that does not exist. Mismatched: the object's
    size (with --checksums also its checksum) differs from what the row records. Orphans
    (with --backend): objects no row references, older than --grace.

    Exit codes: 0 rows and store agree, 1 findings, 2 bad arguments.

    \b
    Examples:
      storeroom verify --model app.models:Document
      storeroom verify --model app.models:Document --backend s3 --json
    """
    from storeroom.orm.maintenance import iter_findings

    columns = _columns(models, column)
    if backend_key is not None:
        ctx.backend(backend_key)
    delay = parse_duration(grace, "--grace")
    if sharding is not None:
        if as_json:
            fail("--json is not available with --shards; see 'storeroom jobs status RUN --json'")
        start_and_follow(
            ctx,
            "verify",
            {
                "models": list(models),
                "column": column,
                "backend": backend_key,
                "prefix": prefix.rstrip("/"),
                "grace": delay.total_seconds(),
                "checksums": checksums,
            },
            sharding,
            database,
        )
        return
    report = _JsonReport() if as_json else None
    summary: dict[str, Any] = {}
    with session_factory(database)() as session:
        for section, entry in iter_findings(
            session,
            columns,
            ctx.registry,
            orphans_in=backend_key,
            prefix=prefix.rstrip("/"),
            grace=delay,
            checksums=checksums,
        ):
            if section == "summary":
                summary = entry
            elif report is not None:
                report.entry(section, entry)
            else:
                print_finding(section, entry)
    if report is not None:
        report.summary(summary)
    else:
        orphans = (
            f"orphans {summary['orphans']}"
            if summary["orphans_checked"]
            else "orphans not checked (pass --backend)"
        )
        click.echo(
            f"{summary['references']} references: dangling {summary['dangling']}, "
            f"mismatched {summary['mismatched']}, {orphans}"
        )
    if summary["dangling"] or summary["mismatched"] or summary["orphans"]:
        click.get_current_context().exit(1)


@click.command(short_help="Delete orphans older than a grace period (dry run by default).")
@model_options(multiple=True)
@click.option(
    "--backend", "backend_key", metavar="KEY", required=True, help="The backend to clean."
)
@click.option("--prefix", default="", help="Only objects under this prefix.")
@click.option(
    "--grace",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="Only delete orphans older than this, e.g. 30m, 2h, 1d.",
)
@click.option("--yes", is_flag=True, help="Really delete (without it, only list).")
@click.option(
    "--multipart/--no-multipart",
    default=True,
    show_default=True,
    help="S3: also abort incomplete multipart uploads older than --grace.",
)
@sharded_options
@pass_context
def gc(
    ctx: Context,
    database: str | None,
    models: tuple[str, ...],
    column: str | None,
    backend_key: str,
    prefix: str,
    grace: str,
    yes: bool,
    multipart: bool,
    sharding: Sharding | None,
) -> None:
    """Delete orphans (objects no row references) older than --grace; dry run by default.

    The rows are read again just before each batch of deletes, so an object a row
    started to reference meanwhile is kept; so are the objects of upload sessions in
    progress (and, on S3, their multipart uploads), and the uploads of transactions still
    open, whatever --grace (see docs/maintenance.md). Names storeroom will not touch (a
    backslash, a control character) are reported as skipped, as are deletes that fail; gc
    goes on with the other orphans. Every model whose files live in the backend must be
    named with --model (repeat it): files of models left out look like orphans.

    Exit codes: 0 done, 1 some deletes (or multipart aborts) failed, 2 bad arguments.

    \b
    Examples:
      storeroom gc --model app.models:Document --backend s3
      storeroom gc --model app.models:Document --backend s3 --grace 1d --yes
    """
    columns = _columns(models, column)
    store = ctx.backend(backend_key)
    delay = parse_duration(grace, "--grace")
    if sharding is not None and not yes:
        fail("--shards deletes: pass --yes (a dry run lists orphans without --shards)")
    sessions = session_factory(database)
    if multipart:
        _sweep_multipart_uploads(sessions, store, delay, yes, ctx)
    if sharding is not None:
        _remove_expired_uploads(sessions, ctx)
        start_and_follow(
            ctx,
            "gc",
            {
                "models": list(models),
                "column": column,
                "backend": store.key,
                "prefix": prefix.rstrip("/"),
                "grace": delay.total_seconds(),
            },
            sharding,
            database,
        )
        return
    if yes:
        _remove_expired_uploads(sessions, ctx)
    _collect_orphans(sessions, columns, ctx, store.key, prefix.rstrip("/"), delay, grace, yes)


def _remove_expired_uploads(sessions: Any, ctx: Context) -> None:
    """gc's upload-session step: expired upload sessions and what they left in the stores."""
    from storeroom.uploads import remove_expired

    with sessions() as session:
        removed = remove_expired(session, registry=ctx.registry)
        session.commit()
    if removed:
        click.echo(f"{removed} expired upload sessions removed")


def _collect_orphans(
    sessions: Any,
    columns: list[Any],
    ctx: Context,
    key: str,
    prefix: str,
    delay: timedelta,
    grace: str,
    yes: bool,
) -> None:
    """gc's orphan step: list (dry run) or delete the orphans of backend ``key``.

    Upload sessions in progress count as references (the library reads them with the rows);
    a name storeroom will not touch, a batch SQLite's write lock kept gc from checking, and
    a delete that fails are reported as skipped, and the other orphans go on. A failed
    delete is printed on standard error, and makes the exit code 1.
    """
    from storeroom.orm.maintenance import ReferenceScan, SkippedObject, remove_orphans
    from storeroom.paths import safe_path

    skipped: dict[str, int] = {}
    if yes:
        deleted = 0
        for info, removed in remove_orphans(
            sessions, columns, key, prefix=prefix, grace=delay, registry=ctx.registry
        ):
            if removed:
                deleted += 1
                click.echo(f"deleted {info.path}")
            elif isinstance(info, SkippedObject):
                skipped[info.kind] = skipped.get(info.kind, 0) + 1
                if info.kind == "failed":
                    click.echo(f"failed {info.reason}", err=True)  # the reason names the path
                else:
                    click.echo(f"skipped {info.reason}")  # the reason names the path
            else:
                click.echo(f"kept {info.path} (in use since the scan)")
        click.echo(f"{deleted} orphans deleted from {key}" + _skipped(skipped))
        if skipped.get("failed"):
            click.get_current_context().exit(1)
        return
    count = total = 0
    with ReferenceScan(columns, registry=ctx.registry) as scan:
        with sessions() as session:
            scan.read_rows(session)
        for info in scan.orphans(key, prefix=prefix, grace=delay):
            try:
                safe_path(info.path)
            except UnsafePath as exc:
                skipped["unsafe"] = skipped.get("unsafe", 0) + 1
                click.echo(f"would skip {exc}")  # the message names the path
                continue
            count += 1
            total += info.size or 0
            click.echo(f"would delete {info.path}  {human_size(info.size)}")
    click.echo(
        f"{count} orphans ({human_size(total)}) older than {grace} in "
        f"{key}{_skipped(skipped)}; dry run: pass --yes to delete"
    )


_SKIPPED = {
    "unsafe": "names storeroom will not touch",
    "locked": "not checked: SQLite's write lock was busy; run gc again",
    "failed": "deletes failed",
}


def _skipped(counts: dict[str, int]) -> str:
    """The end of gc's last line for the orphans left in place, by kind ('' for none)."""
    return "".join(
        f", {counts[kind]} skipped ({why})" for kind, why in _SKIPPED.items() if counts.get(kind)
    )


def _sweep_multipart_uploads(
    sessions: Any, store: Any, older_than: timedelta, really: bool, ctx: Context
) -> None:
    """``gc`` on S3: list (or, with ``really``, abort) incomplete multipart uploads, except
    those of upload sessions in progress."""
    from storeroom.backends.obstore import ObstoreBackend
    from storeroom.orm.maintenance import remove_incomplete_uploads

    if not isinstance(store, ObstoreBackend) or store.kind != "s3":
        return
    found = kept = 0
    for upload, abort in remove_incomplete_uploads(
        sessions, store, grace=older_than, registry=ctx.registry, dry_run=not really
    ):
        if not abort:
            kept += 1
            click.echo(
                f"kept incomplete multipart upload {upload.key} (upload session in progress)"
            )
            continue
        found += 1
        if really:
            click.echo(f"aborted incomplete multipart upload {upload.key}")
        else:
            click.echo(
                f"would abort incomplete multipart upload {upload.key} "
                f"(started {upload.initiated:%Y-%m-%d %H:%M} UTC)"
            )
    if really:
        click.echo(f"{found} incomplete multipart uploads aborted in {store.key}")
    elif found:
        click.echo(f"{found} incomplete multipart uploads in {store.key}; dry run")
