"""Progress bar columns, apart from :mod:`.formatting` so that only commands that draw a
progress bar import rich's progress machinery (a tenth of a second at every start)."""

from __future__ import annotations

from typing import Any

from rich.progress import ProgressColumn
from rich.text import Text

from storeroom.cli.formatting import human_size

__all__ = ["BinarySpeedColumn"]


class BinarySpeedColumn(ProgressColumn):
    """A progress bar's transfer speed in binary units (``12.5 MiB/s``), like :func:`human_size`."""

    def render(self, task: Any) -> Text:
        """The task's current speed, or ``?`` before there is one."""
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("?", style="progress.data.speed")
        return Text(f"{human_size(int(speed))}/s", style="progress.data.speed")
