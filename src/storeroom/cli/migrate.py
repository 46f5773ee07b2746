"""``storeroom migrate``: copy a backend's objects (or a model's files) to another, verified."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from storeroom.backends.base import StorageBackend
from storeroom.cli.app import Context, fail, pass_context, run_async
from storeroom.cli.formatting import human_size
from storeroom.cli.rows import columns_of, load_model, model_options, session_factory
from storeroom.cli.sharded import Sharding, sharded_options, start_and_follow

__all__ = ["migrate"]


@click.command(short_help="Copy all objects (or a model's files) to another backend.")
@click.argument("source")
@click.argument("destination")
@click.option("--prefix", default="", help="Only objects under this prefix (without --model).")
@model_options()
@click.option(
    "--state",
    "state_path",
    metavar="FILE",
    type=click.Path(path_type=Path),
    help="Journal of verified copies, read to resume "
    "[default: .storeroom-migrate-SOURCE-DESTINATION.jsonl]; with --shards a "
    "directory the workers share, one journal per shard.",
)
@click.option(
    "--concurrency",
    default=None,
    type=click.IntRange(min=1),
    help="Objects copied at once [default: 4 between local stores, 64 when one "
    "is across a network].",
)
@click.option(
    "--verify-read/--no-verify-read",
    default=True,
    show_default=True,
    help="Also read each copy back and hash it against the record (with the algorithm "
    "the recorded checksum names; SHA-256 when none). Without it, a streamed copy is "
    "still hashed on the way, and a copy made by the store is checked by its size.",
)
@click.option(
    "--update-rows",
    is_flag=True,
    help="Then switch the model's rows to DESTINATION (needs --model).",
)
@click.option(
    "--batch-size",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows per transaction with --update-rows.",
)
@click.option("--dry-run", is_flag=True, help="Show what would be copied; change nothing.")
@click.option(
    "--progress/--no-progress",
    default=True,
    help="Show a progress bar on a terminal [default: progress].",
)
@sharded_options
@pass_context
def migrate(
    ctx: Context,
    source: str,
    destination: str,
    prefix: str,
    database: str | None,
    models: str | None,
    column: str | None,
    state_path: Path | None,
    concurrency: int | None,
    verify_read: bool,
    update_rows: bool,
    batch_size: int,
    dry_run: bool,
    progress: bool,
    sharding: Sharding | None,
) -> None:
    """Copy every object of SOURCE, or the files a model references, to DESTINATION.

    Each object is streamed (never whole in memory), its SHA-256 computed on the way and
    compared with the one recorded for the file, and its copy verified on DESTINATION
    before it is written to the state journal. Run the same command again after an
    interruption (even kill -9) and it copies only what is missing.

    With --update-rows the rows are then switched to DESTINATION in batches, one
    transaction each, and only for copies the journal records as verified and that are
    still on DESTINATION; a row another transaction changed meanwhile is read again, never
    overwritten. A row never points at an object that is not verified on DESTINATION.

    Source objects are never deleted. Once 'storeroom verify' is clean, remove them with
    'storeroom gc --backend SOURCE --yes' (they are orphans by then).

    Exit codes: 0 done, 1 some objects failed (listed; run again), 2 bad arguments.

    \b
    Examples:
      storeroom migrate local s3 --dry-run
      storeroom migrate local s3 --model app.models:Document --update-rows
    """
    from storeroom import migrate as migration

    if source == destination:
        fail("SOURCE and DESTINATION are the same backend")
    ctx.read_only = dry_run
    src = ctx.backend(source)
    if dry_run:
        ctx.check_key(destination)  # a dry run reads the journal only, never DESTINATION
    dst_key = destination
    if update_rows and not models:
        fail("--update-rows needs --model MODULE:CLASS (and --database)")
    if models and prefix:
        fail("--prefix selects objects, --model selects rows' files: pass one of them")
    columns = columns_of(load_model(models), column) if models else []
    if not dry_run:
        from storeroom.orm.migration import _refuse_shared_location

        # Before any planning: two keys over one folder or bucket prefix are refused.
        _refuse_shared_location(src, ctx.backend(destination))
    if sharding is not None and not dry_run:
        state_dir = (state_path or Path(f".storeroom-migrate-{src.key}-{dst_key}")).resolve()
        state_dir.mkdir(parents=True, exist_ok=True)
        start_and_follow(
            ctx,
            "migrate",
            {
                "models": [models] if models else [],
                "column": column,
                "source": src.key,
                "destination": dst_key,
                "prefix": prefix.rstrip("/"),
                "state_dir": str(state_dir),
                "concurrency": concurrency,
                "verify_read": verify_read,
                "update_rows": update_rows,
                "batch_size": batch_size,
            },
            sharding,
            database,
        )
        return
    if state_path is not None and state_path.is_dir():
        fail(
            f"--state {str(state_path)!r} is a directory; without --shards it names the "
            "journal file"
        )
    sessions = session_factory(database) if columns else None
    path = state_path or Path(f".storeroom-migrate-{src.key}-{dst_key}.jsonl")
    from storeroom.orm.maintenance import ReferenceScan

    # The plan lives in an on-disk index (rows read in pages, the source listed once), so
    # memory stays flat whatever the number of objects.
    from storeroom.registry import StorageRegistry

    # Only SOURCE is opened for the plan (a dry run must not create DESTINATION's folder).
    planning = StorageRegistry()
    planning.register_backend(src)
    with ReferenceScan(columns, registry=planning) as scan:
        if sessions is not None:
            with sessions() as session:
                scan.read_rows(session, list_ahead={})
            count, total = scan.referenced_totals(src.key)

            def plan(state: Any = None) -> Any:
                # With the journal: rows an earlier run repointed count as already done.
                return migration.plan_scan(scan, src.key, state)
        else:
            count, total = scan.object_totals(src, prefix=prefix.rstrip("/"))

            def plan(state: Any = None) -> Any:
                return migration.plan_listing(scan, src, prefix.rstrip("/"))

        if dry_run:
            _dry_run(plan(), path, src.key, dst_key, count, total, update_rows, batch_size)
            return
        dst = ctx.backend(destination)
        started = time.monotonic()
        with migration.MigrationState(path, src.key, dst.key) as state:
            report = _copy_with_progress(
                src, dst, plan(state), state, concurrency, verify_read, progress, total, count
            )
            elapsed = max(time.monotonic() - started, 1e-9)
            click.echo(
                f"copied {report.copied} ({human_size(report.bytes_copied)}), already done "
                f"{report.skipped} (adopted {report.adopted}), failed {len(report.failed)} "
                f"in {elapsed:.1f} s ({report.copied / elapsed:.0f} objects/s, "
                f"{human_size(int(report.bytes_copied / elapsed))}/s); journal {path}"
            )
            if report.variants_not_made:
                click.echo(
                    f"variants not made yet: {report.variants_not_made} (made on "
                    f"{dst.key} on first request)"
                )
            if sessions is not None and update_rows:
                batches = 0
                left: list[tuple[str, str]] = []

                def batch_done(_changed: int) -> None:
                    nonlocal batches
                    batches += 1

                for col in columns:
                    report.rows_updated += migration.update_rows(
                        sessions,
                        col,
                        src.key,
                        dst.key,
                        state,
                        batch_size=batch_size,
                        on_batch=batch_done,
                        on_skipped=lambda path, why: left.append((path, why)),
                    )
                click.echo(f"rows updated {report.rows_updated} in {batches} transactions")
                if left:
                    click.echo(f"rows left on {src.key} for the next run: {len(left)}")
                    report.failed += left
    for source_path, error in report.failed[:20]:
        click.echo(f"failed {source_path}: {error}", err=True)
    if report.failed:
        click.get_current_context().exit(1)


def _dry_run(
    items: Iterable[Any],
    path: Path,
    src_key: str,
    dst_key: str,
    count: int,
    total: int,
    update_rows: bool,
    batch_size: int,
) -> None:
    """Print what a run would copy: the journal is read, DESTINATION is not touched."""
    from storeroom.orm.migration import MigrationState

    remaining = remaining_bytes = 0
    shown: list[Any] = []
    state = MigrationState(path, src_key, dst_key) if path.exists() else None
    try:
        for item in items:
            if state is not None and item.source in state.verified:
                continue
            remaining += 1
            remaining_bytes += item.size or 0
            if len(shown) < 10:
                shown.append(item)
    finally:
        if state is not None:
            state.close()
    click.echo(
        f"would copy {remaining} of {count} objects "
        f"({human_size(remaining_bytes)} of {human_size(total)}) from {src_key} to "
        f"{dst_key}; {count - remaining} already verified in {path}"
    )
    for item in shown:
        click.echo(f"  {item.source}  {human_size(item.size)}")
    if remaining > len(shown):
        click.echo("  ...")
    if update_rows:
        click.echo(
            f"would then switch the rows referencing them to {dst_key}, "
            f"{batch_size} per transaction"
        )


def _copy_with_progress(
    src: StorageBackend,
    dst: StorageBackend,
    items: Iterable[Any],
    state: Any,
    concurrency: int | None,
    verify_read: bool,
    progress: bool,
    total: int,
    count: int,
) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from storeroom.cli.progress import BinarySpeedColumn
    from storeroom.orm.migration import copy_objects

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        BinarySpeedColumn(),
        TextColumn("{task.fields[objects]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not (progress and console.is_terminal),
    ) as bar:
        done = 0
        task = bar.add_task(f"{src.key} -> {dst.key}", total=total or None, objects=f"0/{count}")

        def advance(item: Any, size: int) -> None:
            nonlocal done
            done += 1
            bar.update(task, advance=item.size or size, objects=f"{done}/{count}")

        return run_async(
            lambda: copy_objects(
                src,
                dst,
                items,
                state=state,
                concurrency=concurrency,
                verify_read=verify_read,
                on_progress=advance,
            )
        )
