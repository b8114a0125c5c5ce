"""Attention output *and* its log-sum-exp, without any attention map — on every device.

``attention_lse(q, k, v, ...)`` returns ``o = softmax(s) v`` and ``lse_i = log Σ_j exp(s_ij)`` over
the visible keys. Two backends, chosen by device (``default_backend``), both behind the same
exactness tests against a dense reference:

* ``"flex"`` — the public FlexAttention (``torch.nn.attention.flex_attention``, arXiv 2412.05496)
  with ``return_aux=AuxRequest(lse=True)``; causal, window and padding masks become a block mask.
  Compiled on CUDA/XPU. On CPU, torch 2.13's compiled FlexAttention does not return the LSE, and
  the uncompiled one materialises the scores (about 10x slower than the CPU op at 1-2K tokens),
  so on CPU it is only used when forced (tests exercise it that way).
* ``"cpu_flash"`` — the CPU flash kernel ``aten._scaled_dot_product_flash_attention_for_cpu``,
  which returns the LSE; measurably the fastest path on CPU.

Rows with no visible key come back as ``o = 0``, ``lse = -inf`` from both backends.

``attention_lse_cols(q, k, v, extra, ...)`` is what the statistics path calls: grouped-query attention
stays grouped (the CPU kernel takes Hkv < H), and extra per-key columns (keys for the entropy,
positions, key indicators) ride along with the values so that their attention-weighted sums come out
of the same call. The CPU kernel needs one head width for q, k and v, so each extra column widens the
QK product too: about +1.5 % of the call per column, +80 % for the d columns of the entropy
(measured on SmolLM2's shapes at 2048 tokens, docs/probes.md). The widened copies are made one block
of query heads at a time.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict

import torch
import torch.nn.functional as F

from .masks import causal_mask
from .scores import window_rows

BACKENDS = ("cpu_flash", "flex")

#: widest value block one FlexAttention call gets (wider values are split into several calls)
FLEX_MAX_WIDTH = 256

_compiled_flex = None
_block_masks: OrderedDict = OrderedDict()


def default_backend(device: torch.device) -> str | None:
    """The LSE backend for ``device``: "cpu_flash" on CPU, "flex" on CUDA / XPU, None elsewhere
    (e.g. Apple MPS: the engine then uses its chunked eager path)."""
    if device.type == "cpu":
        return "cpu_flash"
    if device.type in ("cuda", "xpu"):
        return "flex"
    return None


def check_backend(backend) -> None:
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"lse_backend {backend!r} is not one of {list(BACKENDS)} (or None: chosen by device)")


def structural_mask(T: int, S: int, device, causal: bool, window: int | None) -> torch.Tensor | None:
    """(T, S) bool from causality and the sliding window, or None when every key is visible."""
    if not causal:
        return None
    m = causal_mask(T, S, device)
    if window is not None:
        m = m & window_rows(torch.arange(S - T, S, device=device), S, window)
    return m


def attention_lse(q, k, v, scale: float, *, causal: bool, window: int | None = None, bmask=None, backend: str | None = None):
    """q (B, H, T, d), k (B, H, S, d) (already expanded to the query heads), v (B, H, S, dv);
    bmask None or bool (B, 1|H, T, S) True = attend. Returns o (B, H, T, dv) and lse (B, H, T) float32."""
    backend = backend or default_backend(q.device)
    check_backend(backend)
    if backend is None:
        raise ValueError(f"no log-sum-exp backend for device {q.device}; give lse_backend= one of {list(BACKENDS)}")
    if backend == "cpu_flash":
        if q.device.type != "cpu":
            raise ValueError(f"lse_backend='cpu_flash' needs CPU tensors, got {q.device}")
        return _cpu_flash(q, k, v, scale, causal, window, bmask)
    return _flex(q, k, v, scale, causal, window, bmask)


def _cpu_flash(q, k, v, scale, causal, window, bmask):
    B, H, T, d = q.shape
    S, dv = k.shape[2], v.shape[-1]
    width = max(d, dv)
    qa, ka, va = F.pad(q, (0, width - d)), F.pad(k, (0, width - d)), F.pad(v, (0, width - dv))
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if bmask is None and (not causal or (T == S and window is None)):  # the kernel's own causal flag
        o, lse = flash(qa, ka, va, 0.0, causal, scale=scale)
        return o[..., :dv], lse.float()
    allowed = structural_mask(T, S, q.device, causal, window)
    if bmask is not None:
        allowed = bmask if allowed is None else bmask & allowed
    assert allowed is not None  # causal with T != S or a window, or a mask
    allowed = allowed.expand(B, -1, T, S) if allowed.dim() == 4 else allowed[None, None].expand(B, 1, T, S)
    add = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
    o, lse = flash(qa, ka, va, 0.0, False, attn_mask=add, scale=scale)
    dead = ~allowed.any(-1)  # (B, 1|H, T): rows with no visible key
    o = torch.where(dead[..., None], torch.zeros((), dtype=o.dtype), o[..., :dv])
    lse = torch.where(dead, torch.tensor(float("-inf")), lse.float())
    return o, lse


def attention_lse_cols(
    q,
    k,
    v,
    extra,
    scale: float,
    *,
    causal: bool,
    window: int | None = None,
    bmask=None,
    backend: str | None = None,
    on_heads=None,
    budget: int = 1 << 21,
):
    """Attention output, its log-sum-exp and the attention-weighted sums of extra per-key columns, with
    grouped-query attention kept grouped (keys and values are never copied per query head).

    q (B, H, T, d); k (B, Hkv, S, d), v (B, Hkv, S, dv) with H a multiple of Hkv (query head h reads KV
    head h // (H // Hkv)); extra None or (B, Hkv, S, ne): columns c_j whose sums Σ_j A_ij c_j are wanted
    (keys for the entropy, positions for the distance, key indicators for token shares). bmask None or bool
    (B, 1|H, T, S) True = attend. Returns o (B, H, T, dv) and lse (B, H, T) float32 (rows with no visible
    key: o = 0, lse = -inf); the sums go to ``on_heads(h0, h1, sums (B, h1 - h0, T, ne))``, one block of
    query heads at a time, so that no (B, H, T, ne) tensor is ever kept.

    ``cpu_flash``: the CPU kernel needs one width D = max(d, dv + ne) for q, k and v, so q and k are
    zero-padded to D and the extra columns ride along with the values; the padded copies are made per block
    of query heads of at most ``budget`` elements (B · heads · T · D), which bounds the memory beyond a plain
    SDPA call. ``flex``: one call over all heads with the values and extra columns side by side.
    """
    backend = backend or default_backend(q.device)
    check_backend(backend)
    if backend is None:
        raise ValueError(f"no log-sum-exp backend for device {q.device}; give lse_backend= one of {list(BACKENDS)}")
    B, H, T, d = q.shape
    Hkv, S, dv = k.shape[1], k.shape[2], v.shape[-1]
    if H % Hkv or tuple(v.shape[:3]) != (B, Hkv, S) or tuple(k.shape) != (B, Hkv, S, d):
        raise ValueError(
            f"q {tuple(q.shape)} (B, H, T, d), k {tuple(k.shape)} and v {tuple(v.shape)} (B, Hkv, S, d|dv) with H a "
            "multiple of Hkv"
        )
    ne = 0 if extra is None else int(extra.shape[-1])
    if extra is not None and tuple(extra.shape[:3]) != (B, Hkv, S):
        raise ValueError(f"extra columns {tuple(extra.shape)} must be (B, Hkv, S, ne) = ({B}, {Hkv}, {S}, ne)")
    G = H // Hkv
    if backend == "flex":
        ke = k.repeat_interleave(G, dim=1) if G > 1 else k
        vaug = v if extra is None else torch.cat([v, extra.to(v.dtype)], dim=-1)
        vaug = vaug.repeat_interleave(G, dim=1) if G > 1 else vaug
        o, lse = attention_lse(q, ke, vaug, scale, causal=causal, window=window, bmask=bmask, backend=backend)
        if on_heads is not None and ne:
            on_heads(0, H, o[..., dv:])
        return o[..., :dv], lse
    if q.device.type != "cpu":
        raise ValueError(f"lse_backend='cpu_flash' needs CPU tensors, got {q.device}")
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    D = max(d, dv + ne)
    plain = bmask is None and (not causal or (T == S and window is None))  # the kernel's own causal flag
    add = dead = None
    if not plain:
        allowed = structural_mask(T, S, q.device, causal, window)
        if bmask is not None:
            allowed = bmask if allowed is None else bmask & allowed
        assert allowed is not None  # causal with T != S or a window, or a mask
        allowed = allowed.expand(B, -1, T, S) if allowed.dim() == 4 else allowed[None, None].expand(B, 1, T, S)
        add = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
        dead = ~allowed.any(-1)  # (B, 1|H, T): rows with no visible key
    if D == d == dv + ne and add is None:  # nothing to widen: one call, grouped-query attention native to the kernel
        o, lse = flash(q, k, v if extra is None else torch.cat([v, extra.to(v.dtype)], -1), 0.0, causal, scale=scale)
        if on_heads is not None and ne:
            on_heads(0, H, o[..., dv:])
        return o[..., :dv], lse.float()
    out = q.new_empty(B, T, H, dv).transpose(1, 2)  # (B, H, T, dv) in the (B, T, H, dv) order callers want
    lse = torch.empty(B, H, T, dtype=torch.float32, device=q.device)
    per_head = max(1, B * max(T, S) * D)
    hc = max(1, budget // per_head)  # query heads per kernel call
    kvc = max(1, min(Hkv, hc // G))  # KV heads per call (whole groups when they fit)
    for g0 in range(0, Hkv, kvc):
        g1 = min(Hkv, g0 + kvc)
        ka = _widen(k[:, g0:g1], D)  # (B, g, S, D)
        va = _widen(v[:, g0:g1] if extra is None else torch.cat([v[:, g0:g1], extra[:, g0:g1].to(v.dtype)], -1), D)
        step = G * (g1 - g0) if hc >= G else hc  # a call holds whole groups, or part of one group (then g1 = g0 + 1)
        for h0 in range(g0 * G, g1 * G, step):
            h1 = min(g1 * G, h0 + step)
            qa = _widen(q[:, h0:h1], D)
            if add is None:
                o, l = flash(qa, ka, va, 0.0, causal, scale=scale)
            else:
                am = add[:, h0:h1] if add.shape[1] > 1 else add
                o, l = flash(qa, ka, va, 0.0, False, attn_mask=am, scale=scale)
                assert dead is not None
                dd = dead[:, h0:h1] if dead.shape[1] > 1 else dead
                o = torch.where(dd[..., None], torch.zeros((), dtype=o.dtype), o)
                l = torch.where(dd, torch.tensor(float("-inf")), l.float())
            out[:, h0:h1] = o[..., :dv]
            lse[:, h0:h1] = l
            if on_heads is not None and ne:
                on_heads(h0, h1, o[..., dv : dv + ne])
    return out, lse


def _widen(x: torch.Tensor, D: int) -> torch.Tensor:
    """``x (..., w)`` zero-padded to width ``D`` (x itself, contiguous, when it already is that wide)."""
    w = x.shape[-1]
    if w == D:
        return x.contiguous()
    out = x.new_empty(*x.shape[:-1], D)
    out[..., :w] = x
    out[..., w:] = 0
    return out


def _block_mask(B, H, T, S, device, causal, window, bmask):
    from torch.nn.attention.flex_attention import create_block_mask

    key = (id(bmask) if bmask is not None else None, B, H, T, S, str(device), causal, window)
    hit = _block_masks.get(key)
    if hit is not None and hit[0] is bmask:  # the mask itself is kept referenced: ids cannot be reused
        return hit[1]
    off = S - T

    def mask_mod(b, h, qi, ki):
        ok = qi >= 0
        if causal:
            ok = ok & (ki <= qi + off)
        if window is not None:
            ok = ok & (ki > qi + off - window)
        if bmask is not None:
            ok = ok & (bmask[b, h, qi, ki] if bmask.shape[1] > 1 else bmask[b, 0, qi, ki])
        return ok

    per_head = bmask is not None and bmask.shape[1] > 1
    bm = create_block_mask(mask_mod, B if bmask is not None else None, H if per_head else None, T, S, device=device)
    _block_masks[key] = (bmask, bm)
    while len(_block_masks) > 8:
        _block_masks.popitem(last=False)
    return bm


def _flex(q, k, v, scale, causal, window, bmask):
    from torch.nn.attention.flex_attention import AuxRequest, flex_attention

    global _compiled_flex
    B, H, T, _ = q.shape
    S, dv = k.shape[2], v.shape[-1]
    if bmask is not None:
        bmask = bmask.expand(B, -1, T, S)
    bm = _block_mask(B, H, T, S, q.device, causal, window, bmask)
    if q.device.type == "cpu":
        fn = flex_attention  # unfused reference form (torch 2.13 cannot compile it with the LSE on CPU)
    else:
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention)  # dynamic shapes after the first recompile (decode)
        fn = _compiled_flex
    outs: list[torch.Tensor] = []
    lse = torch.empty(0)
    for c0 in range(0, dv, FLEX_MAX_WIDTH):
        vc = v[..., c0 : c0 + FLEX_MAX_WIDTH]
        w = vc.shape[-1]
        pad = (-w) % 16  # value blocks in multiples of 16 columns
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "flex_attention called without torch.compile()" on CPU
            o, aux = fn(q, k, F.pad(vc, (0, pad)), block_mask=bm, scale=scale, return_aux=AuxRequest(lse=True))
        outs.append(o[..., :w])
        assert aux.lse is not None
        lse = aux.lse
    o = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
    return o, lse.float()
