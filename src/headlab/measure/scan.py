"""``headlab scan``: every head of a model through the streaming probes, then roles, files, plot."""
from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.tasks.user_file import is_task_file, read_texts_file
from ..engine.hf import attach, model_shape
from ..frames import records_frame
from ..io import atomic_dir, atomic_write_json
from ..probes import REGISTRY, HeadMapProbe, query_probe_names
from ..report.files import write_meta, write_records
from ..report.inline import scan_html
from ..report.maps import display_tokens
from ..report.png import atlas_png
from ..version import __version__
from .atlas import ROLE_RULES, records, role_metrics, uniform_entropy
from .induction import induction_scores
from .retrieval import retrieval_scores
from .stats import check_input, forward_for_attention

#: every head metric a scan can compute (the probe registry, in its order)
ALL_METRICS = tuple(REGISTRY.names())


def formulas(metrics) -> dict[str, str]:
    """{metric: formula (paper)} from the probe classes, as written into meta.json."""
    out = {}
    for m in metrics:
        cls = REGISTRY.get(m)
        out[m] = cls.formula + (f" [{cls.paper}]" if cls.paper else "")
    return out


def parse_metrics(spec: str | list[str]) -> list[str]:
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [m.strip() for m in items if m.strip()]
    if items == ["all"]:
        return list(ALL_METRICS)
    bad = [m for m in items if m not in ALL_METRICS]
    if bad or not items:
        raise ValueError(f"unknown metrics {bad or items}: choose from {', '.join(ALL_METRICS)} or 'all'")
    return items


def read_texts(path: Path, text_field: str = "text") -> list[str]:
    """Texts from a file: a .jsonl / .csv file's ``text_field`` (one text per row), else paragraphs
    separated by blank lines (UTF-8)."""
    if is_task_file(path):
        return read_texts_file(path, text_field)
    if not path.exists():
        raise ValueError(f"texts file {str(path)!r} does not exist")
    raw = path.read_text(encoding="utf-8")
    texts = [t.strip() for t in raw.replace("\r\n", "\n").split("\n\n") if t.strip()]
    if not texts:
        raise ValueError(f"texts file {str(path)!r} is empty: give at least one paragraph of text")
    return texts


@dataclass
class ScanResult:
    """What ``run_scan`` returns. ``maps``: block-averaged attention maps of a few telling heads on
    the first text (``HeadMap`` by (layer, head)), ``tokens`` that text's tokens, for the inline view."""

    records: list[dict]
    stats: dict[str, torch.Tensor]
    meta: dict
    out: Path | None = None
    token_ids: list[torch.Tensor] = field(default_factory=list)
    maps: dict = field(default_factory=dict)
    tokens: list[str] | None = None

    def to_frame(self):
        """pandas DataFrame, one row per (layer, head): layer, head, site, metrics, roles (``headlab[frames]``)."""
        return records_frame(self.records, self.meta["metrics"])

    def show(self, head=None, metric: str | None = None) -> str:
        """HTML of the head grid (coloured by ``metric``) and one head (``"L3H1"`` or (3, 1)) up close."""
        return scan_html(self, head=head, metric=metric)

    def _repr_html_(self) -> str:
        return scan_html(self)


def telling_heads(recs: list[dict], metrics: list[str], k: int) -> list[tuple[int, int]]:
    """Up to ``k`` heads worth a map: the strongest head of each role found, then the strongest
    heads of the first metric."""
    out: list[tuple[int, int]] = []
    for role, (m, higher) in role_metrics().items():
        hs = [r for r in recs if role in r["roles"] and r.get(m) is not None]
        if hs:
            best = max(hs, key=lambda r: r[m] if higher else -r[m])
            out.append((best["layer"], best["head"]))
    first = metrics[0]
    for r in sorted((r for r in recs if r.get(first) is not None), key=lambda r: -r[first]):
        out.append((r["layer"], r["head"]))
    seen: list[tuple[int, int]] = []
    for site in out:
        if site not in seen:
            seen.append(site)
    return seen[:k]


def record_maps(model, ids: torch.Tensor, sites: list[tuple[int, int]], edits=(), px: int = 64) -> dict:
    """Block-averaged maps (``HeadMap``) of ``sites`` on one text (1, T), from one forward pass."""
    probe = HeadMapProbe(sites=sites, px=px)
    with attach(model, probes=[probe], edits=list(edits)):
        forward_for_attention(model, ids)
    return probe.maps()


def tokenize_texts(tok, texts: list[str], max_tokens: int, max_context: int | None, prefix: str | None = None) -> list[torch.Tensor]:
    """Token ids (1, <= max_tokens) per text. ``prefix``: a special token (e.g. "<|endoftext|>") put
    first, so that it — not the first word of the text — is the initial token (the usual sink)."""
    pre: list[int] = []
    if prefix:
        pid = tok.convert_tokens_to_ids(prefix)
        if pid is None or pid == tok.unk_token_id:
            raise ValueError(f"--prefix {prefix!r} is not a single token of this tokenizer (e.g. {tok.eos_token!r})")
        pre = [pid]
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be >= 2, got {max_tokens}")
    if max_context is not None and max_tokens > max_context:
        raise ValueError(f"max_tokens {max_tokens} is longer than the model's context: valid values are 2..{max_context}")
    out = []
    for i, t in enumerate(texts):
        ids = tok(t, return_tensors="pt", truncation=False)["input_ids"]
        ids = torch.cat([torch.tensor([pre], dtype=torch.long).view(1, -1), ids], dim=1)[:, :max_tokens]
        if ids.shape[1] == 0:
            raise ValueError(f"text #{i} is empty after tokenisation; every text needs at least one token")
        out.append(ids)
    return out


def run_scan(model, tok, model_name: str, texts: list[str], metrics: list[str], max_tokens: int = 512,
             out: Path | None = None, tick: Callable[[str], None] | None = None, command: str | None = None,
             edits=(), retrieval_lengths=(500, 1000), prefix: str | None = None, head_maps: int = 4) -> ScanResult:
    """Scan ``texts`` with ``metrics``; write DIR/heads.json, heads.csv, meta.json, atlas.png when ``out``.

    ``head_maps``: keep the attention maps of this many telling heads on the first text (one more
    forward pass) for the inline notebook view; 0 = none."""
    if not isinstance(head_maps, int) or head_maps < 0:
        raise ValueError(f"head_maps must be an int >= 0, got {head_maps!r}")
    tick = tick or (lambda msg: None)
    n_layers, n_heads, n_kv = model_shape(model)
    causal_lm = hasattr(model, "generate") and hasattr(model, "lm_head")
    if "retrieval" in metrics and not causal_lm:
        raise ValueError("the retrieval metric needs a generative (causal LM) model; drop it with --metrics for encoders")
    ids = tokenize_texts(tok, texts, max_tokens, getattr(model.config, "max_position_embeddings", None), prefix)
    t0 = time.time()
    stats: dict[str, torch.Tensor] = {}
    query = [m for m in metrics if m in query_probe_names()]
    if query:
        with attach(model, probes=query, edits=list(edits)) as run:
            for i, x in enumerate(ids):
                check_input(model, x)
                forward_for_attention(model, x)
                tick(f"text {i + 1}/{len(ids)} ({x.shape[1]} tokens)")
        stats.update(run.stats())
    if "induction" in metrics:
        stats["induction"] = induction_scores(model, n=50, batch=8, seed=0, edits=edits)
        tick("induction (8 x repeated 50 random tokens)")
    cases = []
    if "retrieval" in metrics:
        stats["retrieval"], cases = retrieval_scores(model, tok, lengths=retrieval_lengths, edits=edits,
                                                       progress=lambda: tick("retrieval case"))
    stats = {m: stats[m] for m in metrics}
    lengths = [int(x.shape[1]) for x in ids]
    causal = bool(getattr(model.config, "is_decoder", False)) or causal_lm
    recs = records(stats, uniform_entropy(lengths, causal))
    meta = {
        "model": model_name,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "n_kv_heads": n_kv,
        "headlab_version": __version__,
        "command": command or " ".join(shlex.quote(a) for a in sys.argv),
        "texts": [{"name": f"text{i}", "n_tokens": n} for i, n in enumerate(lengths)],
        "metrics": list(metrics),
        "formulas": formulas(metrics),
        "roles": ROLE_RULES,
        "uniform_entropy": uniform_entropy(lengths, causal),
        "prefix_token": prefix,
        "edits": [e.describe() for e in edits],
        "pattern": None,
        "retrieval_cases": [{"n_tokens": c.n_tokens, "depth": c.depth, "needle": c.needle, "answer": c.answer,
                             "recall": round(c.recall, 3)} for c in cases],
        "seconds": round(time.time() - t0, 1),
    }
    base_recs = None
    if edits:
        tick("baseline scan without the edits")
        base = run_scan(model, tok, model_name, texts, metrics, max_tokens=max_tokens, out=None, tick=tick,
                        command=command, edits=(), retrieval_lengths=retrieval_lengths, prefix=prefix, head_maps=0)
        base_recs = base.records
    res = ScanResult(recs, stats, meta, out, ids)
    if head_maps and ids:
        res.maps = record_maps(model, ids[0], telling_heads(recs, list(metrics), head_maps), edits)
        res.tokens = display_tokens(tok, ids[0][0].tolist())
    if out is not None:
        with atomic_dir(out) as stage:
            write_records(stage, recs, list(metrics))
            if base_recs is not None:
                atomic_write_json(stage / "baseline.json", base_recs)
            write_meta(stage, meta)
            atomic_write_json(stage / "texts.json", [{"name": f"text{i}", "text": t, "ids": ids[i][0].tolist()}
                                                     for i, t in enumerate(texts)])
            atlas_png(stage / "atlas.png", recs, list(metrics), title=f"{model_name}: head atlas")
    return res
