"""Calibration text from the user's own file (``headlab sparsify plan --calib FILE``).

The profiling planners (``retrieval``, ``duo``, ``moa``) build their calibration items from prose:
needles or facts inserted into a haystack, or a document followed by an instruction. By default
that prose is CPython's pydoc help text (``headlab.data.prose``); a :class:`CalibText` replaces it
with the text of one file, and the planners keep their own construction around it:

* ``*.jsonl``: one JSON object per line with a string ``"text"`` field (blank lines are skipped);
  the documents are joined by a blank line;
* any other suffix: UTF-8 text (a BOM is dropped), used as it is, with line endings made ``\\n``.

An item that needs n tokens of prose takes n consecutive tokens of the file's text, from a
seed-chosen start moved to just after a sentence end when one is near. The text is never tiled or
repeated (a repeat plants copies that the profilers would take for long-range retrieval), so a
file with fewer tokens than the method's longest calibration item is refused, naming the file,
its token count and the count needed.

    calib = read_calib("notes.txt")
    calib.sha256, calib.n_tokens(tok)               # identity of the bytes; tokens of the text
    calib.window_ids(tok, 1000, seed=3)             # 1000 consecutive token ids of the text
    calib.haystack(tok, 1000, seed=3)               # the same window as text (``prose.haystack``'s signature)
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

from .jsonl import jsonl_rows

#: file suffixes read as JSON lines (any other suffix is plain text)
JSONL_SUFFIXES = (".jsonl",)
#: the field of a .jsonl row that holds its text
TEXT_FIELD = "text"
#: a window's start moves forward at most this many tokens to follow a sentence end
SNAP_TOKENS = 64


@dataclass(frozen=True, eq=False)
class CalibText:
    """The text of a calibration file. ``label`` names the file in messages (e.g. ``--calib``);
    ``sha256`` is the hex digest of the file's bytes (the identity the profile caches key on)."""

    path: str
    sha256: str
    text: str = field(repr=False)
    format: str = "text"  # "text" or "jsonl"
    documents: int = 1
    label: str = "calibration file"
    _ids: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------------------------ tokens
    def ids(self, tokenizer) -> list[int]:
        """Token ids of the whole text (no special tokens); computed once per tokenizer."""
        if self._ids.get("tokenizer") is not tokenizer:
            ids = [int(i) for i in tokenizer(self.text, add_special_tokens=False)["input_ids"]]
            self._ids.clear()
            self._ids.update(tokenizer=tokenizer, ids=ids)
        return self._ids["ids"]

    def n_tokens(self, tokenizer) -> int:
        return len(self.ids(tokenizer))

    def require(self, tokenizer, needed: int, what: str) -> int:
        """The text's token count; ValueError naming the file, its count and ``needed`` when it holds fewer."""
        if tokenizer is None:
            raise ValueError(f"{self.label} {self.path!r} needs a tokenizer to be turned into calibration items")
        n = self.n_tokens(tokenizer)
        if n < needed:
            raise ValueError(
                f"{self.label} {self.path!r} holds {n} tokens; {what} needs at least {needed} tokens of it. "
                "Give a longer text (it is never repeated) or shorter calibration lengths (--opt)"
            )
        return n

    def window_ids(self, tokenizer, n: int, seed: int = 0) -> list[int]:
        """Exactly ``n`` consecutive token ids of the text, from a start fixed by (``seed``, ``n``) and moved
        to just after the next sentence end within :data:`SNAP_TOKENS` tokens when the window still fits."""
        ids = self.ids(tokenizer)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"a calibration window must be an integer >= 1 tokens, got {n!r}")
        self.require(tokenizer, n, f"a calibration item of {n} tokens")
        span = len(ids) - n
        start = random.Random(int(seed) * 1_000_003 + n).randint(0, span) if span else 0
        if start:
            for j in range(start, min(span, start + SNAP_TOKENS) + 1):
                if tokenizer.decode(ids[j - 1 : j]).rstrip().endswith((".", "!", "?")):
                    start = j
                    break
        return ids[start : start + n]

    def haystack(self, tokenizer, n_tokens: int, seed: int = 0) -> str:
        """About ``n_tokens`` tokens of the text (:meth:`window_ids` decoded): a drop-in for ``prose.haystack``."""
        return tokenizer.decode(self.window_ids(tokenizer, n_tokens, seed))

    # ------------------------------------------------------------------------------------ records
    def source(self, tokenizer=None) -> dict:
        """What a plan records: file, sha256 of its bytes, format, documents and (with a tokenizer) tokens."""
        out: dict = {"file": self.path, "sha256": self.sha256, "format": self.format, "documents": self.documents}
        if tokenizer is not None:
            out["tokens"] = self.n_tokens(tokenizer)
        return out


def read_calib(path: str | Path, label: str = "calibration file") -> CalibText:
    """The calibration text of ``path`` (.jsonl: the ``"text"`` field of every row; else UTF-8 text).

    A missing, unreadable, empty or non-UTF-8 file, or a bad .jsonl row, raises ValueError naming it
    (as ``label``, e.g. ``--calib``) and what is wrong."""
    p = Path(path)
    name = f"{label} {str(p)!r}"
    if not p.exists():
        raise ValueError(f"{name} does not exist")
    if p.is_dir():
        raise ValueError(f"{name} is a folder; give a UTF-8 text file or a .jsonl file with a {TEXT_FIELD!r} field per line")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ValueError(f"{name} cannot be read: {exc.strerror or exc}") from None
    try:
        decoded = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{name} is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} ({exc.reason}); "
            "convert it to UTF-8 first (e.g. iconv -t UTF-8)"
        ) from None
    decoded = decoded.replace("\r\n", "\n").replace("\r", "\n")
    jsonl = p.suffix.lower() in JSONL_SUFFIXES
    if jsonl:
        docs = []
        for line_no, row in jsonl_rows(decoded.split("\n"), lambda n: f"{name} line {n}"):
            if not isinstance(row.get(TEXT_FIELD), str):
                raise ValueError(f"{name} line {line_no}: each row needs a string {TEXT_FIELD!r} field, got {sorted(row)}")
            if row[TEXT_FIELD].strip():
                docs.append(row[TEXT_FIELD].strip())
        text = "\n\n".join(docs)
    else:
        docs = [decoded]
        text = decoded.strip()
    if not text.strip():
        what = f"no row with a non-empty {TEXT_FIELD!r} field" if jsonl else "no text"
        raise ValueError(f"{name} is empty ({what}); give the prose to calibrate on")
    return CalibText(
        path=str(p),
        sha256=hashlib.sha256(raw).hexdigest(),
        text=text,
        format="jsonl" if jsonl else "text",
        documents=len(docs),
        label=label,
    )


def as_calib(value, label: str = "calib") -> CalibText | None:
    """None, a :class:`CalibText`, or a path read with :func:`read_calib`; anything else is a ValueError."""
    if value is None or isinstance(value, CalibText):
        return value
    if isinstance(value, (str, Path)):
        return read_calib(value, label)
    raise ValueError(f"{label} must be a path to a text or .jsonl file, got {value!r}")
