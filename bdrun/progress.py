"""Rich progress bars for the long loops (training, evaluation)."""

from __future__ import annotations

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def print_whole(renderable: RenderableType) -> None:
    """Print a table as wide as it needs: a narrow terminal (or a log file, 80 columns) then wraps lines rather
    than cutting every cell to "…", which would hide numbers and marks."""
    width = console.measure(renderable, options=console.options.update(width=1000)).maximum
    Console(stderr=True, width=max(console.width, width)).print(renderable)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    )
