"""Score modifiers of current open models, shared by every engine path and the reference.

* **Sliding windows** (Mistral, arXiv 2310.06825; Gemma 2, arXiv 2408.00118; Gemma 3, arXiv
  2503.19786; gpt-oss): in a causal layer with window ``W``, the query at position ``p`` sees
  the keys ``p - W < j <= p`` — ``W`` keys including its own, as transformers'
  ``sliding_window_overlay`` (``kv_idx > q_idx - sliding_window``). Positions are key indices
  (queries are the last T of the S keys), so a cache that keeps a contiguous tail of the
  sequence gives the same window.
* **Logit soft-capping** (Gemma 2, arXiv 2408.00118): ``s <- c * tanh(s / c)`` on the scaled scores,
  before the mask.
* **Learned sink logits** (gpt-oss ``s_aux``; "attention sinks" of Xiao et al., arXiv 2309.17453):
  one extra logit per query head in every softmax denominator, which takes probability mass but
  has no value. The weights of the real keys then sum to ``r = Z / (Z + e^sink) <= 1``.
"""

from __future__ import annotations

import math

import torch


def check_variant(window, softcap, sinks, n_heads: int, causal: bool) -> None:
    """ValueError naming the bad value when a window / cap / sink vector cannot apply."""
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive number of keys (>= 1), got {window!r}")
        if not causal:
            raise ValueError(f"window={window} applies to causal attention only (give bidirectional windows as attn_mask)")
    if softcap is not None and (
        isinstance(softcap, bool) or not isinstance(softcap, (int, float)) or not math.isfinite(softcap) or softcap <= 0
    ):
        raise ValueError(f"softcap must be a finite number > 0, got {softcap!r}")
    if sinks is not None and (not isinstance(sinks, torch.Tensor) or tuple(sinks.shape) != (n_heads,)):
        shape = tuple(sinks.shape) if isinstance(sinks, torch.Tensor) else type(sinks).__name__
        raise ValueError(f"sinks must be a tensor of one logit per query head, shape ({n_heads},); got {shape}")


def window_rows(qabs: torch.Tensor, S: int, window: int) -> torch.Tensor:
    """(Tq, S) bool: key j is inside the window of the query at key index ``qabs`` (j > qabs - window)."""
    return torch.arange(S, device=qabs.device)[None, :] > (qabs[:, None] - window)


def cap(s: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """Gemma 2 soft-capping ``softcap * tanh(s / softcap)`` (identity when ``softcap`` is None)."""
    return s if softcap is None else softcap * torch.tanh(s / softcap)


def softmax_with_sinks(s: torch.Tensor, sinks: torch.Tensor | None) -> torch.Tensor:
    """softmax over the last dim of ``s (B, H, Tc, S)`` with one extra logit per head ``sinks (H,)``
    in the denominator; returns the weights of the S real keys (rows with no visible key -> 0)."""
    if sinks is None:
        return torch.nan_to_num(torch.softmax(s, dim=-1), nan=0.0)
    col = sinks.to(device=s.device, dtype=s.dtype)[None, :, None, None].expand(s.shape[0], -1, s.shape[2], 1)
    return torch.softmax(torch.cat([s, col], dim=-1), dim=-1)[..., :-1]


def sink_share(lse: torch.Tensor, sinks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """From the log-sum-exp ``lse (B, H, T)`` of the real keys: the log-sum-exp with the sink logit
    added, and ``r = exp(lse - lse_with_sink)``, the mass the real keys keep (1 without sinks)."""
    if sinks is None:
        return lse, torch.ones_like(lse)
    full = torch.logaddexp(lse, sinks.to(device=lse.device, dtype=lse.dtype)[None, :, None])
    return full, torch.exp(lse - full)
