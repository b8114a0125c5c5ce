"""The engine: one entry point for every attention call headlab touches.

Path selection (docs/design.md):
  * nothing attached                 -> torch SDPA (``fast_sdpa``; exact equivalents for windows,
                                        sink logits and soft-capping)
  * only probes with a fast form     -> attention + log-sum-exp statistics (``stats_path``), no maps,
                                        on every device with an LSE backend (``headlab.engine.lse``)
  * only a static pattern, no pads   -> ``headlab.kernels.sparse_attend`` (block-sparse)
  * anything else                    -> chunked eager loop over query blocks (``chunked_eager``):
        memory O(B · H · chunk · S), never O(T²) per head across layers.
Sliding windows, logit soft-capping and learned sink logits (``headlab.engine.scores``) are part of
the scores on every path. The dense ``headlab.reference.reference_attention`` is the plain reference
for all of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .context import AttnContext
from .fast import FastCall, run_band
from .lse import attention_lse, attention_lse_cols, check_backend, default_backend, structural_mask
from .masks import check_qkv, expand_kv, pattern_rows, positions_from_mask, to_bool_mask
from .plugins import make_probe, sparse_attend
from .scores import cap, check_variant, sink_share, softmax_with_sinks, window_rows

#: target size (elements) of one chunk of scores, B·H·chunk·S
CHUNK_ELEMENTS = 1 << 24


def default_chunk(B: int, H: int, T: int, S: int) -> int:
    return max(1, min(T, CHUNK_ELEMENTS // max(1, B * H * S)))


def make_context(q, k, causal, bmask, layer=0, n_layers=1, state=None) -> AttnContext:
    B, H, T, _ = q.shape
    S = k.shape[2]
    key_pos, query_pos = positions_from_mask(bmask, B, T, S, q.device)
    return AttnContext(layer, n_layers, H, k.shape[1], causal, key_pos, query_pos, state=state if state is not None else {})


def allowed_rows(
    idx, ctx: AttnContext, T: int, S: int, causal: bool, bmask, pattern, q, k, same_pos: bool = False, window: int | None = None
) -> torch.Tensor:
    """Bool (B|1, 1|H, Tc, S) visibility for the queries ``idx`` (indices into 0..T-1).

    ``pattern`` must already be in query-head numbering (``for_heads``) when static; ``same_pos``:
    every row has the positions 0..S-1 (no padding), so a static pattern is evaluated once;
    ``window``: sliding window of a causal layer (``headlab.engine.scores``)."""
    dev = idx.device
    allowed = torch.ones(1, 1, len(idx), S, dtype=torch.bool, device=dev)
    if causal:
        allowed = allowed & (torch.arange(S, device=dev)[None, :] <= (S - T + idx)[:, None])
        if window is not None:
            allowed = allowed & window_rows(S - T + idx, S, window)
    if bmask is not None:
        allowed = allowed & bmask[:, :, idx]
    if pattern is not None:
        rows_b = range(1) if same_pos and not pattern.dynamic else range(q.shape[0])
        rows = [pattern_rows(pattern, q[b : b + 1, :, idx], k[b : b + 1], ctx.query_pos[b, idx], ctx.key_pos[b]) for b in rows_b]
        allowed = allowed & torch.stack(rows)
    return allowed


def chunked_eager(
    q,
    k,
    v,
    scale,
    causal,
    bmask,
    pattern,
    edits,
    probes,
    ctx,
    chunk=None,
    *,
    window: int | None = None,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact attention over query chunks, with edits and probes; (B, H, T, d_v).

    Scores per chunk: ``cap(q·kᵀ·scale)`` masked (causal, window, mask, pattern), score edits,
    softmax (with the sink logits in the denominator), weight edits, probes, ``A·v``."""
    B, H, T, _ = q.shape
    S = k.shape[2]
    kT = expand_kv(k, H).transpose(-1, -2).float()  # (B, H, d, S), cast once
    vf = expand_kv(v, H).float()
    if chunk is None:
        chunk = default_chunk(B, H, T, S)
    elif not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive number of queries (1..{T}), got {chunk!r}")
    same_pos = False
    if pattern is not None:
        if not pattern.dynamic:
            pattern = pattern.for_heads(H, k.shape[1])  # per-KV-head rules in query-head numbering
        same_pos = bool((ctx.key_pos == torch.arange(S, device=q.device)).all())
    if any(getattr(e, "needs_all_queries", False) for e in edits):
        chunk = T
    score_e = [e for e in edits if "scores" in e.stages()]
    weight_e = [e for e in edits if "weights" in e.stages()]
    out_e = [e for e in edits if "output" in e.stages()]
    out = q.new_empty(B, H, T, v.shape[-1])
    for t0 in range(0, T, chunk):
        idx = torch.arange(t0, min(T, t0 + chunk), device=q.device)
        ctx.q_index = idx
        s = cap(torch.matmul(q[:, :, idx].float(), kT) * scale, softcap)  # (B, H, Tc, S)
        s = s.masked_fill(~allowed_rows(idx, ctx, T, S, causal, bmask, pattern, q, k, same_pos, window), float("-inf"))
        for e in score_e:
            s = e.scores(s, ctx)
        a = softmax_with_sinks(s, sinks)  # rows with no visible key -> 0
        for e in weight_e:
            a = e.weights(a, ctx)
        for p in probes:
            p.update(a, ctx)
        out[:, :, idx] = torch.matmul(a, vf).to(q.dtype)
    ctx.q_index = None
    for e in out_e:
        out = e.output(out, ctx)
    return out


def _sdpa(q, k, v, scale, causal, bmask, *, window=None, softcap=None, sinks=None, lse_backend=None) -> torch.Tensor:
    """Nothing attached: torch SDPA, or its exact equivalent for the variants SDPA lacks
    (sink logits: SDPA output times the real keys' share ``r`` from the log-sum-exp; soft-capping:
    the chunked eager loop, as the cap is not linear in the scores)."""
    B, H, T, _ = q.shape
    S = k.shape[2]
    if softcap is not None or (sinks is not None and (lse_backend or default_backend(q.device)) is None):
        ctx = make_context(q, k, causal, bmask)
        return chunked_eager(q, k, v, scale, causal, bmask, None, [], [], ctx, window=window, softcap=softcap, sinks=sinks)
    ke, ve = expand_kv(k, H), expand_kv(v, H)
    if sinks is not None:
        o, lse = attention_lse(
            q.float(), ke.float(), ve.float(), scale, causal=causal, window=window, bmask=bmask, backend=lse_backend
        )
        _, r = sink_share(lse, sinks)
        return (o.float() * r[..., None]).to(q.dtype)
    if bmask is None and causal and T > 1 and T == S and window is None:
        return F.scaled_dot_product_attention(q, ke, ve, is_causal=True, scale=scale)
    structural = structural_mask(T, S, q.device, causal, window)
    if structural is not None:
        bmask = structural[None, None] if bmask is None else bmask & structural
    return F.scaled_dot_product_attention(q, ke, ve, attn_mask=bmask, scale=scale)


def stats_path(q, k, v, scale, causal, bmask, probes, ctx, *, window=None, sinks=None, lse_backend=None) -> torch.Tensor:
    """Attention output plus per-query statistics from its log-sum-exp, without any map.

    With lse_i = log Σ_j exp(s_ij), A_ij = exp(s_ij − lse_i), so
      sink_i    = exp(s_i,first − lse_i),     prev_i = exp(s_i,i−1 − lse_i)
      entropy_i = lse_i − Σ_j A_ij s_ij  = lse_i − scale · q_i·(Σ_j A_ij k_j)
      distance_i = pos_i − Σ_j A_ij pos_j,    keys:<probe>_i = Σ_j A_ij w_j (a probe's key weights w)
    The weighted sums come from the same attention call with keys, positions and key weights appended
    to the values (``headlab.engine.lse.attention_lse_cols``: grouped-query attention stays grouped,
    padded copies one block of heads at a time). With sink logits (lse' = logaddexp(lse, sink),
    r = exp(lse − lse')) the weights are A'_ij = r·A_ij: sink/prev use lse', entropy_i =
    r·(lse' − Σ_j A_ij s_ij), distance_i = r·(pos_i − Σ_j A_ij pos_j), keys_i = r·Σ_j A_ij w_j.
    Probes that need weights of chosen pairs get them recomputed from q, k and lse'
    (``headlab.engine.fast``): ``stats["scores"]`` (a :class:`~headlab.engine.fast.FastCall`) and, for
    ``"band"`` probes, ``update_band`` chunk by chunk. Statistics are computed in float32 (or wider)
    whatever the model's dtype. The log-sum-exp backend (``lse_backend``) is chosen by device.
    """
    B, H, T, d = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    G = H // Hkv
    need = set().union(*(p.fast_needs for p in probes))
    sd = torch.promote_types(q.dtype, torch.float32)
    qf, kf, vf = q.to(sd), k.to(sd), v.to(sd)
    cols: list[torch.Tensor] = []  # extra per-key value columns, (B, Hkv, S, w) each
    names: list[tuple[str, int]] = []
    if "entropy" in need:
        cols.append(kf)
        names.append(("entropy", d))
    if "distance" in need:
        cols.append(ctx.key_pos.clamp(min=0).to(sd)[:, None, :, None].expand(B, Hkv, S, 1))
        names.append(("distance", 1))
    for p in probes:
        if "keys" in p.fast_needs:
            w = p.key_weights(ctx).to(device=q.device, dtype=sd)  # (B, S)
            cols.append(w[:, None, :, None].expand(B, Hkv, S, 1))
            names.append((p.key_stat, 1))
    sums = {name: torch.empty(B, H, T, dtype=sd, device=q.device) for name, _ in names}

    def take(h0: int, h1: int, x: torch.Tensor) -> None:  # x (B, h1 - h0, T, ne): Σ_j A_ij cols_j
        c = 0
        for name, w in names:
            if name == "entropy":
                sums[name][:, h0:h1] = (qf[:, h0:h1] * x[..., c : c + w]).sum(-1)  # q_i·Σ_j A_ij k_j
            else:
                sums[name][:, h0:h1] = x[..., c]
            c += w

    extra = torch.cat(cols, dim=-1) if cols else None
    o, lse = attention_lse_cols(
        qf, kf, vf, extra, scale, causal=causal, window=window, bmask=bmask, backend=lse_backend, on_heads=take
    )
    lse_full, r = sink_share(lse, sinks)  # (B, H, T) each
    stats: dict[str, Any] = {}
    qabs = torch.arange(S - T, S, device=q.device)
    bidx = torch.arange(B, device=q.device)
    kvh = torch.arange(H, device=q.device) // G  # KV head of each query head
    if "sink" in need:
        first = (ctx.key_pos == 0).float().argmax(dim=-1)  # (B,) index of each row's first real key
        k0 = kf[bidx, :, first][:, kvh]  # (B, H, d)
        s0 = torch.einsum("bhtd,bhd->bht", qf, k0) * scale
        vis0 = _visible(first[:, None].expand(B, T), qabs, causal, window, bmask, bidx)  # (B, 1|H, T)
        vis0 = vis0 & (ctx.key_pos == 0).any(-1)[:, None, None]  # the first token may have left a sliding cache
        stats["sink"] = torch.where(vis0, torch.exp(s0 - lse_full), torch.zeros_like(s0))
    if "prev" in need:
        pidx = (qabs - 1).clamp(min=0)  # (T,)
        kp = kf[:, :, pidx] if S == T else kf[:, :, S - T - 1 : S - 1]  # (B, Hkv, T, d): the key before each query
        sp = (qf.unflatten(1, (Hkv, G)) * kp[:, :, None]).sum(-1).flatten(1, 2) * scale
        ok = (ctx.query_pos >= 1)[:, None, :] & _visible(pidx.expand(B, T), qabs, causal, window, bmask, bidx)
        stats["prev"] = torch.where(ok, torch.exp(sp - lse_full), torch.zeros_like(sp))
    if "entropy" in need:
        ent = lse_full - scale * sums["entropy"]
        stats["entropy"] = (ent if sinks is None else r * ent).clamp(min=0)
    if "distance" in need:
        stats["distance"] = r * (ctx.query_pos.to(sd)[:, None, :] - sums["distance"])
    for name, _ in names:
        if name.startswith("keys:"):
            stats[name] = sums[name] if sinks is None else r * sums[name]
    call = FastCall(qf, kf, lse_full, r, scale, causal, window, bmask, ctx)
    stats["scores"] = call
    for p in probes:
        p.update_fast(stats, ctx)
    run_band(call, [p for p in probes if "band" in p.fast_needs], ctx)
    out = o if sinks is None else o * r[..., None]
    return out.to(q.dtype)


def _visible(kidx, qabs, causal, window, bmask, bidx) -> torch.Tensor:
    """(B, 1|H, T) bool: whether the key ``kidx (B, T)`` is visible to each query (key index ``qabs (T,)``)."""
    ok = torch.ones_like(kidx, dtype=torch.bool)
    if causal:
        ok = ok & (kidx <= qabs[None, :])
        if window is not None:
            ok = ok & (kidx > qabs[None, :] - window)
    ok = ok[:, None, :]
    if bmask is not None:
        T = qabs.shape[0]
        tq = torch.arange(T, device=kidx.device)
        ok = (
            ok
            & bmask[
                bidx[:, None, None],
                torch.arange(bmask.shape[1], device=kidx.device)[None, :, None],
                tq[None, None, :],
                kidx[:, None, :],
            ]
        )
    return ok


def stats_ok(q, probes, causal: bool, softcap=None, lse_backend=None) -> bool:
    """Whether every probe has a closed form next to attention with an LSE backend for this device
    (none on e.g. Apple MPS unless forced; soft-capped scores have no closed-form entropy)."""
    backend = lse_backend or default_backend(q.device)
    return backend is not None and softcap is None and bool(probes) and all(p.supports_fast(causal) for p in probes)


def select_path(
    q, edits, probes, pattern, bmask, causal: bool = True, *, variant: bool = False, softcap=None, lse_backend=None
) -> str:
    """``variant``: the layer has a sliding window, soft-capping or sink logits (no block-sparse kernel)."""
    if not edits and not probes and pattern is None:
        return "sdpa"
    if not edits and pattern is None and stats_ok(q, probes, causal, softcap, lse_backend):
        return "stats"
    if not edits and not probes and pattern is not None and bmask is None and not variant:
        return "sparse"  # static and dynamic patterns alike: block-sparse kernel, no padding
    return "eager"


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    causal: bool = True,
    attn_mask: torch.Tensor | None = None,
    pattern=None,
    edits: Sequence = (),
    probes: Sequence = (),
    ctx: AttnContext | None = None,
    chunk: int | None = None,
    path: str | None = None,
    window: int | None = None,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
    lse_backend: str | None = None,
) -> torch.Tensor:
    """Attention with optional pattern, edits and probes.

    q (B, H, T, d), k/v (B, Hkv, S, d) with H a multiple of Hkv (GQA); the T queries are the
    last T of the S positions. ``attn_mask``: None, bool (B, 1|H, T, S) True = attend, or
    additive float. Returns (B, H, T, d). ``path`` forces "sdpa" | "stats" | "sparse" | "eager".
    Model variants (``headlab.engine.scores``): ``window`` (causal sliding window, keys
    p - window < j <= p), ``softcap`` (scores -> softcap·tanh(scores/softcap)), ``sinks`` ((H,) learned
    sink logits in every softmax denominator). ``lse_backend``: "cpu_flash" | "flex" | None (by device)
    for the statistics path.
    """
    check_qkv(q, k, v)
    B, H, T, d = q.shape
    S = k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    check_variant(window, softcap, sinks, H, causal)
    check_backend(lse_backend)
    softcap = None if softcap is None else float(softcap)
    bmask = to_bool_mask(attn_mask)
    if bmask is not None:
        if (
            bmask.dim() != 4
            or bmask.shape[0] not in (1, B)
            or bmask.shape[1] not in (1, H)
            or bmask.shape[2] not in (1, T)
            or bmask.shape[3] != S
        ):
            raise ValueError(f"attn_mask {tuple(bmask.shape)} must broadcast to (B, 1|H, T, S) = ({B}, 1|{H}, {T}, {S})")
        bmask = bmask.expand(B, bmask.shape[1], T, S)
    if probes and any(isinstance(p, str) for p in probes):
        probes = [make_probe(p) if isinstance(p, str) else p for p in probes]
    variant = window is not None or softcap is not None or sinks is not None
    path = path or select_path(
        q, edits, probes, pattern, bmask, causal, variant=variant, softcap=softcap, lse_backend=lse_backend
    )
    if path == "stats" and not stats_ok(q, probes, causal, softcap, lse_backend):
        raise ValueError(
            "path='stats' needs probes that all have a closed form here, a device with a log-sum-exp "
            f"backend and no softcap (got {[p.name for p in probes]} on {q.device.type}, causal={causal}, "
            f"softcap={softcap}); use path='eager'"
        )
    if path in ("sdpa", "sparse") and (edits or probes):
        raise ValueError(f"path={path!r} cannot run edits or probes; use path='eager' (or 'stats' for probes)")
    if path == "sparse" and pattern is None:
        raise ValueError("path='sparse' needs a pattern")
    if path == "sparse" and variant:
        raise ValueError("path='sparse' has no sliding window, softcap or sink logits; use path='eager'")
    if ctx is None and path in ("stats", "eager"):
        ctx = make_context(q, k, causal, bmask)
    if path == "sdpa":
        return _sdpa(q, k, v, scale, causal, bmask, window=window, softcap=softcap, sinks=sinks, lse_backend=lse_backend)
    if path == "stats":
        return stats_path(q, k, v, scale, causal, bmask, probes, ctx, window=window, sinks=sinks, lse_backend=lse_backend)
    if path == "sparse":
        return sparse_attend(q, k, v, pattern, scale=scale, causal=causal)
    if path == "eager":
        return chunked_eager(
            q,
            k,
            v,
            scale,
            causal,
            bmask,
            pattern,
            list(edits),
            list(probes),
            ctx,
            chunk,
            window=window,
            softcap=softcap,
            sinks=sinks,
        )
    raise ValueError(f"unknown path {path!r}: choose sdpa, stats, sparse or eager")
