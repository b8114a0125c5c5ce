"""Partial scans: the probe sums and counts of a share of the texts, saved, loaded and merged exactly.

Every query metric of a scan is (sum over valid queries) / (number of valid queries), kept in float64
by the probes (``Probe.state_dict``). A scan over a share of the texts (``headlab scan --shard i/n``,
or one Ray task) therefore keeps its sums and counts instead of its means, and the shares add up to
the scan of all texts, up to float64 summation order. The protocol metrics (induction, retrieval)
do not read the texts; shard 1 computes them once.

A partial is a folder holding ``partial.json`` (format ``headlab-scan-partial/1``): ``meta`` (model
name and fingerprint, metrics, headlab version, texts digest, shard, scan options), the shard's
``texts`` (index, text, token ids), ``states`` ({metric: {"total", "count"}} as float64 lists),
``fixed`` (protocol metric values, shard 1 only), ``retrieval_cases`` and ``baseline`` (the same
without the edits, when the scan had edits).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..io import atomic_dir, atomic_write_json

FORMAT = "headlab-scan-partial/1"
FILE = "partial.json"
#: meta fields that every partial of one scan shares; merging checks them
MUST_MATCH = (
    "format",
    "fingerprint",
    "metrics",
    "headlab_version",
    "texts_digest",
    "n_texts",
    "max_tokens",
    "prefix",
    "edits",
    "n_layers",
    "n_heads",
    "causal",
    "retrieval_lengths",
)


def parse_shard(spec: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"i/n"`` -> (i, n) with 1 <= i <= n (shard i of n, counted from 1); None stays None."""
    if spec is None:
        return None
    if isinstance(spec, tuple):
        i, n = spec
    else:
        parts = str(spec).split("/")
        try:
            if len(parts) != 2:
                raise ValueError
            i, n = int(parts[0]), int(parts[1])
        except ValueError:
            raise ValueError(f"--shard {spec!r} must look like i/n (shard i of n, e.g. 1/4)") from None
    if n < 1 or not 1 <= i <= n:
        raise ValueError(
            f"--shard {i}/{n}: n must be >= 1 and i in 1..n (shards count from 1)" + (f", i.e. 1..{n}" if n >= 1 else "")
        )
    return i, n


def shard_indices(n_texts: int, shard: tuple[int, int] | None) -> list[int]:
    """Indices of the texts of shard (i, n): a contiguous, balanced block; all texts for None."""
    if shard is None:
        return list(range(n_texts))
    i, n = shard
    if n > n_texts:
        raise ValueError(f"--shard {i}/{n}: {n} shards for {n_texts} texts; use at most {n_texts} shards")
    return list(range((i - 1) * n_texts // n, i * n_texts // n))


def texts_digest(ids: list[torch.Tensor]) -> str:
    """First 16 hex digits of sha256 over the token ids of every text (all shards see the same)."""
    h = hashlib.sha256()
    for x in ids:
        h.update(json.dumps(x.reshape(-1).tolist()).encode())
        h.update(b"|")
    return h.hexdigest()[:16]


def model_fingerprint(model) -> str:
    """First 16 hex digits of sha256 over the model's config (without paths and versions), its dtype
    and, per parameter, name, shape and its first 256 values: two checkpoints of one shape differ."""
    cfg = {
        k: v
        for k, v in model.config.to_dict().items()
        if not k.startswith("_") and k not in ("transformers_version", "name_or_path")
    }
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode())
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        head = p.detach().reshape(-1)[:256].to("cpu", torch.float32)
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        h.update(head.numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class ScanPart:
    """The state of a scan over some of its texts (see the module docstring); ``baseline``: the same
    scan without the edits."""

    meta: dict
    texts: list[dict]
    states: dict[str, dict[str, torch.Tensor]]
    fixed: dict[str, torch.Tensor] = field(default_factory=dict)
    retrieval_cases: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    baseline: ScanPart | None = None

    def stats(self) -> dict[str, torch.Tensor]:
        """{metric: (layers, heads) float32}: query metrics as total / count (as ``Probe.result``),
        then the protocol metrics, in the scan's metric order."""
        out = {m: (s["total"] / s["count"]).to(torch.float32) for m, s in self.states.items()}
        out.update({m: v.to(torch.float32) for m, v in self.fixed.items()})
        return {m: out[m] for m in self.meta["metrics"] if m in out}

    def to_json(self) -> dict:
        return {
            "meta": self.meta,
            "texts": self.texts,
            "states": {m: {k: s[k].tolist() for k in ("total", "count")} for m, s in self.states.items()},
            "fixed": {m: v.to(torch.float64).tolist() for m, v in self.fixed.items()},
            "retrieval_cases": self.retrieval_cases,
            "seconds": self.seconds,
            "baseline": None if self.baseline is None else self.baseline.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict, where: str = "partial") -> ScanPart:
        try:
            if d["meta"].get("format") != FORMAT:
                raise ValueError(f"{where}: format {d['meta'].get('format')!r} is not {FORMAT!r}")
            f64 = torch.float64
            return cls(
                meta=d["meta"],
                texts=list(d["texts"]),
                states={m: {k: torch.tensor(s[k], dtype=f64) for k in ("total", "count")} for m, s in d["states"].items()},
                fixed={m: torch.tensor(v, dtype=f64) for m, v in d["fixed"].items()},
                retrieval_cases=list(d.get("retrieval_cases", [])),
                seconds=float(d.get("seconds", 0.0)),
                baseline=None if d.get("baseline") is None else cls.from_json(d["baseline"], where),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{where} is not a headlab scan partial ({FORMAT}): missing or bad field {exc}") from None


def save_part(folder: Path, part: ScanPart) -> Path:
    """Write ``folder/partial.json`` atomically (the whole folder appears at once); returns the file."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {str(folder)!r} exists and is not a folder")
    with atomic_dir(folder) as stage:
        atomic_write_json(stage / FILE, part.to_json())
    return folder / FILE


def load_part(folder: Path) -> ScanPart:
    """Read a partial from a folder that ``save_part`` wrote (or the ``partial.json`` itself)."""
    p = Path(folder)
    f = p / FILE if p.is_dir() else p
    if not f.exists():
        raise ValueError(f"{str(folder)!r} holds no {FILE}: give folders written by `headlab scan --shard i/n --out DIR`")
    try:
        d = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(f)!r} is not valid JSON: {exc}") from None
    return ScanPart.from_json(d, where=str(f))


def merge_parts(parts: list[ScanPart], names: list[str] | None = None) -> ScanPart:
    """One ScanPart for all texts from the partials of shards 1..n (any order). Refuses partials of
    different models / metrics / headlab versions / texts / options, overlapping and missing shards,
    naming the value and the partial."""
    if not parts:
        raise ValueError("merge needs at least one partial")
    names = names or [f"partial #{k}" for k in range(len(parts))]
    ref = parts[0].meta
    for p, name in zip(parts[1:], names[1:], strict=True):
        for key in MUST_MATCH:
            if p.meta.get(key) != ref.get(key):
                what = {
                    "fingerprint": "models",
                    "metrics": "metrics",
                    "headlab_version": "headlab versions",
                    "texts_digest": "texts",
                }.get(key, key)
                extra = f" (models {ref.get('model')!r} and {p.meta.get('model')!r})" if key == "fingerprint" else ""
                raise ValueError(
                    f"cannot merge partials of different {what}: {key} = {ref.get(key)!r} in {names[0]} "
                    f"but {p.meta.get(key)!r} in {name}{extra}"
                )
    n = int(ref["shard"][1])
    for p, name in zip(parts, names, strict=True):
        if int(p.meta["shard"][1]) != n:
            raise ValueError(
                f"cannot merge shards of different splits: {names[0]} is of {n} shards, "
                f"{name} is shard {p.meta['shard'][0]}/{p.meta['shard'][1]}"
            )
    seen: dict[int, str] = {}
    for p, name in zip(parts, names, strict=True):
        i = int(p.meta["shard"][0])
        if i in seen:
            raise ValueError(f"overlapping partials: shard {i}/{n} is both {seen[i]} and {name}")
        seen[i] = name
    missing = [i for i in range(1, n + 1) if i not in seen]
    if missing:
        raise ValueError(
            f"missing shards {', '.join(f'{i}/{n}' for i in missing)}: got {len(seen)} of {n} "
            f"({', '.join(f'{i}/{n}' for i in sorted(seen))})"
        )
    return _combine(sorted(parts, key=lambda p: int(p.meta["shard"][0])))


def _combine(parts: list[ScanPart]) -> ScanPart:
    """Add the states of ``parts`` (already checked) into one part covering every text."""
    first = parts[0]
    states: dict[str, dict[str, torch.Tensor]] = {}
    for p in parts:
        for m, s in p.states.items():
            if m not in states:
                states[m] = {k: s[k].to(torch.float64).clone() for k in ("total", "count")}
            else:
                for k in ("total", "count"):
                    states[m][k] += s[k].to(torch.float64)
    fixed: dict[str, torch.Tensor] = {}
    cases: list[dict] = []
    for p in parts:
        fixed.update(p.fixed)
        cases += p.retrieval_cases
    texts = sorted((t for p in parts for t in p.texts), key=lambda t: t["index"])
    meta = dict(first.meta, shard=[1, 1], model=first.meta.get("model"))
    base = None
    if all(p.baseline is not None for p in parts):
        base = _combine([p.baseline for p in parts if p.baseline is not None])
    return ScanPart(
        meta=meta,
        texts=texts,
        states=states,
        fixed=fixed,
        retrieval_cases=cases,
        seconds=round(sum(p.seconds for p in parts), 1),
        baseline=base,
    )
