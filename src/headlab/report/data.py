"""The report's data: read a scan folder, encode head maps compactly, build the JSON payload.

Scan folder contract (written by ``headlab scan``):
  heads.json     [{"layer", "head", <metric>: float|null, ..., "roles": [str]}]
  meta.json      {"model", "n_layers", "n_heads", "n_kv_heads", "headlab_version", "command",
                  "texts": [{"name", "n_tokens"}], "metrics", "formulas", "roles", "edits", "pattern"}
  baseline.json  optional, same format as heads.json (the grid without the edit/pattern)
  texts.json     optional, [{"name", "text", "ids"?}]: the scanned texts (and token ids), so maps
                 can be recomputed by `headlab report`

Compact encodings (gzip, then base64 inside the JSON; ``maps.encoding`` says "gzip", decoded by
``assets/report.js`` with the browser's own DecompressionStream):
  map       uint8 per cell, log scale: 0 below 1e-5, else q = 1 + round(254·(log10 v + 5)/5)
  topk_pos  uint16 (uint32 when N >= 65535) little-endian key positions, MISSING = all bits set
  topk_w    uint16 little-endian, w ≈ q / 65535
"""

from __future__ import annotations

import base64
import gzip
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.sites import format_site

LOG_FLOOR = -5.0  # log10 of the smallest weight shown on a map


@dataclass
class Scan:
    meta: dict[str, Any]
    heads: list[dict[str, Any]]
    baseline: list[dict[str, Any]] | None = None
    texts: list[dict[str, Any]] = field(default_factory=list)  # [{"name", "text", "ids"?}] when known

    @property
    def metrics(self) -> list[str]:
        names = list(self.meta.get("metrics") or [])
        if not names and self.heads:
            names = [
                k
                for k, v in self.heads[0].items()
                if k not in ("layer", "head", "roles") and (v is None or isinstance(v, (int, float)))
            ]
        return names


def _clean(records: Any, where: Path, n_layers: int | None = None, n_heads: int | None = None) -> list[dict[str, Any]]:
    if not isinstance(records, list):
        raise ValueError(f"{where}: expected a list of head records, got {type(records).__name__}")
    out = []
    for i, r in enumerate(records):
        if not isinstance(r, dict) or "layer" not in r or "head" not in r:
            raise ValueError(f"{where}: record {i} must be an object with 'layer' and 'head', got {r!r:.80}")
        layer, head = r["layer"], r["head"]
        if n_layers is not None and not 0 <= layer < n_layers:
            raise ValueError(f"{where}: record {i} has layer {layer}; valid layers are 0..{n_layers - 1}")
        if n_heads is not None and not 0 <= head < n_heads:
            raise ValueError(f"{where}: record {i} has head {head}; valid heads are 0..{n_heads - 1}")
        rec: dict[str, Any] = {"layer": int(layer), "head": int(head), "roles": [str(x) for x in r.get("roles") or []]}
        for k, v in r.items():
            if k in rec:
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                rec[k] = float(v) if math.isfinite(v) else None
            elif v is None:
                rec[k] = None
        out.append(rec)
    return out


def load_scan(folder: str | Path) -> Scan:
    """Read ``heads.json``, ``meta.json`` and (if present) ``baseline.json`` / ``texts.json``."""
    folder = Path(folder)
    for name in ("heads.json", "meta.json"):
        if not (folder / name).is_file():
            raise ValueError(
                f"{folder} is not a headlab scan folder: {name} is missing (run `headlab scan --out {folder}` first)"
            )
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    if not isinstance(meta, dict):
        raise ValueError(f"{folder / 'meta.json'}: expected an object")
    nl, nh = meta.get("n_layers"), meta.get("n_heads")
    heads = _clean(json.loads((folder / "heads.json").read_text(encoding="utf-8")), folder / "heads.json", nl, nh)
    baseline = None
    if (folder / "baseline.json").is_file():
        baseline = _clean(json.loads((folder / "baseline.json").read_text(encoding="utf-8")), folder / "baseline.json", nl, nh)
    texts: list[dict[str, str]] = []
    if (folder / "texts.json").is_file():
        texts = normalise_texts(json.loads((folder / "texts.json").read_text(encoding="utf-8")))
    if nl is None:
        meta["n_layers"] = 1 + max((r["layer"] for r in heads), default=-1)
    if nh is None:
        meta["n_heads"] = 1 + max((r["head"] for r in heads), default=-1)
    return Scan(meta, heads, baseline, texts)


def normalise_texts(texts: Any) -> list[dict[str, str]]:
    """Accept ``[str]``, ``{name: str}`` or ``[{"name", "text"}]``; return ``[{"name", "text"}]``."""
    if texts is None:
        return []
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(texts, dict):
        return [{"name": str(k), "text": str(v)} for k, v in texts.items()]
    out = []
    for i, t in enumerate(texts):
        if isinstance(t, str):
            out.append({"name": f"text{i}", "text": t})
        elif isinstance(t, dict) and isinstance(t.get("text"), str):
            rec = {"name": str(t.get("name", f"text{i}")), "text": t["text"]}
            if isinstance(t.get("ids"), list):  # token ids exactly as scanned (optional)
                rec["ids"] = [int(x) for x in t["ids"]]
            out.append(rec)
        else:
            raise ValueError(f"text {i}: expected a string or {{'name', 'text'}}, got {t!r:.80}")
    return out


# -- encodings --------------------------------------------------------------------------
ENCODINGS = ("raw", "gzip")
#: how head-map blobs are stored in the page: gzip shrinks a 2K-token atlas about 2.5x
PAGE_ENCODING = "gzip"


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def pack(s: str, encoding: str = PAGE_ENCODING) -> str:
    """A base64 blob (raw bytes) -> the same bytes stored with ``encoding`` ("raw" or "gzip"), base64."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if encoding == "raw":
        return s
    # mtime=0: the same maps give the same page bytes
    return base64.b64encode(gzip.compress(base64.b64decode(s), compresslevel=6, mtime=0)).decode("ascii")


def unpack(s: str, encoding: str = "raw") -> bytes:
    """Inverse of :func:`pack`: the raw bytes of a blob stored with ``encoding``."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    b = base64.b64decode(s)
    return gzip.decompress(b) if encoding == "gzip" else b


def encode_map(m: np.ndarray) -> str:
    """(R, C) weights in [0, 1] (NaN = unseen) -> base64 of uint8 log-scale codes."""
    v = np.nan_to_num(np.asarray(m, dtype=np.float64), nan=0.0)
    with np.errstate(divide="ignore"):
        lg = np.log10(np.clip(v, 1e-30, None))
    q = np.where(lg >= LOG_FLOOR, 1 + np.rint(254 * (lg - LOG_FLOOR) / -LOG_FLOOR), 0)
    return _b64(np.clip(q, 0, 255).astype(np.uint8))


def decode_map(s: str, rows: int, cols: int, encoding: str = "raw") -> np.ndarray:
    """Inverse of ``encode_map`` (for tests; ``encoding`` as stored, see :func:`pack`): codes -> weights."""
    q = np.frombuffer(unpack(s, encoding), dtype=np.uint8).reshape(rows, cols).astype(np.float64)
    return np.where(q > 0, 10.0 ** ((q - 1) * -LOG_FLOOR / 254 + LOG_FLOOR), 0.0)


def pos_dtype(n_tokens: int) -> np.dtype:
    return np.dtype("<u2") if n_tokens < 0xFFFF else np.dtype("<u4")


def encode_topk(pos: np.ndarray, w: np.ndarray, n_tokens: int) -> tuple[str, str, int]:
    """(N, k) positions (-1 unseen) and weights -> (b64 positions, b64 weights, bytes per position)."""
    dt = pos_dtype(n_tokens)
    missing = np.iinfo(dt).max
    p = np.where(pos < 0, missing, pos).astype(dt)
    q = np.rint(np.clip(np.nan_to_num(w, nan=0.0), 0, 1) * 65535).astype("<u2")
    return _b64(p), _b64(q), dt.itemsize


def b64_len(n_bytes: int) -> int:
    return 4 * ((n_bytes + 2) // 3)


def map_bytes(n_tokens: int, px: int, topk: int) -> int:
    """Payload characters of one head's map (+ top-k) at ``n_tokens`` tokens (with JSON overhead), stored raw.

    An upper bound for the page's gzip encoding (the planner stays conservative; gzip never grows these
    blobs by more than its ~20-byte header, which the JSON overhead covers)."""
    r = min(n_tokens, px)
    size = b64_len(r * r) + 80
    if topk:
        size += b64_len(n_tokens * topk * pos_dtype(n_tokens).itemsize) + b64_len(n_tokens * topk * 2)
    return size


def head_payload(hm, *, kind: str, encoding: str = PAGE_ENCODING) -> dict[str, Any]:
    """JSON-ready dict of one ``HeadMap``; blobs stored with ``encoding`` (see :func:`pack`)."""
    rows, cols = hm.map.shape
    d: dict[str, Any] = {"kind": kind, "rows": int(rows), "cols": int(cols), "map": pack(encode_map(hm.map), encoding)}
    if hm.topk_pos is not None:
        p, w, nb = encode_topk(hm.topk_pos, hm.topk_w, hm.n_tokens)
        d.update(k=int(hm.topk_pos.shape[1]), topk_pos=pack(p, encoding), topk_w=pack(w, encoding), pos_bytes=nb)
    return d


#: the report's name for :func:`headlab.engine.sites.format_site` ("L12H3")
site_key = format_site
