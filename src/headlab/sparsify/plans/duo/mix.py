"""DuoAttention's training-time mixture (Xiao et al., arXiv 2410.10819): each KV head has a gate
alpha in [0, 1], and every query head reading that KV head outputs

    alpha * full_attention + (1 - alpha) * streaming_attention

where the streaming branch sees only the first ``sink`` keys and a causal window of ``window``
keys (StreamingLLM, arXiv 2309.17453; the same rule as ``headlab.patterns.sink_window``).

``streaming_mask`` and ``mixed_attention`` are plain functions on tensors;
``gated_attention(model, gates, sink=, window=)`` routes a Hugging Face model's attention through
the mixture via transformers' ``AttentionInterface`` and restores the model's own implementation
on exit, also on errors. The full branch is transformers' own SDPA path, so gates of exactly 1
reproduce an SDPA model bit for bit.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ....engine.hf import model_shape
from ....engine.masks import to_bool_mask

_counter = itertools.count()
_UNSUPPORTED_KW = ("sliding_window", "softcap", "s_aux", "position_bias")


def streaming_mask(q_len: int, kv_len: int, sink: int, window: int, device=None) -> torch.Tensor:
    """bool (q_len, kv_len): query t (position kv_len - q_len + t) sees key j when j <= i and
    (i - j < window or j < sink)."""
    if not 0 < q_len <= kv_len:
        raise ValueError(f"need 0 < q_len <= kv_len, got q_len={q_len}, kv_len={kv_len}")
    if sink < 0 or window < 1:
        raise ValueError(f"need sink >= 0 and window >= 1, got sink={sink}, window={window}")
    i = torch.arange(kv_len - q_len, kv_len, device=device).unsqueeze(1)
    j = torch.arange(kv_len, device=device).unsqueeze(0)
    d = i - j
    return (d >= 0) & ((d < window) | (j < sink))


def _gate_per_query_head(gate: torch.Tensor, n_heads: int) -> torch.Tensor:
    """gate (Hkv,) -> (H,), query head h reading KV head h // (H // Hkv)."""
    if gate.dim() != 1 or n_heads % gate.shape[0]:
        raise ValueError(f"gate must be (Hkv,) with Hkv dividing the {n_heads} query heads, got shape {tuple(gate.shape)}")
    return gate.repeat_interleave(n_heads // gate.shape[0])


def streaming_attention(
    q, k, v, *, sink: int, window: int, scale: float | None = None, attn_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Sink + window attention with SDPA and an explicit mask.

    q (B, H, T, d), k/v (B, Hkv, S, d) -> (B, H, T, d); ``attn_mask`` a bool (B|1, 1, T, S) padding
    mask (True = may attend) or None. Sink and window count token indices, so rows must not be
    left-padded (gate training feeds unpadded samples).
    """
    T, S = q.shape[2], k.shape[2]
    m = streaming_mask(T, S, sink, window, q.device).view(1, 1, T, S)
    bmask = to_bool_mask(attn_mask)
    if bmask is not None:
        m = m & bmask
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=scale, enable_gqa=k.shape[1] != q.shape[1])
    return torch.nan_to_num(out, nan=0.0)  # fully padded query rows


def full_attention(q, k, v, *, scale: float | None = None, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Causal attention with SDPA (queries are the last T of S positions). Shapes as above."""
    T, S = q.shape[2], k.shape[2]
    bmask = to_bool_mask(attn_mask)
    gqa = k.shape[1] != q.shape[1]
    if bmask is None and T == S:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    i = torch.arange(S - T, S, device=q.device).unsqueeze(1)
    m = (torch.arange(S, device=q.device).unsqueeze(0) <= i).view(1, 1, T, S)
    if bmask is not None:
        m = m & bmask
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=scale, enable_gqa=gqa)
    return torch.nan_to_num(out, nan=0.0)


def mixed_attention(
    q, k, v, gate: torch.Tensor, *, sink: int, window: int, scale: float | None = None, attn_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """gate * full + (1 - gate) * streaming, per KV head.

    q (B, H, T, d), k/v (B, Hkv, S, d), gate (Hkv,) -> (B, H, T, d).
    """
    g = _gate_per_query_head(gate.to(q.dtype), q.shape[1]).view(1, -1, 1, 1)
    full = full_attention(q, k, v, scale=scale, attn_mask=attn_mask)
    stream = streaming_attention(q, k, v, sink=sink, window=window, scale=scale, attn_mask=attn_mask)
    return g * full + (1 - g) * stream


def _make_fn(gates: torch.Tensor, sink: int, window: int):
    order: dict[int, int] = {}

    def duo_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        for kw in _UNSUPPORTED_KW:
            if kwargs.get(kw) is not None:
                raise NotImplementedError(f"duo gate training does not implement attention with {kw}={kwargs[kw]!r}")
        layer = getattr(module, "layer_idx", None)
        if layer is None:
            layer = order.setdefault(id(module), len(order))
        gate = gates[layer]
        if gate.shape[0] != key.shape[1]:
            raise ValueError(f"layer {layer}: {gate.shape[0]} gates for {key.shape[1]} KV heads (key {tuple(key.shape)})")
        # full branch: transformers' own SDPA path (bit-identical to an SDPA model when every gate is 1)
        full, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        stream = streaming_attention(
            query, key, value, sink=sink, window=window, scale=scaling, attn_mask=attention_mask
        ).transpose(1, 2)  # (B, T, H, d)
        g = _gate_per_query_head(gate.to(query.dtype), query.shape[1]).view(1, 1, -1, 1)
        return g * full + (1 - g) * stream, None

    return duo_attention


@contextlib.contextmanager
def gated_attention(model, gates: torch.Tensor, *, sink: int, window: int) -> Iterator[None]:
    """Run ``model`` with DuoAttention's gated mixture in every layer for the duration of the block.

    gates: (layers, KV heads) tensor (may require grad; it is read at every forward pass).
    """
    if not getattr(model, "_supports_attention_backend", False):
        raise ValueError(f"{type(model).__name__} does not route its attention through transformers' AttentionInterface")
    n_layers, _, n_kv = model_shape(model)
    if tuple(gates.shape) != (n_layers, n_kv):
        raise ValueError(f"gates must have shape (layers, KV heads) = ({n_layers}, {n_kv}), got {tuple(gates.shape)}")
    if sink < 0 or window < 1:
        raise ValueError(f"need sink >= 0 and window >= 1, got sink={sink}, window={window}")
    name = f"headlab_duo_{next(_counter)}"
    AttentionInterface.register(name, _make_fn(gates, sink, window))
    AttentionMaskInterface.register(name, sdpa_mask)
    previous = model.config._attn_implementation
    try:
        model.set_attn_implementation(name)
        yield
    finally:
        model.set_attn_implementation(previous)
        AttentionInterface._global_mapping.pop(name, None)
        AttentionMaskInterface._global_mapping.pop(name, None)
