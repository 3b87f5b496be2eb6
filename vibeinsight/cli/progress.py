"""Terminal output: a live stage/percent bar, and Prefect's console kept free of tracebacks."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn


class ProgressView:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]{task.description:<11}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
            console=Console(stderr=True), transient=False, disable=not enabled,
        )
        self._task = None

    def __enter__(self) -> ProgressView:
        self._progress.__enter__()
        self._task = self._progress.add_task("starting", total=100)
        return self

    def update(self, stage: str, percent: int) -> None:
        self._progress.update(self._task, description=stage, completed=percent)

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)
