"""Rows of a JSON-lines text: one JSON object per line, blank lines skipped, errors naming the line.

The one reader behind user task files (``headlab.data.tasks.user_file``) and calibration files
(``headlab.data.calib``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator


def jsonl_rows(lines: Iterable[str], where: Callable[[int], str]) -> Iterator[tuple[int, dict]]:
    """(1-based line number, object) for every non-blank line; ValueError ``"<where(n)>: ..."`` for a line that is not
    JSON or not a JSON object."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where(n)}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where(n)}: expected a JSON object {{...}}, got {type(row).__name__}")
        yield n, row
