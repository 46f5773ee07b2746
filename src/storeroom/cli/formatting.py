"""How the commands print: rich tables, sizes, durations (progress bars: :mod:`.progress`).

Sizes and speeds use binary units everywhere (KiB, MiB/s): the progress bar and the summary
line of one command never disagree about what a megabyte is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

__all__ = ["human_size", "print_finding", "print_table"]


def print_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    """Print ``rows`` as an aligned table under ``header`` (no borders, greppable)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(*header, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*row)
    console = Console(soft_wrap=True)
    if not console.is_terminal:
        # Piped output is for grep and scripts: never shorten a path to fit 80 columns.
        console = Console(soft_wrap=True, width=100_000)
    console.on_broken_pipe = _reader_gone  # type: ignore[method-assign]
    console.print(table)


def _reader_gone() -> None:
    # rich would exit with status 1; the command's entry point ends quietly instead.
    raise BrokenPipeError


def human_size(n: int | None) -> str:
    """``1536`` -> ``'1.5 KiB'``; None -> ``'-'``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)  # pragma: no cover


def print_finding(section: str, entry: dict[str, Any]) -> None:
    """One line of ``verify``'s text report: a dangling reference, a mismatch or an orphan."""
    if section == "dangling":
        click.echo(
            f"dangling   {entry['model']} {','.join(entry['key'])} "
            f"{entry['column']} -> {entry['backend']}:{entry['path']}"
        )
    elif section == "mismatched":
        click.echo(
            f"mismatched {entry['model']} {','.join(entry['key'])} "
            f"{entry['backend']}:{entry['path']} {entry['kind']}: row "
            f"{entry['recorded']}, store {entry['stored']}"
        )
    else:
        click.echo(f"orphan     {entry['backend']}:{entry['path']} {human_size(entry['size'])}")
