"""Multi-Layers Trainable Pooling: Tang & Yang, "Pooling and Attention: What are Effective Designs for
LLM-Based Embedding Models?" (2024, arXiv 2409.02727), official repo yixuantt/PoolingAndAttn
(``pooling_layers/MultiLayersTrainablePooling.py``).

1. the last-token hidden state of every layer gives H (B, L, D);
2. a learned layer-position embedding (L, D) is added;
3. R learned latents (R, D) cross-attend to H (pre-LayerNorm on both streams, ``n_heads`` × ``d_head``),
   with a residual;
4. a GEGLU feed-forward (×4) with a residual;
5. mean over the latents, then L2 normalisation -> embedding (B, D).

Shapes: layer_states (B, L, D) -> (B, D) unit vectors.  :func:`last_token_states` builds H from a
model's ``hidden_states`` tuple.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def last_token_states(hidden_states, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Stack the last real token of each layer: tuple of L tensors (B, T, D) -> (B, L, D).
    ``attention_mask`` (B, T) with 1 = real token assumes right padding."""
    hs = torch.stack(list(hidden_states), dim=1)  # (B,L,T,D)
    b, _, t, _ = hs.shape
    last = torch.full((b,), t - 1, dtype=torch.long, device=hs.device)
    if attention_mask is not None:
        last = attention_mask.long().sum(-1).clamp_min(1) - 1
    return hs[torch.arange(b, device=hs.device), :, last]


class MultiLayerTrainablePooling(nn.Module):
    def __init__(self, n_layers: int, d_model: int, n_latents: int = 16, n_heads: int = 4, d_head: int = 64):
        super().__init__()
        if min(n_layers, d_model, n_latents, n_heads, d_head) < 1:
            raise ValueError("n_layers, d_model, n_latents, n_heads, d_head must all be >= 1")
        self.n_layers, self.d_model, self.n_heads, self.d_head = n_layers, d_model, n_heads, d_head
        inner = n_heads * d_head
        self.layer_pos = nn.Embedding(n_layers, d_model)
        self.latents = nn.Parameter(torch.randn(n_latents, d_model) * 0.02)
        self.norm_lat, self.norm_ctx, self.norm_ff = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.to_q = nn.Linear(d_model, inner, bias=False)
        self.to_kv = nn.Linear(d_model, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, d_model)
        self.ff_in = nn.Linear(d_model, 2 * 4 * d_model)
        self.ff_out = nn.Linear(4 * d_model, d_model)

    def cross_attention(self, lat: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """lat (B,R,D) queries, ctx (B,L,D) keys/values (both already normalised) -> (B,R,D)."""
        b, r, _ = lat.shape
        h, dh = self.n_heads, self.d_head
        q = self.to_q(lat).view(b, r, h, dh).transpose(1, 2)
        k, v = (z.view(b, -1, h, dh).transpose(1, 2) for z in self.to_kv(ctx).chunk(2, -1))
        a = (q @ k.transpose(-1, -2) * dh**-0.5).softmax(-1)
        return self.to_out((a @ v).transpose(1, 2).reshape(b, r, h * dh))

    def forward(self, layer_states: torch.Tensor) -> torch.Tensor:
        if layer_states.dim() != 3 or layer_states.shape[1:] != (self.n_layers, self.d_model):
            raise ValueError(f"expected (B, {self.n_layers}, {self.d_model}), got {tuple(layer_states.shape)}")
        ctx = self.norm_ctx(layer_states + self.layer_pos.weight)
        lat = self.latents.expand(layer_states.shape[0], -1, -1)
        lat = lat + self.cross_attention(self.norm_lat(lat), ctx)
        a, gate = self.ff_in(self.norm_ff(lat)).chunk(2, -1)
        lat = lat + self.ff_out(a * F.gelu(gate))
        return F.normalize(lat.mean(1), dim=-1)
