"""Your own steering task from a JSON-lines or CSV file (``headlab steer --task FILE``).

One item per row:

* choice task:     ``{"prompt": ..., "choices": [" no", " yes"], "label": 1}`` — ``label`` is the index
  of the right choice (or the right choice's text); scored by the logit of each choice's first token
  at the end of the prompt, as the built-in choice tasks are.
* generation task: ``{"prompt": ..., "answers": ["Paris"]}`` — greedy answer, correct when a
  normalised answer appears in its first line (``answers`` may be one string).

Every row must be of the same kind (the first row decides). In CSV files a list field (choices,
answers) is a JSON list (``["a", "b"]``) or text split on ``sep`` (default ``|``). Field names are
options (``prompt_field=`` ...). A malformed row raises ``ValueError`` naming the file and line.

``read_texts_file`` reads plain texts the same way (one text field per row) for ``headlab scan --texts``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from ..jsonl import jsonl_rows
from .base import Item, Task

SUFFIXES = (".jsonl", ".csv")


def is_task_file(name: str | Path) -> bool:
    """Whether ``name`` names a task file (by suffix) rather than a built-in task."""
    return Path(str(name)).suffix.lower() in SUFFIXES


def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row dict) for each non-empty row of a .jsonl or .csv file."""
    if not path.is_file():
        raise ValueError(f"task file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"task file {str(path)!r}: expected a .jsonl or .csv file, got suffix {suffix!r}")
    with path.open(encoding="utf-8", newline="") as f:
        if suffix == ".jsonl":
            yield from jsonl_rows(f, lambda n: _where(path, n))
        else:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise ValueError(f"{path}: empty CSV file (the first line must name the fields)")
            for row in reader:
                n = reader.line_num
                if None in row:
                    raise ValueError(f"{path}, line {n}: more values than the {len(reader.fieldnames)} header fields")
                if all(v is None or not str(v).strip() for v in row.values()):
                    continue
                yield n, row


def _where(path: Path, n: int) -> str:
    return f"{path}, line {n}"


def _text(row: dict, field: str, path: Path, n: int) -> str:
    if field not in row or row[field] is None:
        raise ValueError(f"{_where(path, n)}: missing field {field!r} (fields: {sorted(row)})")
    v = row[field]
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"{_where(path, n)}: field {field!r} must be non-empty text, got {v!r}")
    return v


def _list(row: dict, field: str, sep: str, path: Path, n: int) -> list[str]:
    v = row.get(field)
    if isinstance(v, str):
        s = v.strip()
        if s.startswith("["):
            try:
                v = json.loads(s)
            except json.JSONDecodeError:
                raise ValueError(f"{_where(path, n)}: field {field!r} starts with '[' but is not a JSON list: {s!r}") from None
        else:
            v = v.split(sep) if sep in v else [v]
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x.strip() for x in v):
        raise ValueError(f"{_where(path, n)}: field {field!r} must be a non-empty list of texts, got {v!r}")
    return v


def _label(row: dict, field: str, choices: list[str], path: Path, n: int) -> int:
    v = row.get(field)
    if v is None:
        raise ValueError(f"{_where(path, n)}: missing field {field!r} (the index of the right choice)")
    if isinstance(v, str):
        if v in choices:
            return choices.index(v)
        try:
            v = int(v.strip())
        except ValueError:
            raise ValueError(
                f"{_where(path, n)}: {field!r} = {v!r} is neither an index 0..{len(choices) - 1} nor one of the choices {choices}"
            ) from None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < len(choices):
        raise ValueError(f"{_where(path, n)}: {field!r} = {v!r} must be an index in 0..{len(choices) - 1}")
    return v


def load_file(
    path: str | Path,
    prompt_field: str = "prompt",
    choices_field: str = "choices",
    label_field: str = "label",
    answers_field: str = "answers",
    sep: str = "|",
    max_new_tokens: int = 16,
    n: int | None = None,
) -> Task:
    """A :class:`Task` from a .jsonl / .csv file (see the module doc); named after the file's stem."""
    path = Path(path)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    kind = None
    items: list[Item] = []
    for line, row in _rows(path):
        here = "choice" if row.get(choices_field) is not None else "generate" if row.get(answers_field) is not None else None
        if here is None:
            raise ValueError(
                f"{_where(path, line)}: a row needs {choices_field!r} + {label_field!r} (choice task) or "
                f"{answers_field!r} (generation task); fields: {sorted(row)}"
            )
        if kind is None:
            kind = here
        elif here != kind:
            raise ValueError(f"{_where(path, line)}: a {here} row in a {kind} task (the first row decides the kind)")
        prompt = _text(row, prompt_field, path, line)
        meta = {"line": line}
        if kind == "choice":
            choices = _list(row, choices_field, sep, path, line)
            if len(choices) < 2:
                raise ValueError(f"{_where(path, line)}: {choices_field!r} needs at least 2 choices, got {choices}")
            items.append(Item(prompt, choices=choices, label=_label(row, label_field, choices, path, line), meta=meta))
        else:
            items.append(Item(prompt, answers=_list(row, answers_field, sep, path, line), meta=meta))
    if not items:
        raise ValueError(f"task file {str(path)!r} has no rows")
    if n is not None:
        items = items[:n]
    if kind == "choice":
        return Task(path.stem, "choice", items)
    return Task(path.stem, "generate", items, max_new_tokens=max_new_tokens, metric="contains")


def read_texts_file(path: str | Path, text_field: str = "text") -> list[str]:
    """The ``text_field`` of every row of a .jsonl / .csv file (for ``headlab scan --texts``)."""
    path = Path(path)
    out = [_text(row, text_field, path, line) for line, row in _rows(path)]
    if not out:
        raise ValueError(f"texts file {str(path)!r} has no rows")
    return out
