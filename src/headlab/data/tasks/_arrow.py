"""Minimal reader for the Arrow IPC *stream* files that ``datasets.save_to_disk`` writes
(``data-00000-of-00001.arrow``), so the offline task data needs neither pyarrow nor datasets.

Supports the column types those task files use: signed/unsigned ints, floats, bool, utf8 /
large_utf8 strings, list / large_list of those, struct of those; no compression, no dictionaries.
Format: https://arrow.apache.org/docs/format/Columnar.html (flatbuffers Message/Schema/RecordBatch).
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any


class _Table:
    """A flatbuffer table at ``pos`` in ``buf``."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        vt = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vt_len = struct.unpack_from("<H", buf, vt)[0]
        self.vt = vt

    def _off(self, i: int) -> int:
        o = 4 + 2 * i
        return struct.unpack_from("<H", self.buf, self.vt + o)[0] if o < self.vt_len else 0

    def scalar(self, i: int, fmt: str, default: Any = 0) -> Any:
        o = self._off(i)
        return struct.unpack_from("<" + fmt, self.buf, self.pos + o)[0] if o else default

    def _ref(self, i: int) -> int | None:
        o = self._off(i)
        if not o:
            return None
        p = self.pos + o
        return p + struct.unpack_from("<I", self.buf, p)[0]

    def table(self, i: int) -> "_Table | None":
        p = self._ref(i)
        return None if p is None else _Table(self.buf, p)

    def string(self, i: int) -> str | None:
        p = self._ref(i)
        if p is None:
            return None
        n = struct.unpack_from("<I", self.buf, p)[0]
        return self.buf[p + 4: p + 4 + n].decode("utf-8")

    def vector(self, i: int) -> tuple[int, int]:
        """(start, length) of a vector field (start = first element)."""
        p = self._ref(i)
        if p is None:
            return 0, 0
        return p + 4, struct.unpack_from("<I", self.buf, p)[0]

    def tables(self, i: int) -> list["_Table"]:
        start, n = self.vector(i)
        return [_Table(self.buf, start + 4 * k + struct.unpack_from("<I", self.buf, start + 4 * k)[0]) for k in range(n)]


# Type union ids (Schema.fbs)
_INT, _FLOAT, _UTF8, _BOOL, _LIST, _STRUCT, _LARGEUTF8, _LARGELIST = 2, 3, 5, 6, 12, 13, 20, 21


def _field(t: _Table) -> dict:
    ttype = t.scalar(2, "B")
    info: dict = {"name": t.string(0), "type": ttype, "children": [_field(c) for c in t.tables(5)]}
    tt = t.table(3)
    if ttype == _INT:
        info["bits"], info["signed"] = tt.scalar(0, "i"), bool(tt.scalar(1, "B"))
    elif ttype == _FLOAT:
        info["precision"] = tt.scalar(0, "h")  # 0 half, 1 single, 2 double
    elif ttype not in (_UTF8, _LARGEUTF8, _BOOL, _LIST, _LARGELIST, _STRUCT):
        raise ValueError(f"arrow column {info['name']!r}: unsupported type id {ttype}")
    return info


class _Batch:
    def __init__(self, body: bytes, nodes: list[tuple[int, int]], buffers: list[tuple[int, int]]) -> None:
        self.body, self.nodes, self.buffers = body, nodes, buffers
        self.ni = self.bi = 0

    def node(self) -> tuple[int, int]:
        n = self.nodes[self.ni]
        self.ni += 1
        return n

    def buffer(self) -> bytes:
        off, ln = self.buffers[self.bi]
        self.bi += 1
        return self.body[off: off + ln]


def _valid(bitmap: bytes, n: int, nulls: int) -> list[bool]:
    if nulls == 0 or not bitmap:
        return [True] * n
    return [bool(bitmap[i >> 3] >> (i & 7) & 1) for i in range(n)]


def _read(f: dict, b: _Batch) -> list:
    n, nulls = b.node()
    valid = _valid(b.buffer(), n, nulls)
    t = f["type"]
    if t == _INT:
        data = b.buffer()
        code = {8: "b", 16: "h", 32: "i", 64: "q"}[f["bits"]]
        code = code if f["signed"] else code.upper()
        vals = list(struct.unpack_from(f"<{n}{code}", data))
    elif t == _FLOAT:
        data = b.buffer()
        vals = list(struct.unpack_from(f"<{n}{'efd'[f['precision']]}", data))
    elif t == _BOOL:
        data = b.buffer()
        vals = [bool(data[i >> 3] >> (i & 7) & 1) for i in range(n)]
    elif t in (_UTF8, _LARGEUTF8):
        code = "i" if t == _UTF8 else "q"
        offs = struct.unpack_from(f"<{n + 1}{code}", b.buffer())
        data = b.buffer()
        vals = [data[offs[i]: offs[i + 1]].decode("utf-8") for i in range(n)]
    elif t in (_LIST, _LARGELIST):
        code = "i" if t == _LIST else "q"
        offs = struct.unpack_from(f"<{n + 1}{code}", b.buffer())
        child = _read(f["children"][0], b)
        vals = [child[offs[i]: offs[i + 1]] for i in range(n)]
    elif t == _STRUCT:
        cols = {c["name"]: _read(c, b) for c in f["children"]}
        vals = [{k: v[i] for k, v in cols.items()} for i in range(n)]
    else:  # pragma: no cover - rejected in _field
        raise ValueError(f"unsupported arrow type {t}")
    return [v if ok else None for v, ok in zip(vals, valid)]


def read_arrow(path: str | Path) -> list[dict]:
    """Rows of an Arrow IPC stream file as dicts."""
    buf = Path(path).read_bytes()
    pos, fields, rows = 0, None, []
    while pos + 8 <= len(buf):
        cont, size = struct.unpack_from("<Ii", buf, pos)
        if cont != 0xFFFFFFFF:  # pre-0.15 format: no continuation marker
            size, pos = cont, pos + 4
        else:
            pos += 8
        if size == 0:
            break
        meta = buf[pos: pos + size]
        pos += size
        msg = _Table(meta, struct.unpack_from("<I", meta, 0)[0])
        htype, body_len = msg.scalar(1, "B"), msg.scalar(3, "q")
        header = msg.table(2)
        body = buf[pos: pos + body_len]
        pos += body_len
        if htype == 1:
            fields = [_field(t) for t in header.tables(1)]
        elif htype == 3:
            if fields is None:
                raise ValueError(f"{path}: record batch before schema")
            if header.table(3) is not None:
                raise ValueError(f"{path}: compressed arrow batches are not supported")
            length = header.scalar(0, "q")
            s, k = header.vector(1)
            nodes = [struct.unpack_from("<qq", meta, s + 16 * i) for i in range(k)]
            s, k = header.vector(2)
            buffers = [struct.unpack_from("<qq", meta, s + 16 * i) for i in range(k)]
            bt = _Batch(body, nodes, buffers)
            cols = {f["name"]: _read(f, bt) for f in fields}
            rows += [{c: v[i] for c, v in cols.items()} for i in range(length)]
        elif htype == 2:
            raise ValueError(f"{path}: dictionary-encoded arrow columns are not supported")
    return rows
