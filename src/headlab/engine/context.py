"""Per-call context handed to every plug-in (edit, probe, pattern) by the engine.

Shapes use: B batch, H query heads, Hkv key/value heads, T queries in this call,
S keys in this call (queries are the last T of the S positions), Tc queries in one chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class AttnContext:
    """What the engine knows about one attention call.

    Attributes:
        layer: layer index (0-based) or 0 for bare ``attend`` calls.
        n_layers: number of layers of the model (1 for bare calls).
        n_heads: H, query heads.
        n_kv_heads: Hkv, key/value heads (query head h reads KV head h // (H // Hkv)).
        causal: whether the model's attention is causal.
        key_pos: (B, S) long, position of each key inside its own row's real tokens
            (0 = first non-pad token), -1 for pad keys.
        query_pos: (B, T) long, same numbering for the T queries, -1 for pad queries.
        q_index: (Tc,) long, indices in 0..T-1 of the queries in the current chunk
            (set by the chunked path; the full range elsewhere).
        state: dict shared by everything attached in one ``attach`` run (e.g. token groups,
            input ids); plug-ins may read it.
    """

    layer: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    causal: bool
    key_pos: torch.Tensor
    query_pos: torch.Tensor
    q_index: torch.Tensor | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> int:
        return self.n_heads // self.n_kv_heads

    def chunk_query_pos(self) -> torch.Tensor:
        """(B, Tc) positions of the queries of the current chunk."""
        if self.q_index is None:
            return self.query_pos
        return self.query_pos[:, self.q_index]

    def key_valid(self) -> torch.Tensor:
        """(B, S) bool, True for real (non-pad) keys."""
        return self.key_pos >= 0

    def query_valid(self) -> torch.Tensor:
        """(B, Tc) bool, True for real queries of the current chunk."""
        return self.chunk_query_pos() >= 0
