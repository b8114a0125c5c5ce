"""Activation and path patching of attention heads (the runs behind ``headlab.edits.patch``).

* :func:`record` runs a prompt batch once and keeps every head's scores, weights or output (before
  W_O): a :class:`headlab.edits.patch.Recording`.
* :func:`head_effects` patches each head's clean output into the corrupted run, one head per copy
  of the corrupted batch (so one forward pass covers many heads), and returns the normalised effect
  ``(m_patched - m_corrupt) / (m_clean - m_corrupt)`` per (layer, head): 0 = the corrupted run's
  metric, 1 = the clean run's (denoising patching; Wang et al., arXiv 2211.00593; Heimersheim &
  Nanda, arXiv 2404.15255). Layers below a batch's lowest patched layer are not recomputed: their
  output is the corrupted run's, taken from a cache (exact; tested against the plain loop).
* :func:`direct_effects`: the same effect along the direct path only (the head's clean output
  minus its corrupt output, through W_O, added to the corrupted final residual before the final
  norm and unembedding).
* :func:`path_patch`: sender heads -> receivers' query / key / value inputs. Run 1: the corrupted
  prompt with every head frozen at its corrupted output except the senders, which take their clean
  output; the receivers' q/k/v projections are recorded (only MLPs carry the senders' change to
  them). Run 2: the corrupted prompt with only the receivers' q/k/v projections replaced by the
  recorded ones. For keys and values the replaced unit is the receiver's key/value head, shared by
  its GQA group.

Prompts: ``(B, T)`` token ids, left-padded when rows differ in length (the last column is every
row's final token); clean and corrupt batches must have the same token length in every row.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..edits.base import Edit
from ..edits.patch import Recording, patch
from ..engine.context import AttnContext
from ..engine.hf import attach, model_shape
from ..engine.sites import format_site, parse_sites, site_pairs

WHAT = ("output", "weights", "scores")
Metric = Callable[[torch.Tensor], Any]


# -- input checks -------------------------------------------------------------------------------
def _ids(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.dim() == 1:
        x = x[None]
    if x.dim() != 2 or x.dtype not in (torch.long, torch.int32, torch.int64):
        raise ValueError(f"{name} must be (batch, tokens) integer token ids, got shape {tuple(x.shape)} dtype {x.dtype}")
    return x.long()


def _mask(mask: torch.Tensor | None, ids: torch.Tensor, name: str) -> torch.Tensor | None:
    if mask is None:
        return None
    mask = torch.as_tensor(mask)
    if mask.dim() == 1:
        mask = mask[None]
    if tuple(mask.shape) != tuple(ids.shape):
        raise ValueError(f"{name} {tuple(mask.shape)} must have the shape of its token ids {tuple(ids.shape)}")
    if not bool(mask[:, -1].all()):
        raise ValueError(f"{name}: the last column must be a real token in every row (left-pad the batch)")
    return mask.long()


def check_pair(clean_ids, corrupt_ids, clean_mask=None, corrupt_mask=None):
    """Validate a clean/corrupt pair: same batch size and the same token length in every row."""
    clean_ids, corrupt_ids = _ids(clean_ids, "clean_ids"), _ids(corrupt_ids, "corrupt_ids")
    if clean_ids.shape[0] != corrupt_ids.shape[0]:
        raise ValueError(
            f"clean has {clean_ids.shape[0]} prompts but corrupt has {corrupt_ids.shape[0]}; give one corrupt "
            "prompt per clean prompt"
        )
    if clean_ids.shape[1] != corrupt_ids.shape[1]:
        raise ValueError(
            f"clean prompts have {clean_ids.shape[1]} tokens but corrupt prompts have {corrupt_ids.shape[1]}; "
            "patching aligns positions, so both must have the same token length"
        )
    cm, km = _mask(clean_mask, clean_ids, "clean_mask"), _mask(corrupt_mask, corrupt_ids, "corrupt_mask")
    if (cm is None) != (km is None) and (cm if cm is not None else km).min() == 0:
        raise ValueError("only one of clean_mask / corrupt_mask is given and it has padding; give both")
    if cm is not None and km is not None:
        lc, lk = cm.sum(1), km.sum(1)
        bad = (lc != lk).nonzero().flatten()
        if len(bad):
            r = int(bad[0])
            raise ValueError(
                f"prompt {r}: clean has {int(lc[r])} tokens but corrupt has {int(lk[r])}; patching aligns "
                "positions, so both must have the same token length"
            )
    mask = cm if cm is not None else km
    return clean_ids, corrupt_ids, mask


def _scalar(metric: Metric, logits: torch.Tensor, where: str) -> float:
    val = metric(logits)
    t = torch.as_tensor(val, dtype=torch.float64)
    if t.numel() != 1:
        raise ValueError(
            f"metric(logits) must return a scalar, got shape {tuple(t.shape)} on the {where} logits "
            f"(logits are (prompts, vocab) = {tuple(logits.shape)}); average over prompts inside the metric"
        )
    v = float(t)
    if not math.isfinite(v):
        raise ValueError(f"metric(logits) returned {v} on the {where} logits")
    return v


def check_metric(metric: Metric, clean_logits: torch.Tensor, corrupt_logits: torch.Tensor) -> tuple[float, float]:
    """(m_clean, m_corrupt); ``ValueError`` when the metric does not tell the two runs apart."""
    mc, mk = _scalar(metric, clean_logits, "clean"), _scalar(metric, corrupt_logits, "corrupt")
    if abs(mc - mk) <= 1e-6 * max(1.0, abs(mc), abs(mk)):
        probe = _scalar(metric, torch.randn_like(clean_logits.float()) * 10, "random")
        why = (
            "it gives the same value on random logits too: the metric does not depend on the model's logits"
            if abs(probe - mc) <= 1e-6 * max(1.0, abs(mc))
            else "the corruption does not change it"
        )
        raise ValueError(
            f"metric is {mc:.6g} on the clean run and {mk:.6g} on the corrupt run ({why}); normalised "
            "effects need a metric that differs between the clean and the corrupt prompts"
        )
    return mc, mk


# -- recording ------------------------------------------------------------------------------------
class _StageRecorder(Edit):
    """No-op at one stage that stores the value of every head (float32, on the CPU)."""

    name = "patching_record"

    def __init__(self, what: str, T: int, sites: Any = "all") -> None:
        super().__init__(sites)
        self.what = what
        self.T = T
        self.data: dict[int, torch.Tensor] = {}
        self.query_pos: torch.Tensor | None = None

    def stages(self) -> set[str]:
        return {self.what}

    def _keep(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        if self.query_pos is None:
            self.query_pos = ctx.query_pos.detach().cpu()
        if x.shape[2] != self.T and self.what == "output":
            raise ValueError(f"record: expected one prefill call of T={self.T} queries, got {x.shape[2]}")
        if ctx.q_index is None or self.what == "output":
            self.data[ctx.layer] = x.detach().float().cpu().clone()
        else:
            buf = self.data.get(ctx.layer)
            if buf is None:
                buf = self.data[ctx.layer] = torch.zeros(x.shape[0], x.shape[1], self.T, x.shape[3])
            buf[:, :, ctx.q_index.cpu()] = x.detach().float().cpu()
        return x

    def scores(self, s, ctx):
        return self._keep(s, ctx)

    def weights(self, a, ctx):
        return self._keep(a, ctx)

    def output(self, o, ctx):
        return self._keep(o, ctx)


def _last_logits(model, ids, mask, **kw) -> torch.Tensor:
    out = model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1, **kw)
    return out.logits[:, -1].float()


@torch.no_grad()
def record(model, ids, what: str = "output", attention_mask: torch.Tensor | None = None, edits: Sequence = ()) -> Recording:
    """One run of ``ids`` (B, T) keeping every head's ``what`` ("output": (B, H, T, d_v) before W_O;
    "weights" / "scores": (B, H, T, T)), plus the (B, V) logits at the last column. ``edits`` are
    attached before the recorder (the recording sees their effect)."""
    if what not in WHAT:
        raise ValueError(f"what={what!r} must be one of {WHAT}")
    ids = _ids(ids, "ids")
    mask = _mask(attention_mask, ids, "attention_mask")
    L, H, _ = model_shape(model)
    rec = _StageRecorder(what, ids.shape[1])
    with attach(model, edits=[*edits, rec]):
        logits = _last_logits(model, ids, mask)
    if rec.query_pos is None or len(rec.data) != L:
        raise RuntimeError(
            f"record: saw {len(rec.data)} of {L} layers; does the model route attention through transformers' AttentionInterface?"
        )
    return Recording(what, rec.data, rec.query_pos, L, H, logits=logits.cpu())


# -- skipping the unchanged bottom of the network --------------------------------------------------
def _layer_list(model) -> nn.ModuleList | None:
    L = model_shape(model)[0]
    for _, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == L:
            return mod
    return None


class _Skip(nn.Module):
    """Stands in for a decoder layer: passes the hidden states through, or (the last skipped layer)
    returns the cached output of the corrupted run, one row per run row."""

    def __init__(self, out: torch.Tensor | None) -> None:
        super().__init__()
        self.out = out

    def forward(self, hidden_states=None, *args, **kwargs):
        if hidden_states is None:
            hidden_states = kwargs.get("hidden_states")
        return hidden_states if self.out is None else self.out.to(hidden_states)


class LayerCache:
    """The corrupted run's output of every decoder layer (only for models whose decoder layers
    return a plain tensor, as Llama-family models do in transformers 5); ``skip(model, l, rows)``
    makes layers 0..l-1 free in a batch whose first patched layer is ``l``."""

    def __init__(self, model, ids, mask) -> None:
        self.outs: dict[int, torch.Tensor] = {}
        self.layers = _layer_list(model)
        if self.layers is None:
            return
        handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.layers)]
        try:
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
        finally:
            for h in handles:
                h.remove()
        if len(self.outs) != len(self.layers):
            self.outs = {}

    def _hook(self, i):
        def fn(mod, args, out):
            if isinstance(out, torch.Tensor):
                self.outs[i] = out.detach()

        return fn

    @contextlib.contextmanager
    def skip(self, first: int, rows: torch.Tensor) -> Iterator[None]:
        if first <= 0 or not self.outs or self.layers is None:
            yield
            return
        saved = [self.layers[i] for i in range(first)]
        try:
            for i in range(first):
                self.layers[i] = _Skip(self.outs[first - 1][rows] if i == first - 1 else None)
            yield
        finally:
            for i, m in enumerate(saved):
                self.layers[i] = m


# -- head effects ---------------------------------------------------------------------------------
@dataclass
class Effects:
    """Result of :func:`head_effects` with ``full=True``."""

    effects: torch.Tensor  # (L, H), NaN where not swept
    raw: torch.Tensor  # (L, H) metric of each patched run
    clean: float
    corrupt: float
    clean_recording: Recording
    corrupt_recording: Recording


def _batch_heads(n: int, T: int, token_budget: int) -> int:
    return max(1, token_budget // max(1, n * T))


def _progress(total: int, desc: str, show: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(desc), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True, disable=not show)


@torch.no_grad()
def head_effects(
    model,
    clean_ids,
    corrupt_ids,
    metric: Metric,
    *,
    clean_mask=None,
    corrupt_mask=None,
    sites: Any = "all",
    positions: Sequence[int] | None = None,
    what: str = "output",
    batch_heads: int | None = None,
    token_budget: int = 8192,
    skip_layers: bool = True,
    progress: bool = False,
    full: bool = False,
):
    """(L, H) normalised effect of patching each head's clean ``what`` into the corrupted run.

    ``metric(logits) -> scalar`` gets the (prompts, vocab) logits at the final token. Effects are 0
    for the corrupted run's metric and 1 for the clean run's; sites not swept are NaN.
    ``batch_heads`` heads share one forward pass (default: as many as fit ``token_budget`` tokens).
    ``full=True`` returns an :class:`Effects` with the raw metrics and both recordings.
    """
    clean_ids, corrupt_ids, mask = check_pair(clean_ids, corrupt_ids, clean_mask, corrupt_mask)
    if what not in WHAT:
        raise ValueError(f"what={what!r} must be one of {WHAT}")
    L, H, _ = model_shape(model)
    n, T = corrupt_ids.shape
    clean = record(model, clean_ids, what, mask)
    corrupt = record(model, corrupt_ids, what, mask)
    mc, mk = check_metric(metric, clean.logits, corrupt.logits)
    todo = site_pairs(parse_sites(sites, L, H))
    if batch_heads is None:
        batch_heads = _batch_heads(n, T, token_budget)
    if not isinstance(batch_heads, int) or batch_heads < 1:
        raise ValueError(f"batch_heads must be a positive int (1..{len(todo)}), got {batch_heads!r}")
    cache = LayerCache(model, corrupt_ids, mask) if skip_layers and what == "output" else None
    raw = torch.full((L, H), float("nan"), dtype=torch.float64)
    with _progress(len(todo), "patching heads", progress) as bar:
        task = bar.add_task("heads", total=len(todo))
        for c0 in range(0, len(todo), batch_heads):
            chunk = todo[c0 : c0 + batch_heads]
            k = len(chunk)
            rows = [site for site in chunk for _ in range(n)]
            src_rows = list(range(n)) * k
            ed = patch(clean, rows=rows, src_rows=src_rows, positions=positions)
            ids = corrupt_ids.repeat(k, 1)
            m = None if mask is None else mask.repeat(k, 1)
            first = min(l for l, _ in chunk)
            skip = cache.skip(first, torch.tensor(src_rows)) if cache is not None else contextlib.nullcontext()
            with skip, attach(model, edits=[ed]):
                logits = _last_logits(model, ids, m)
            for j, (l, h) in enumerate(chunk):
                raw[l, h] = _scalar(metric, logits[j * n : (j + 1) * n], f"patched {format_site(l, h)}")
            bar.advance(task, k)
    eff = (raw - mk) / (mc - mk)
    if full:
        return Effects(eff.float(), raw, mc, mk, clean, corrupt)
    return eff.float()


# -- direct effects ---------------------------------------------------------------------------------
def attention_modules(model) -> dict[int, nn.Module]:
    """{layer: attention module} for models with q_proj / k_proj / v_proj / o_proj projections."""
    out = {}
    for mod in model.modules():
        if all(hasattr(mod, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "layer_idx")):
            out[int(mod.layer_idx)] = mod
    L = model_shape(model)[0]
    if len(out) != L:
        raise ValueError(
            f"{type(model).__name__}: found {len(out)} of {L} attention modules with q_proj/k_proj/v_proj/o_proj "
            "(Llama-style); path patching and direct effects need them"
        )
    return out


def _final_norm(model) -> nn.Module:
    dec = model.get_decoder() if hasattr(model, "get_decoder") else None
    norm = getattr(dec, "norm", None)
    if norm is None or model.get_output_embeddings() is None:
        raise ValueError(
            f"{type(model).__name__}: direct effects need a decoder with a final `norm` and an output "
            "embedding (Llama-style causal LM)"
        )
    return norm


@torch.no_grad()
def direct_effects(
    model,
    clean: Recording,
    corrupt: Recording,
    corrupt_ids,
    metric: Metric,
    mc: float,
    mk: float,
    attention_mask=None,
    batch_heads: int = 32,
) -> torch.Tensor:
    """(L, H) normalised direct effect: the head's clean-minus-corrupt output at the final token,
    through its slice of W_O, added to the corrupted run's final residual; then the final norm and
    the unembedding, as the model computes them. ``clean`` / ``corrupt``: output recordings."""
    if clean.what != "output" or corrupt.what != "output":
        raise ValueError("direct_effects needs recordings of what='output'")
    corrupt_ids = _ids(corrupt_ids, "corrupt_ids")
    norm, lm_head = _final_norm(model), model.get_output_embeddings()
    got: dict[str, torch.Tensor] = {}
    hnd = norm.register_forward_pre_hook(lambda m, a: got.__setitem__("x", a[0][:, -1].detach()))
    try:
        logits = _last_logits(model, corrupt_ids, attention_mask)
    finally:
        hnd.remove()
    resid = got["x"]  # (n, D)
    base = lm_head(norm(resid[:, None]))[:, 0].float()
    if not torch.allclose(base, logits, atol=1e-3, rtol=1e-3):
        raise ValueError(
            f"{type(model).__name__}: logits are not lm_head(norm(residual)) (extra scaling or capping); "
            "direct effects are not defined for it here"
        )
    mods = attention_modules(model)
    L, H = clean.n_layers, clean.n_heads
    raw = torch.full((L, H), float("nan"), dtype=torch.float64)
    sites = [(l, h) for l in range(L) for h in range(H)]
    n = resid.shape[0]
    for c0 in range(0, len(sites), batch_heads):
        chunk = sites[c0 : c0 + batch_heads]
        deltas = []
        for l, h in chunk:
            W = mods[l].o_proj.weight  # (D, H*d)
            d = clean.data[l].shape[-1]
            diff = (clean.data[l][:, h, -1] - corrupt.data[l][:, h, -1]).to(W)  # (n, d)
            deltas.append(diff @ W[:, h * d : (h + 1) * d].T)
        x = (resid[None] + torch.stack(deltas)).reshape(len(chunk) * n, 1, -1)
        lg = lm_head(norm(x))[:, 0].float()
        for j, (l, h) in enumerate(chunk):
            raw[l, h] = _scalar(metric, lg[j * n : (j + 1) * n], f"direct {format_site(l, h)}")
    return ((raw - mk) / (mc - mk)).float()


# -- path patching ---------------------------------------------------------------------------------
COMPONENTS = ("q", "k", "v")


@torch.no_grad()
def path_patch(
    model,
    clean_ids,
    corrupt_ids,
    metric: Metric,
    senders: Any,
    receivers: Any,
    component: str = "q",
    *,
    clean_mask=None,
    corrupt_mask=None,
    per_sender: bool = True,
    batch_senders: int | None = None,
    token_budget: int = 8192,
    progress: bool = False,
    recordings: tuple[Recording, Recording] | None = None,
):
    """Normalised effect of the senders' clean outputs along the path into the receivers'
    ``component`` ("q", "k" or "v") input only (module docstring).

    ``per_sender=True``: (L, H) tensor, one sender per patched copy (NaN for non-senders);
    ``False``: one float for all senders together. ``recordings``: (clean, corrupt) output
    recordings, if already made."""
    if component not in COMPONENTS:
        raise ValueError(f"component={component!r} must be one of {COMPONENTS}")
    clean_ids, corrupt_ids, mask = check_pair(clean_ids, corrupt_ids, clean_mask, corrupt_mask)
    L, H, Hkv = model_shape(model)
    mods = attention_modules(model)
    send = site_pairs(parse_sites(senders, L, H))
    recv = site_pairs(parse_sites(receivers, L, H))
    if not send or not recv:
        raise ValueError(
            f"path_patch needs at least one sender and one receiver, got senders={senders!r} receivers={receivers!r}"
        )
    low = min(l for l, _ in recv)
    late = [format_site(l, h) for l, h in send if l >= low]
    if late:
        raise ValueError(
            f"senders {late[:4]} are not below the lowest receiver layer {low}: a sender reaches a "
            "receiver's input only from an earlier layer"
        )
    if recordings is None:
        clean, corrupt = record(model, clean_ids, "output", mask), record(model, corrupt_ids, "output", mask)
    else:
        clean, corrupt = recordings
    mc, mk = check_metric(metric, clean.logits, corrupt.logits)
    n, T = corrupt_ids.shape
    group = H // Hkv
    # receiver units: (layer, unit index in the projection output, unit width)
    units: dict[int, set[int]] = {}
    for l, h in recv:
        units.setdefault(l, set()).add(h if component == "q" else h // group)
    proj = {"q": "q_proj", "k": "k_proj", "v": "v_proj"}[component]
    groups = [[s] for s in send] if per_sender else [send]
    if batch_senders is None:
        batch_senders = _batch_heads(n, T, token_budget)
    raw = torch.full((L, H), float("nan"), dtype=torch.float64)
    total = None
    with _progress(len(groups), f"path patching -> {component}", progress) as bar:
        task = bar.add_task("senders", total=len(groups))
        for c0 in range(0, len(groups), batch_senders):
            chunk = groups[c0 : c0 + batch_senders]
            k = len(chunk)
            src_rows = list(range(n)) * k
            rows = [g for g in chunk for _ in range(n)]
            ids = corrupt_ids.repeat(k, 1)
            m = None if mask is None else mask.repeat(k, 1)
            # run 1: everything frozen at corrupt, senders clean; record the receivers' projections
            freeze = patch(corrupt, "all", src_rows=src_rows)
            send_e = patch(clean, rows=rows, src_rows=src_rows)
            kept: dict[int, torch.Tensor] = {}
            hooks = [getattr(mods[l], proj).register_forward_hook(_keep_hook(kept, l)) for l in units]
            try:
                with attach(model, edits=[freeze, send_e]):
                    model(input_ids=ids, attention_mask=m, use_cache=False, logits_to_keep=1)
            finally:
                for hk in hooks:
                    hk.remove()
            # run 2: plain corrupted run with only the receivers' projections replaced
            hooks = [
                getattr(mods[l], proj).register_forward_hook(_put_hook(kept[l], sorted(units[l]), head_dim(model, mods[l])))
                for l in units
            ]
            try:
                logits = _last_logits(model, ids, m)
            finally:
                for hk in hooks:
                    hk.remove()
            for j, g in enumerate(chunk):
                v = _scalar(metric, logits[j * n : (j + 1) * n], f"path-patched {g[0]}")
                if per_sender:
                    raw[g[0][0], g[0][1]] = v
                else:
                    total = v
            bar.advance(task, k)
    if not per_sender:
        return (total - mk) / (mc - mk)
    return ((raw - mk) / (mc - mk)).float()


def _keep_hook(store: dict, layer: int):
    def fn(mod, args, out):
        store[layer] = out.detach().clone()

    return fn


def _put_hook(value: torch.Tensor, units: list[int], width: int):
    """Forward hook: the projection output with the listed head slices (``width`` each) taken from ``value``."""

    def fn(mod, args, out):
        new = out.clone()
        for u in units:
            new[..., u * width : (u + 1) * width] = value[..., u * width : (u + 1) * width]
        return new

    return fn


def head_dim(model, module: nn.Module) -> int:
    """Per-head width of the q/k/v projections."""
    d = getattr(module, "head_dim", None)
    if d is None:
        cfg = getattr(model.config, "text_config", None) or model.config
        d = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return int(d)
