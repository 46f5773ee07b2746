"""How the commands print: rich tables, sizes, durations."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["human_size", "print_table"]


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
    console.print(table)


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
