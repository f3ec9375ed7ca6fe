"""One progress bar for long loops: a transient rich bar on a terminal, silent otherwise."""

from __future__ import annotations

import sys
from typing import Any


class ProgressBar:
    """`with ProgressBar(label, total, enabled=...) as bar: bar.advance(n)` or `bar.update(done)`.

    Draws on stderr only when `enabled` and stderr is a terminal, so logs, CI and pipes stay clean;
    otherwise every call is a no-op.
    """

    def __init__(self, label: str, total: int, *, enabled: bool = True, completed: int = 0) -> None:
        self.label, self.total, self.completed = label, total, completed
        self.active = enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressBar:
        if self.active:
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(console=Console(stderr=True), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total, completed=self.completed)
        return self

    def advance(self, n: int = 1) -> None:
        """Count `n` more units done."""
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def update(self, completed: int) -> None:
        """Set the number of units done (e.g. the training iteration after a resume)."""
        if self._bar is not None:
            self._bar.update(self._task, completed=completed)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None
