"""``--shards N --queue URL`` for verify, gc and migrate, and ``storeroom jobs status RUN``.

The work itself is :mod:`storeroom.orm.sharded`: one job per shard on SAQ, progress
and findings in the application's database. These helpers start a run, follow it on
standard error, and print its aggregated result like the single-process command would.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from storeroom.cli.app import Context, fail, pass_context

__all__ = ["Sharding", "jobs", "sharded_options", "start_and_follow"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Sharding:
    """How a command was asked to run sharded (``--shards`` and its companions)."""

    shards: int
    queue_url: str | None
    queue_name: str
    follow: bool
    retries: int


def sharded_options(func: F) -> F:
    """Add ``--shards``, ``--queue``, ``--queue-name``, ``--retries``, ``--follow``.

    The command receives them as one ``sharding`` argument: a :class:`Sharding`, or None
    without ``--shards``.
    """

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        shards, queue_url = kwargs.pop("shards"), kwargs.pop("queue_url")
        queue_name, follow, retries = (
            kwargs.pop("queue_name"),
            kwargs.pop("follow"),
            kwargs.pop("retries"),
        )
        kwargs["sharding"] = (
            None if shards is None else Sharding(shards, queue_url, queue_name, follow, retries)
        )
        return func(*args, **kwargs)

    options = [
        click.option(
            "--shards",
            type=click.IntRange(min=1),
            default=None,
            help="Split the work into this many shards (by path hash), run as jobs "
            "by 'python -m storeroom.jobs.saq --import storeroom.orm.sharded' "
            "workers (needs --queue).",
        ),
        click.option(
            "--queue",
            "queue_url",
            metavar="URL",
            envvar="STOREROOM_QUEUE_URL",
            help="With --shards: redis:// or postgres:// URL of the SAQ queue "
            "[env: STOREROOM_QUEUE_URL].",
        ),
        click.option(
            "--queue-name",
            default="storeroom",
            show_default=True,
            help="With --shards: the SAQ queue name the workers listen on.",
        ),
        click.option(
            "--retries",
            type=click.IntRange(min=1),
            default=5,
            show_default=True,
            help="With --shards: attempts per shard (a worker's death or an error "
            "uses one) before the queue gives it up.",
        ),
        click.option(
            "--follow/--no-follow",
            default=True,
            help="With --shards: wait for the run and print its result "
            "[default: follow]; --no-follow prints the run id and returns "
            "(see 'storeroom jobs status RUN').",
        ),
    ]
    wrapped: Any = command
    for option in reversed(options):
        wrapped = option(wrapped)
    return wrapped  # type: ignore[no-any-return]


def start_and_follow(
    ctx: Context,
    kind: str,
    params: dict[str, Any],
    sharding: Sharding,
    database: str | None,
) -> None:
    """Start a sharded run; unless ``--no-follow``, wait for it and print its result."""
    from storeroom.jobs.saq import SaqQueue
    from storeroom.orm.sharded import start_run

    shards, queue_url, queue_name = sharding.shards, sharding.queue_url, sharding.queue_name
    if not queue_url:
        fail("--shards needs --queue URL (or STOREROOM_QUEUE_URL): the SAQ queue workers read")
    if not database:
        fail("--shards needs --database URL (or DATABASE_URL): workers record progress there")
    params = {**params, "config": str(ctx.config.resolve()) if ctx.config else None}
    queue = SaqQueue(
        queue_url, name=queue_name, timeout=24 * 3600, heartbeat=10, retries=sharding.retries
    )
    # A URL from the environment stays out of the queue: workers read their own DATABASE_URL.
    from_env = database == os.environ.get("DATABASE_URL")
    try:
        run = start_run(
            kind, params, shards=shards, database=database, queue=queue, send_database=not from_env
        )
    finally:
        queue.close()
    click.echo(f"started {run}: {shards} shards on queue {queue_name!r}", err=True)
    if not sharding.follow:
        click.echo(run)
        return
    show(database, run, wait=True)


def show(database: str, run: str, *, wait: bool, stale_after: float | None = None) -> None:
    """Print ``run``'s progress (following it with ``wait``), then its result and exit code.

    A shard whose worker sent no heartbeat for ``stale_after`` seconds shows as stalled, or
    as failed on its last attempt (the queue gave up on it): following then ends, exit 1.
    """
    from storeroom.orm.sharded import STALE_AFTER, run_status, wait_for_run

    stale = STALE_AFTER if stale_after is None else stale_after

    last: list[str] = []

    def progress(status: list[Any]) -> None:
        states = [s.status for s in status]
        line = ", ".join(
            f"{name} {states.count(name)}"
            for name in ("done", "running", "queued", "stalled", "failed")
            if states.count(name)
        )
        if [line] != last:
            last[:] = [line]
            click.echo(f"{run}: {len(status)} shards: {line}", err=True)

    try:
        status = (
            wait_for_run(database, run, on_progress=progress, stale_after=stale)
            if wait
            else run_status(database, run, stale_after=stale)
        )
    except Exception as exc:  # an unknown run id: one line, exit 2
        fail(str(exc).splitlines()[0])
    if not all(s.finished for s in status):
        click.echo(f"{run} is still running; run 'storeroom jobs status {run}' again")
        return
    _result(database, run, status)


def _result(database: str, run: str, status: list[Any]) -> None:
    from storeroom.cli.formatting import print_finding
    from storeroom.orm.sharded import run_counts, run_findings

    counts = run_counts(status)
    failed = [s for s in status if s.status != "done"]
    kind = run.split("-", 1)[0]
    for section, entry in run_findings(database, run):
        if kind == "verify":
            print_finding(section, entry)
        elif kind == "gc":
            if section == "deleted":
                click.echo(f"deleted {entry['path']}")
            elif section == "kept":
                click.echo(f"kept {entry['path']} (referenced since the scan)")
            elif section == "skipped":
                click.echo(f"skipped {entry['reason']}")  # the reason names the path
            else:
                click.echo(f"failed {entry['reason']}", err=True)
        elif section == "left":
            click.echo(
                f"left on the source for the next run: {entry['path']}: {entry['reason']}",
                err=True,
            )
        else:
            click.echo(f"failed {entry['path']}: {entry['reason']}", err=True)
    if kind == "verify":
        checked = any(s.counts.get("orphans_checked") for s in status)
        orphans = (
            f"orphans {counts.get('orphans', 0)}"
            if checked
            else "orphans not checked (pass --backend)"
        )
        click.echo(
            f"{counts.get('references', 0)} references: dangling "
            f"{counts.get('dangling', 0)}, mismatched {counts.get('mismatched', 0)}, "
            f"{orphans}"
        )
        bad = counts.get("dangling", 0) or counts.get("mismatched", 0) or counts.get("orphans", 0)
    elif kind == "gc":
        skipped, failures = counts.get("skipped", 0), counts.get("failed", 0)
        click.echo(
            f"{counts.get('deleted', 0)} orphans deleted"
            + (f", {skipped} skipped" if skipped else "")
            + (f", {failures} deletes failed" if failures else "")
        )
        bad = failures
    else:
        left = counts.get("left", 0)
        click.echo(
            f"copied {counts.get('copied', 0)}, already done {counts.get('skipped', 0)} "
            f"(adopted {counts.get('adopted', 0)}), failed {counts.get('failed', 0)}; "
            f"rows updated {counts.get('rows_updated', 0)}"
            + (f", rows left on the source for the next run {left}" if left else "")
        )
        bad = counts.get("failed", 0) or left
    for shard in failed:
        click.echo(
            f"shard {shard.shard} failed after {shard.attempts} attempts: {shard.error}", err=True
        )
    if bad or failed:
        click.get_current_context().exit(1)


@click.group()
def jobs() -> None:
    """Sharded runs of verify, gc and migrate (started with --shards)."""


@jobs.command("status")
@click.argument("run")
@click.option(
    "--database",
    metavar="URL",
    envvar="DATABASE_URL",
    required=True,
    help="SQLAlchemy URL of the database the run records its progress in [env: DATABASE_URL].",
)
@click.option("--follow/--no-follow", default=False, help="Wait until the run finishes.")
@click.option("--json", "as_json", is_flag=True, help="Print each shard's state as JSON.")
@click.option(
    "--stale-after",
    metavar="SECONDS",
    help="A running shard with no heartbeat from its worker for this long is stalled, or "
    "failed if it was its last attempt (workers beat every 2 s; at least 6) [default: 60].",
    type=click.FloatRange(min=6),
    default=60.0,
)
@pass_context
def status(
    ctx: Context, run: str, database: str, follow: bool, as_json: bool, stale_after: float
) -> None:
    """Show the progress of sharded run RUN and, once finished, its result.

    Exit codes: 0 done, 1 something failed or was found (a shard given up included),
    2 no such run.
    """
    del ctx
    if as_json:
        from dataclasses import asdict

        from storeroom.orm.sharded import run_status

        try:
            shards = run_status(database, run, stale_after=stale_after)
        except Exception as exc:
            fail(str(exc).splitlines()[0])
        click.echo(json.dumps([asdict(s) for s in shards], indent=2))
        return
    show(database, run, wait=follow, stale_after=stale_after)
