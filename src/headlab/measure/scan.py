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
from ..engine.frames import records_frame
from ..engine.hf import attach, model_shape
from ..engine.view import HtmlView
from ..io import atomic_dir, atomic_write_json
from ..probes import DEFAULT_METRICS as PROBE_DEFAULTS
from ..probes import REGISTRY, HeadMapProbe, query_probe_names
from ..probes.magnet import magnet_ids
from ..probes.roles import ROLE_RULES, records, role_metrics, uniform_entropy
from ..report.figure import PlotFigure
from ..report.files import write_meta, write_records
from ..report.inline import scan_html
from ..report.maps import display_tokens
from ..report.png import atlas_figure, atlas_png, choose_metrics
from ..version import __version__
from .dilution import group_formula, group_metric_names, group_states, parse_group, parse_groups, with_group_ratios
from .induction import induction_scores
from .retrieval import retrieval_scores
from .shard import FORMAT as SHARD_FORMAT
from .shard import ScanPart, model_fingerprint, parse_shard, shard_indices, texts_digest
from .stats import check_input, forward_for_attention

#: every head metric a scan can compute (the probe registry, in its order)
ALL_METRICS = tuple(REGISTRY.names())
#: what a scan computes when no metric is named (``metrics="default"``): every per-text probe in it has a
#: map-free form next to SDPA; ``entropy`` and ``global_sink`` are opt-in (see ``headlab.probes.DEFAULT_METRICS``)
DEFAULT_METRICS = tuple(m for m in ALL_METRICS if m in PROBE_DEFAULTS)

#: per-head columns added by ``importance=True`` (:mod:`headlab.measure.importance`): {column: formula}
IMPORTANCE_COLUMNS = {
    "importance_kl": "mean over real positions of KL(p || p with the head mean-ablated), nats [arXiv 1905.10650]",
    "importance_taylor": "first-order Taylor estimate of the next-token loss change when the head is mean-ablated, "
    "sum of (mean - o_h) . dNLL/do_h [arXiv 1905.10650, 1611.06440]",
}


def formulas(metrics) -> dict[str, str]:
    """{metric: formula (paper)} from the probe classes, as written into meta.json."""
    out = {}
    for m in metrics:
        if m in IMPORTANCE_COLUMNS:
            out[m] = IMPORTANCE_COLUMNS[m]
            continue
        if group_formula(m) is not None:  # --group metrics: share:<g>, aei:<g>, mdi:<a>/<b>
            out[m] = group_formula(m)
            continue
        cls = REGISTRY.get(m)
        out[m] = cls.formula + (f" [{cls.paper}]" if cls.paper else "")
    return out


def parse_metrics(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """Metric names from a comma list or a list; ``all`` = every metric, ``default`` = :data:`DEFAULT_METRICS`
    (both may be combined with names, e.g. ``default,entropy``); duplicates are dropped, order kept."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [m.strip() for m in items if m.strip()]
    out: list[str] = []
    for m in items:
        for x in ALL_METRICS if m == "all" else DEFAULT_METRICS if m == "default" else (m,):
            if x not in out:
                out.append(x)
    bad = [m for m in out if m not in ALL_METRICS]
    if bad or not out:
        raise ValueError(f"unknown metrics {bad or items}: choose from {', '.join(ALL_METRICS)}, 'default' or 'all'")
    return out


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

    def show(self, head=None, metric: str | None = None) -> HtmlView:
        """The head grid (coloured by ``metric``, default the first) and one head (``"L3H1"`` or (3, 1)) up
        close, as an :class:`~headlab.engine.view.HtmlView`: a notebook renders it, ``str(view)`` is the HTML.
        The roles follow the probe classes' rules (e.g. sinks after Xiao et al., arXiv 2309.17453)."""
        return HtmlView(scan_html(self, head=head, metric=metric))

    def plot(self, metric: str | list[str] | None = None) -> PlotFigure:
        """The head atlas as a ``matplotlib.figure.Figure`` (no pyplot): one layer x head heatmap per metric
        (``metric``: a name, a comma list or a list; default every metric of the scan), role letters in the
        cells, as ``atlas.png``. Each metric's formula and paper: ``res.meta["formulas"]``."""
        metrics = choose_metrics(metric, self.meta["metrics"], "this scan")
        return atlas_figure(self.records, metrics, title=f"{self.meta.get('model', 'model')}: head atlas")

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


def tokenize_texts(
    tok, texts: list[str], max_tokens: int, max_context: int | None, prefix: str | None = None
) -> list[torch.Tensor]:
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


def text_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices of the texts grouped into batches of up to ``batch_size``, longest first (less padding)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    order = sorted(range(len(lengths)), key=lambda k: (-lengths[k], k))
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def pad_batch(ids: list[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Texts (1, T_k) -> input_ids (B, T) padded on the right and attention_mask (B, T) (None when no
    row is padded). Right padding keeps every real token at its own position; pad queries and keys
    are masked, so each row's statistics are those of the text alone."""
    T = max(int(x.shape[1]) for x in ids)
    out = torch.full((len(ids), T), int(pad_id), dtype=torch.long)
    mask = torch.zeros(len(ids), T, dtype=torch.long)
    for r, x in enumerate(ids):
        out[r, : x.shape[1]] = x[0]
        mask[r, : x.shape[1]] = 1
    return out, (None if bool(mask.all()) else mask)


def query_states(
    model,
    ids: list[torch.Tensor],
    metrics: list[str],
    edits=(),
    batch_size: int = 1,
    tick: Callable[[str], None] | None = None,
    tok=None,
) -> dict[str, dict]:
    """{metric: probe state (float64 sums and counts, ``Probe.state_dict``)} of the query metrics over
    the texts ``ids`` (each (1, T_k)), run ``batch_size`` texts per forward pass. ``tok``: the
    tokenizer, for probes that read the tokens (``magnet``: ``ctx.state["input_ids"]``, ``["magnet_ids"]``)."""
    tick = tick or (lambda msg: None)
    query = [m for m in metrics if m in query_probe_names()]
    if not query or not ids:
        return {}
    state: dict = {}
    if "magnet" in query:
        if tok is None:
            raise ValueError("the magnet metric needs the tokenizer (which tokens are stop words)")
        state["magnet_ids"] = magnet_ids(tok, [i for x in ids for i in x.reshape(-1).tolist()])
    with attach(model, probes=query, edits=list(edits), state=state) as run:
        for batch in text_batches([int(x.shape[1]) for x in ids], batch_size):
            x, mask = pad_batch([ids[k] for k in batch])
            check_input(model, x, mask)
            run.state["input_ids"] = x  # (B, T): each key's token, for probes that read it
            forward_for_attention(model, x, mask)
            for k in batch:
                tick(f"text {k + 1}/{len(ids)} ({ids[k].shape[1]} tokens)")
    return {p.name: p.state_dict() for p in run.probes}


def importance_columns(model, ids: list[torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """Head importance on the texts ``ids`` (each (1, T_k), right-padded into one batch):
    ({"importance_kl", "importance_taylor"}: (L, H) each, the summary with the Spearman correlation
    of KL with |Taylor|), from :func:`headlab.measure.importance.head_importance`."""
    from .importance import head_importance

    x, mask = pad_batch(ids)
    imp = head_importance(model, x, torch.ones_like(x) if mask is None else mask)
    return {"importance_kl": imp.kl, "importance_taylor": imp.taylor}, imp.summary()


def scan_part(
    model,
    tok,
    model_name: str,
    texts: list[str],
    metrics: list[str],
    max_tokens: int = 512,
    tick: Callable[[str], None] | None = None,
    edits=(),
    retrieval_lengths=(500, 1000),
    prefix: str | None = None,
    batch_size: int = 1,
    shard: str | tuple[int, int] | None = None,
    groups: list[str] | None = None,
    group_queries: str | None = None,
    importance: bool = False,
) -> ScanPart:
    """The sums and counts of a scan over shard ``i/n`` of ``texts`` (all texts for None): a
    :class:`~headlab.measure.shard.ScanPart` that ``merge_parts`` combines with the other shards.
    Shard 1 also computes the protocol metrics (induction, retrieval), which do not read the texts.
    ``groups``: ``NAME=SPEC`` token groups (:mod:`headlab.measure.dilution`) adding the metrics
    share:<g>, aei:<g> and mdi:<first>/<g>; ``group_queries``: a SPEC for the query rows they count."""
    tick = tick or (lambda msg: None)
    shard_t = parse_shard(shard)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size must be an int >= 1, got {batch_size!r}")
    n_layers, n_heads, n_kv = model_shape(model)
    causal_lm = hasattr(model, "generate") and hasattr(model, "lm_head")
    if "retrieval" in metrics and not causal_lm:
        raise ValueError("the retrieval metric needs a generative (causal LM) model; drop it with --metrics for encoders")
    ids = tokenize_texts(tok, texts, max_tokens, getattr(model.config, "max_position_embeddings", None), prefix)
    mine = shard_indices(len(ids), shard_t)
    t0 = time.time()
    states = query_states(model, [ids[k] for k in mine], metrics, edits, batch_size, tick, tok=tok)
    tg = parse_groups(groups or [])
    qg = None if group_queries is None else parse_group(f"queries={group_queries}")
    if qg is not None and not tg:
        raise ValueError(f"--group-queries {group_queries!r} needs at least one --group")
    if tg:
        states.update(
            group_states(
                model,
                [ids[k] for k in mine],
                tg,
                qg,
                tok=tok,
                texts=[texts[k] for k in mine],
                n_prefix=1 if prefix else 0,
                edits=edits,
                index=mine,
                tick=tick,
            )
        )
    fixed: dict[str, torch.Tensor] = {}
    cases = []
    first = shard_t is None or shard_t[0] == 1
    imp_summary = None
    if importance:  # per-head columns importance_kl / importance_taylor on the scan's texts
        if shard_t is not None and shard_t != (1, 1):
            raise ValueError("--importance needs every text in one process: scan without --shard / --ray")
        if edits:
            raise ValueError("--importance measures the model as it is: scan without --edits")
        if not causal_lm:
            raise ValueError("--importance needs a causal LM (it measures the next-token distribution)")
        cols, imp_summary = importance_columns(model, [ids[k] for k in mine])
        fixed.update(cols)
        tick(f"importance ({n_layers * n_heads} heads mean-ablated)")
    if first and "induction" in metrics:
        fixed["induction"] = induction_scores(model, n=50, batch=8, seed=0, edits=edits)
        tick("induction (8 x repeated 50 random tokens)")
    if first and "retrieval" in metrics:
        fixed["retrieval"], cases = retrieval_scores(
            model, tok, lengths=retrieval_lengths, edits=edits, progress=lambda: tick("retrieval case")
        )
    causal = bool(getattr(model.config, "is_decoder", False)) or causal_lm
    meta = {
        "format": SHARD_FORMAT,
        "model": model_name,
        "fingerprint": model_fingerprint(model),
        "n_layers": n_layers,
        "n_heads": n_heads,
        "n_kv_heads": n_kv,
        "causal": causal,
        "metrics": list(metrics) + group_metric_names(tg) + (list(IMPORTANCE_COLUMNS) if importance else []),
        "importance": imp_summary,
        "groups": {g.name: g.spec for g in tg.values()},
        "group_queries": group_queries,
        "headlab_version": __version__,
        "texts_digest": texts_digest(ids),
        "n_texts": len(ids),
        "max_tokens": max_tokens,
        "prefix": prefix,
        "edits": [e.describe() for e in edits],
        "retrieval_lengths": list(retrieval_lengths),
        "shard": list(shard_t or (1, 1)),
    }
    part = ScanPart(
        meta=meta,
        texts=[{"index": k, "text": texts[k], "ids": ids[k][0].tolist()} for k in mine],
        states=states,
        fixed=fixed,
        retrieval_cases=[
            {"n_tokens": c.n_tokens, "depth": c.depth, "needle": c.needle, "answer": c.answer, "recall": round(c.recall, 3)}
            for c in cases
        ],
        seconds=round(time.time() - t0, 1),
    )
    if edits:
        tick("baseline scan without the edits")
        part.baseline = scan_part(
            model,
            tok,
            model_name,
            texts,
            metrics,
            max_tokens=max_tokens,
            tick=tick,
            edits=(),
            retrieval_lengths=retrieval_lengths,
            prefix=prefix,
            batch_size=batch_size,
            shard=shard_t,
            groups=groups,
            group_queries=group_queries,
        )
    return part


def finish_scan(part: ScanPart, out: Path | None = None, command: str | None = None) -> ScanResult:
    """Records, roles, meta of a whole scan from its (merged) state; writes DIR/heads.json, heads.csv,
    meta.json, texts.json, atlas.png (and baseline.json with edits) when ``out``."""
    if part.meta["shard"] != [1, 1]:
        i, n = part.meta["shard"]
        raise ValueError(f"shard {i}/{n} is a partial scan: merge all {n} shards (headlab merge) before the report")
    metrics = list(part.meta["metrics"])
    stats = with_group_ratios(part.stats(), metrics)  # mdi:<a>/<b> = aei:<a> / aei:<b>
    lengths = [len(t["ids"]) for t in part.texts]
    ue = uniform_entropy(lengths, part.meta["causal"])
    recs = records(stats, ue)
    edits_desc = part.meta["edits"]
    meta = {
        "model": part.meta["model"],
        "n_layers": part.meta["n_layers"],
        "n_heads": part.meta["n_heads"],
        "n_kv_heads": part.meta["n_kv_heads"],
        "headlab_version": part.meta["headlab_version"],
        "command": command or " ".join(shlex.quote(a) for a in sys.argv),
        "texts": [{"name": f"text{t['index']}", "n_tokens": len(t["ids"])} for t in part.texts],
        "metrics": metrics,
        "formulas": formulas(metrics),
        "groups": part.meta.get("groups", {}),
        "group_queries": part.meta.get("group_queries"),
        "importance": part.meta.get("importance"),
        "roles": ROLE_RULES,
        "uniform_entropy": ue,
        "prefix_token": part.meta["prefix"],
        "edits": edits_desc,
        "pattern": None,
        "retrieval_cases": part.retrieval_cases,
        "seconds": part.seconds,
        "fingerprint": part.meta["fingerprint"],
        "texts_digest": part.meta["texts_digest"],
    }
    base_recs = None
    if part.baseline is not None:
        base_recs = records(with_group_ratios(part.baseline.stats(), metrics), ue)
    ids = [torch.tensor([t["ids"]], dtype=torch.long) for t in part.texts]
    res = ScanResult(recs, stats, meta, out, ids)
    if out is not None:
        with atomic_dir(out) as stage:
            write_records(stage, recs, metrics)
            if base_recs is not None:
                atomic_write_json(stage / "baseline.json", base_recs)
            write_meta(stage, meta)
            atomic_write_json(
                stage / "texts.json", [{"name": f"text{t['index']}", "text": t["text"], "ids": t["ids"]} for t in part.texts]
            )
            atlas_png(stage / "atlas.png", recs, metrics, title=f"{part.meta['model']}: head atlas")
    return res


def run_scan(
    model,
    tok,
    model_name: str,
    texts: list[str],
    metrics: list[str],
    max_tokens: int = 512,
    out: Path | None = None,
    tick: Callable[[str], None] | None = None,
    command: str | None = None,
    edits=(),
    retrieval_lengths=(500, 1000),
    prefix: str | None = None,
    head_maps: int = 4,
    batch_size: int = 1,
    groups: list[str] | None = None,
    group_queries: str | None = None,
    importance: bool = False,
) -> ScanResult:
    """Scan ``texts`` with ``metrics``; write DIR/heads.json, heads.csv, meta.json, atlas.png when ``out``.

    ``head_maps``: keep the attention maps of this many telling heads on the first text (one more
    forward pass) for the inline notebook view; 0 = none. ``batch_size``: texts per forward pass
    (right padding, masked: the same statistics as one text at a time). ``groups`` / ``group_queries``:
    token groups for share / AEI / MDI (``NAME=SPEC``, see :mod:`headlab.measure.dilution`).
    ``importance``: add the per-head columns importance_kl / importance_taylor (mean-ablation KL and its
    Taylor estimate, :mod:`headlab.measure.importance`) and their Spearman correlation in meta["importance"]."""
    if not isinstance(head_maps, int) or head_maps < 0:
        raise ValueError(f"head_maps must be an int >= 0, got {head_maps!r}")
    part = scan_part(
        model,
        tok,
        model_name,
        texts,
        metrics,
        max_tokens=max_tokens,
        tick=tick,
        edits=edits,
        retrieval_lengths=retrieval_lengths,
        prefix=prefix,
        batch_size=batch_size,
        groups=groups,
        group_queries=group_queries,
        importance=importance,
    )
    res = finish_scan(part, out=out, command=command)
    if head_maps and res.token_ids:
        res.maps = record_maps(model, res.token_ids[0], telling_heads(res.records, list(metrics), head_maps), edits)
        res.tokens = display_tokens(tok, res.token_ids[0][0].tolist())
    return res


def scan(
    model,
    tokenizer,
    texts: str | list[str],
    *,
    metrics: str | list[str] | tuple[str, ...] = DEFAULT_METRICS,
    max_tokens: int | None = None,
    out: str | Path | None = None,
    edits=(),
    prefix: str | None = None,
    batch_size: int = 1,
    groups: list[str] | None = None,
    group_queries: str | None = None,
    importance: bool = False,
    head_maps: int = 4,
    model_name: str | None = None,
) -> ScanResult:
    """Per-head statistics and roles of every attention head of ``model`` over ``texts`` (streaming: no
    attention map is kept). The library form of ``headlab scan``::

        res = headlab.scan(model, tok, ["a text", "another"], metrics="sink,entropy,prev_token")
        res.to_frame(); res.show(); res.plot()

    ``max_tokens``: tokens kept per text (default 512, or the model's context when shorter); ``metrics``: a comma list or list of metric names, "default" (:data:`DEFAULT_METRICS`, every one with a
    map-free form: the scan never builds attention maps) or "all" (adds the opt-in ``entropy`` and ``global_sink``;
    see ``headlab.probes``); ``out``: also write
    heads.json, heads.csv, meta.json and atlas.png there; ``edits``: scan the edited model (and the unedited
    one as ``baseline``); ``model_name``: the name recorded in the results (default: the model's own path).
    Other arguments as in :func:`run_scan`."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError("texts: give a non-empty string or a non-empty list of non-empty strings")
    name = (
        model_name
        or getattr(model, "headlab_name", None)  # set by headlab.load: "smollm2-135m", not its cache folder
        or getattr(getattr(model, "config", None), "_name_or_path", None)
        or type(model).__name__
    )
    if max_tokens is None:  # 512 tokens per text, or the model's whole context when it is shorter
        max_tokens = min(512, getattr(getattr(model, "config", None), "max_position_embeddings", None) or 512)
    return run_scan(
        model,
        tokenizer,
        str(name),
        texts,
        parse_metrics(metrics),
        max_tokens=max_tokens,
        out=Path(out) if out is not None else None,
        edits=edits,
        prefix=prefix,
        head_maps=head_maps,
        batch_size=batch_size,
        groups=groups,
        group_queries=group_queries,
        importance=importance,
    )
