"""Rich progress for the long phases: a bar while evaluating, a live counter while compiling."""

from __future__ import annotations

import contextlib

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


@contextlib.contextmanager
def phase(title: str, meter, total: int | None = None):
    """Show `title` with LM calls / tokens so far; yields `advance()` for counted work."""
    start = meter.snapshot()
    progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                        console=console, transient=False)
    task = progress.add_task(title, total=total, stats="")

    def refresh():
        d = meter.snapshot() - start
        progress.update(task, stats=f"LM calls {d.lm_calls} (cached {d.cache_hits}) tokens {d.tokens}")

    def advance(n: int = 1):
        progress.advance(task, n)

    meter.listeners.append(refresh)
    try:
        with progress:
            yield advance
            if total is not None:
                progress.update(task, completed=total)
            refresh()
    finally:
        meter.listeners.remove(refresh)
