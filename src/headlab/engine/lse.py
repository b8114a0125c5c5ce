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
    allowed = structural_mask(T, S, q.device, causal, window)
    if bmask is None and (allowed is None or (T == S and window is None)):
        o, lse = flash(qa, ka, va, 0.0, allowed is not None, scale=scale)
        return o[..., :dv], lse.float()
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
