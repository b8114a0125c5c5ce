"""Rows of the Arrow IPC files that ``datasets.save_to_disk`` writes (``data-00000-of-00001.arrow``),
read with pyarrow (any column type, compressed and dictionary-encoded batches included)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...extras import require


def read_table(path: str | Path) -> Any:
    """The whole table (a ``pyarrow.Table``) of an Arrow IPC stream file (or, failing that, an IPC random-access
    file); needs the ``tasks`` extra (pyarrow)."""
    pa = require("pyarrow")
    require("pyarrow.ipc")
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"arrow file {str(p)!r} does not exist")
    with pa.memory_map(str(p)) as source:
        try:
            return pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            source.seek(0)
            try:
                return pa.ipc.open_file(source).read_all()
            except pa.ArrowInvalid as exc:
                raise ValueError(f"{p}: not an Arrow IPC stream or file ({exc})") from None


def read_arrow(path: str | Path) -> list[dict]:
    """Rows of an Arrow IPC file as dicts (lists for list columns, dicts for structs, None for nulls)."""
    return read_table(path).to_pylist()
