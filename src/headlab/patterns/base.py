"""Contract shared by every sparse-attention pattern (HP-MASK).

Positions: a pattern is a rule on (query position i, key position j), both counted from the
first real token of a row. ``mask(q_len, kv_len)`` places the queries at the last ``q_len`` of
the ``kv_len`` positions (so decode steps with a cache work): i = kv_len - q_len + t.

Every pattern provides
    mask_rows(q_pos (Tq,), k_pos (S,))     -> bool (h_or_1, Tq, S)   True = may attend
    mask(q_len, kv_len)                    -> bool (h_or_1, q_len, kv_len)
    block_layout(q_len, kv_len, block)     -> bool (h_or_1, ceil(q_len/block), ceil(kv_len/block))
    density(q_len, kv_len)                 -> float, fraction of allowed (i, j) among the causal
                                              pairs j <= i (``causal=False``: among all pairs)
    nominal_density(n)                     -> float, density(n, n); for dynamic patterns the
                                              share of causal pairs their key budget keeps
``h_or_1`` is 1 when every head shares the mask, else ``n_heads``.
Dynamic patterns (``dynamic = True``) choose keys from the data and implement
    select(q (B,H,Tq,d), k (B,Hkv,S,d), q_pos (Tq,), k_pos (S,)) -> bool (B, h_or_1, Tq, S)
instead of ``mask_rows``.
``kv_per_head`` says, for per-head patterns under GQA, whether the rule is defined per KV head
(so it can save KV memory: ``n_heads`` is then the number of KV heads) or only masks query heads
that share a KV head (``n_heads`` is then the number of query heads). ``for_heads(H, Hkv)``
returns the pattern in query-head numbering either way.

Static patterns are written once, as an element-wise rule
    rule(h, i, j, n) -> bool tensor broadcast over h (head index), i (query pos), j (key pos)
with ``n`` the sequence length (kv_len, an int). The same rule serves the dense mask, the
block-gather kernel and FlexAttention's ``mask_mod``, so it must use tensor ops only (no Python
branching on tensor values).
"""

from __future__ import annotations

import math

import torch

_ROW_CHUNK = 256  # query rows evaluated at once when building block layouts


def check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    """Validate an integer parameter; raise ValueError naming the value and the valid range."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            if int(value) != value:
                raise TypeError
            value = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {rng}, got {value}")
    return value


class Pattern:
    name = "pattern"
    dynamic = False
    n_heads: int | None = None  # None: one mask for every head
    kv_per_head = False

    # ------------------------------------------------------------------ rule API
    def rule(self, h, i, j, n: int):
        """Element-wise rule; broadcast bool tensor. Static patterns override this."""
        raise NotImplementedError(f"{self.name} defines no element-wise rule")

    def check(self, q_len: int, kv_len: int) -> None:
        """Raise ValueError if the pattern cannot be used at these lengths (override)."""

    @property
    def heads(self) -> int:
        return self.n_heads or 1

    # ------------------------------------------------------------------ masks
    def mask_rows(self, q_pos: torch.Tensor, k_pos: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """bool (h_or_1, Tq, S) for query positions q_pos (Tq,) and key positions k_pos (S,).

        ``n`` is the sequence length used by length-dependent rules (default: max position + 1).
        """
        if self.dynamic:
            raise ValueError(f"{self.name} is dynamic: it selects keys from the data; use select()")
        q_pos = torch.as_tensor(q_pos).to(torch.int32).reshape(-1)  # int32: rules run ~2x faster
        k_pos = torch.as_tensor(k_pos).to(torch.int32).reshape(-1)
        if n is None:
            n = int(max(int(q_pos.max()) if q_pos.numel() else 0, int(k_pos.max()) if k_pos.numel() else 0)) + 1
        h = torch.arange(self.heads, device=q_pos.device).view(-1, 1, 1)
        m = self.rule(h, q_pos.view(1, -1, 1), k_pos.view(1, 1, -1), n)
        m = torch.as_tensor(m, device=q_pos.device)
        return m.expand(self.heads, q_pos.numel(), k_pos.numel())

    def select(self, q, k, q_pos, k_pos) -> torch.Tensor:  # dynamic patterns only
        raise NotImplementedError(f"{self.name} is static; use mask_rows")

    def mask(self, q_len: int, kv_len: int) -> torch.Tensor:
        if q_len <= 0 or kv_len <= 0 or q_len > kv_len:
            raise ValueError(f"need 0 < q_len <= kv_len, got q_len={q_len}, kv_len={kv_len}")
        self.check(q_len, kv_len)
        q_pos = torch.arange(kv_len - q_len, kv_len)
        return self.mask_rows(q_pos, torch.arange(kv_len), kv_len).clone()

    def block_layout(self, q_len: int, kv_len: int, block: int, causal: bool = False) -> torch.Tensor:
        """bool (h_or_1, ceil(q_len/block), ceil(kv_len/block)): blocks holding any allowed pair.

        Query blocks count from the first query (q_len rows), key blocks from key 0. Built
        row-chunk by row-chunk, so memory stays O(h * 256 * kv_len). ``causal`` also requires j <= i.
        """
        block = check_int("block", block, 1)
        if q_len <= 0 or kv_len <= 0 or q_len > kv_len:
            raise ValueError(f"need 0 < q_len <= kv_len, got q_len={q_len}, kv_len={kv_len}")
        self.check(q_len, kv_len)
        own = getattr(self, "block", None)
        if hasattr(self, "block_rule") and block == own and (kv_len - q_len) % block == 0:
            # block-defined rule on aligned blocks: evaluate on the block grid directly (exact)
            nq, nk = math.ceil(q_len / block), math.ceil(kv_len / block)
            bq = torch.arange(nq).view(1, -1, 1) + (kv_len - q_len) // block
            bk = torch.arange(nk).view(1, 1, -1)
            h = torch.arange(self.heads).view(-1, 1, 1)
            return torch.as_tensor(self.block_rule(h, bq, bk)).expand(self.heads, nq, nk).clone()  # pyright: ignore[reportAttributeAccessIssue]
        return self._block_layout_generic(q_len, kv_len, block, causal)

    def _block_layout_generic(self, q_len: int, kv_len: int, block: int, causal: bool = False) -> torch.Tensor:
        nq, nk = math.ceil(q_len / block), math.ceil(kv_len / block)
        out = torch.zeros(self.heads, nq, nk, dtype=torch.bool)
        k_pos = torch.arange(kv_len)
        pad_k = nk * block - kv_len
        step = max(block, (_ROW_CHUNK // block) * block)
        for a in range(0, q_len, step):
            rows = torch.arange(kv_len - q_len + a, kv_len - q_len + min(q_len, a + step))
            m = self.mask_rows(rows, k_pos, kv_len)
            if causal:
                m = m & (k_pos.view(1, 1, -1) <= rows.view(1, -1, 1))
            m = torch.nn.functional.pad(m, (0, pad_k, 0, (-m.shape[1]) % block))
            h, r, _ = m.shape
            out[:, a // block : a // block + r // block] = m.view(h, r // block, block, nk, block).any(4).any(2)
        return out

    def density(self, q_len: int, kv_len: int, causal: bool = True) -> float:
        """Fraction of allowed (i, j), averaged over heads; among pairs j <= i when ``causal``."""
        self.check(q_len, kv_len)
        k_pos = torch.arange(kv_len)
        allowed = 0.0
        total = 0.0
        for a in range(0, q_len, _ROW_CHUNK):
            rows = torch.arange(kv_len - q_len + a, kv_len - q_len + min(q_len, a + _ROW_CHUNK))
            m = self.mask_rows(rows, k_pos, kv_len)
            if causal:
                c = k_pos.view(1, -1) <= rows.view(-1, 1)
                allowed += float((m & c).sum()) / m.shape[0]
                total += float(c.sum())
            else:
                allowed += float(m.sum()) / m.shape[0]
                total += float(m.shape[1] * m.shape[2])
        return allowed / max(total, 1.0)

    def nominal_density(self, n: int) -> float:
        """The density a pattern is quoted at, at length ``n``: among the causal pairs,
        ``density(n, n)``; dynamic patterns (which choose keys from the data) return the share of
        causal pairs their key budget keeps."""
        return self.density(n, n)

    # ------------------------------------------------------------------ FlexAttention
    def mask_mod(
        self,
        kv_len: int,
        q_len: int | None = None,
        n_heads: int | None = None,
        n_kv_heads: int | None = None,
        causal: bool = False,
    ):
        """This pattern as a FlexAttention ``mask_mod(b, h, q_idx, kv_idx) -> bool`` for ``q_len``
        queries (default ``kv_len``) placed at the last ``q_len`` of ``kv_len`` positions, ready for
        ``torch.nn.attention.flex_attention.create_block_mask(fn, B, H, q_len, kv_len)``.

        ``n_heads``/``n_kv_heads`` map a per-KV-head pattern onto query heads (GQA); ``causal``
        also requires kv_idx <= the query's position. Static patterns only."""
        if self.dynamic:
            raise ValueError(f"{self.name} is dynamic (it selects keys from the data): it has no mask_mod")
        kv_len = check_int("kv_len", kv_len, 1)
        q_len = kv_len if q_len is None else check_int("q_len", q_len, 1, kv_len)
        self.check(q_len, kv_len)
        p = self.for_heads(n_heads, n_kv_heads or n_heads) if n_heads else self
        if p.kv_per_head and p.n_heads:
            raise ValueError(f"{self.name} is defined per KV head: pass n_heads and n_kv_heads to map it onto query heads")
        off = kv_len - q_len

        def mask_mod(b, h, q_idx, kv_idx):
            i = q_idx + off
            m = p.rule(h if p.n_heads else torch.zeros_like(h), i, kv_idx, kv_len)
            return (m & (kv_idx <= i)) if causal else m

        return mask_mod

    # ------------------------------------------------------------------ heads
    def for_heads(self, n_heads: int, n_kv_heads: int) -> Pattern:
        """This pattern in query-head numbering for a layer with H query / Hkv KV heads."""
        from .compose import for_heads

        return for_heads(self, n_heads, n_kv_heads)

    # ------------------------------------------------------------------ composition
    def __or__(self, other: Pattern) -> Pattern:
        from .compose import Union

        return Union(self, other)

    def __and__(self, other: Pattern) -> Pattern:
        from .compose import Intersection

        return Intersection(self, other)

    def describe(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<pattern {self.describe()}>"
