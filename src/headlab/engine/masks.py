"""Mask and position helpers shared by the engine and the reference.

Conventions: q (B, H, T, d), k (B, Hkv, S, d); the T queries are the last T of the S key
positions. Boolean masks are True where a query may attend to a key.
"""

from __future__ import annotations

import torch


def expand_kv(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, Hkv, S, d) -> (B, H, S, d), query head h reading KV head h // (H // Hkv)."""
    hkv = x.shape[1]
    if n_heads % hkv:
        raise ValueError(f"query heads {n_heads} must be a multiple of key/value heads {hkv}")
    return x if hkv == n_heads else x.repeat_interleave(n_heads // hkv, dim=1)


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"expected 4-D q (B,H,T,d), k/v (B,Hkv,S,d); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, H, T, d = q.shape
    if k.shape[0] != B or k.shape[3] != d or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)} (B,H,T,d), k {tuple(k.shape)}, v {tuple(v.shape)} (B,Hkv,S,d)")
    if k.shape[2] < T:
        raise ValueError(f"more queries than keys: T={T} > S={k.shape[2]} (queries are the last T of S positions)")
    if H % k.shape[1]:
        raise ValueError(
            f"query heads {H} must be a multiple of key/value heads {k.shape[1]}: q {tuple(q.shape)}, k {tuple(k.shape)}"
        )


def to_bool_mask(attn_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Accept bool (True = attend) or additive float (0 / -inf) masks; return bool or None."""
    if attn_mask is None or attn_mask.dtype == torch.bool:
        return attn_mask
    return attn_mask > torch.finfo(attn_mask.dtype).min / 2


def causal_mask(T: int, S: int, device=None) -> torch.Tensor:
    """(T, S) bool, query t (position S - T + t) sees keys 0 .. S - T + t."""
    i = torch.arange(S - T, S, device=device).unsqueeze(1)
    j = torch.arange(S, device=device).unsqueeze(0)
    return j <= i


def positions_from_mask(mask: torch.Tensor | None, B: int, T: int, S: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Key and query positions counted from each row's first real token (-1 for pads).

    ``mask`` is the model's bool mask (B, 1|H, T, S) or None (no padding). A key is real when
    some query may see it; a query is real when it may see itself (its diagonal entry).
    Returns key_pos (B, S) and query_pos (B, T), both long.
    """
    if mask is None:
        kp = torch.arange(S, device=device).expand(B, S)
        return kp, kp[:, S - T :]
    m = mask.any(dim=1) if mask.shape[1] > 1 else mask[:, 0]  # (B, T, S)
    key_valid = m.any(dim=1)  # (B, S)
    diag = m[:, torch.arange(T, device=m.device), torch.arange(S - T, S, device=m.device)]  # (B, T)
    key_pos = torch.where(key_valid, key_valid.long().cumsum(-1) - 1, torch.full_like(key_valid, -1, dtype=torch.long))
    q_pos = torch.where(diag & key_valid[:, S - T :], key_pos[:, S - T :], torch.full_like(diag, -1, dtype=torch.long))
    return key_pos, q_pos


def shift_positions(
    key_pos: torch.Tensor, query_pos: torch.Tensor, position_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Renumber mask-derived positions with the model's own ``position_ids (B|1, T)`` when a cache
    has dropped the oldest tokens (a sliding-window cache keeps only the last W - 1): the mask then
    numbers the keys from the oldest kept one, while ``position_ids`` counts from the row's first real
    token. Each row's real keys and queries shift by ``position_ids[-1] - query_pos[-1]`` (>= 0;
    rows whose last query is a pad keep their numbering). Keys of one call are contiguous, so one
    shift per row is exact. Returns key_pos (B, S), query_pos (B, T)."""
    B = query_pos.shape[0]
    last_p = position_ids.to(query_pos.device).long().expand(B, -1)[:, -1]
    last_q = query_pos[:, -1]
    shift = torch.where(last_q >= 0, (last_p - last_q).clamp(min=0), torch.zeros_like(last_q))[:, None]  # (B, 1)
    return (torch.where(key_pos >= 0, key_pos + shift, key_pos), torch.where(query_pos >= 0, query_pos + shift, query_pos))


def pattern_rows(pattern, q_b: torch.Tensor, k_b: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """A pattern's visibility for one batch row: bool (h_or_1, Tq, S).

    q_b (1, H, Tq, d), k_b (1, Hkv, S, d); q_pos (Tq,), k_pos (S,) positions from the row's first
    real token, -1 for pads. Rules see real positions only; dynamic patterns choose among the real
    keys only (pad keys and pad queries are cut out before ``select`` and come back as False).
    """
    if not pattern.dynamic:
        return pattern.mask_rows(q_pos.clamp(min=0), k_pos.clamp(min=0))
    qv, kv = q_pos >= 0, k_pos >= 0
    if bool(qv.all()) and bool(kv.all()):
        return pattern.select(q_b, k_b, q_pos, k_pos)[0]
    if not bool(qv.any()) or not bool(kv.any()):
        return torch.zeros(1, len(q_pos), len(k_pos), dtype=torch.bool, device=q_b.device)
    sub = pattern.select(q_b[:, :, qv], k_b[:, :, kv], q_pos[qv], k_pos[kv])[0]  # (h, Tq', S')
    cols = torch.zeros(sub.shape[0], sub.shape[1], len(k_pos), dtype=torch.bool, device=q_b.device)
    cols[:, :, kv] = sub
    full = torch.zeros(sub.shape[0], len(q_pos), len(k_pos), dtype=torch.bool, device=q_b.device)
    full[:, qv] = cols
    return full
