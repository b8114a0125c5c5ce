"""The one progress display of headlab: a transient rich bar on stderr (stdout is for results), or nothing.

    with progress_bar("training", total=steps, quiet=quiet) as bar:
        for step in range(steps):
            ...
            bar()                                   # advance by one (``bar(n)``: by n)
    with progress_bar("duo gates", total=36) as bar:
        train(progress=bar.update)                  # ``update(done, total, what)``: the planners' callback
    with progress_bar(quiet=not show) as bar:
        for r in range(rounds):
            job = bar.task(f"round {r + 1}", total=n)  # another line in the same display

Inside a ``headlab`` command the display goes to the command's stderr console (quiet under ``--quiet``);
elsewhere to a console of its own on stderr.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Bar:
    """One line of a progress display; its methods do nothing when the display is off (or has no such line)."""

    def __init__(self, display: Any = None, task: Any = None) -> None:
        self._display, self._task = display, task

    def __call__(self, n: float = 1) -> None:
        """Advance by ``n``."""
        if self._task is not None:
            self._display.advance(self._task, n)

    def update(self, done: float, total: float | None = None, what: str | None = None) -> None:
        """Set the line to ``done`` of ``total`` (when given), with ``what`` as its text (when given)."""
        if self._task is not None:
            self._display.update(self._task, completed=done, total=total, description=what)

    def task(self, description: str, total: float | None = None) -> Bar:
        """A new line in the same display (a no-op bar when the display is off)."""
        if self._display is None:
            return Bar()
        return Bar(self._display, self._display.add_task(description, total=total))


def _stderr_console():
    import rich
    from rich.console import Console

    console = rich.get_console()  # a headlab command points it at stderr (quiet under --quiet)
    return console if console.stderr else Console(stderr=True)


@contextmanager
def progress_bar(
    description: str = "", total: float | None = None, *, quiet: bool = False, transient: bool = True
) -> Iterator[Bar]:
    """Yield a :class:`Bar` (its first line ``description`` with ``total`` steps; no line when ``description``
    is empty); nothing is shown when ``quiet``. ``transient=False`` leaves the finished bar on screen."""
    if quiet:
        yield Bar()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=_stderr_console(), transient=transient) as display:
        yield Bar(display, display.add_task(description, total=total) if description else None)
