"""Perturbed-attention guidance for text decoders: SoftPAG on selected heads, applied to next-token logits.

Ahn et al., "Fine-Grained Perturbation Guidance via Attention Head Selection" (arXiv 2506.10978) guide a
diffusion transformer away from a *weak model*: the same network with the attention maps of selected heads
perturbed. SoftPAG blends each selected head's map toward the identity, ``Ã = (1 − u)·A + u·I`` with
``u ∈ [0, 1]`` (u = 1 is PAG, every query attends only to itself, so ``o_i = v_i``); the guided
prediction is ``ε̂ = ε + s·(ε − ε_perturbed)``.

Text adaptation (ours, not the paper's): the guided quantity is the next-token logit vector,

    logits_guided = logits + s · (logits − logits_perturbed)

a contrastive decoding against the SoftPAG-perturbed copy of the same model. The perturbed pass is
``headlab.attach(model, edits=[identity_blend(sites, u)])``. Several perturbed passes (one per
candidate head set, as a head search needs) run as one batch: the prompt batch is repeated once per
candidate and :class:`RowBlend` applies each candidate's blend to its own rows only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..edits.base import Edit
from ..edits.identity_blend import IdentityBlend, identity_blend
from ..engine.context import AttnContext
from ..engine.hf import attach, model_shape
from ..engine.sites import parse_sites, site_pairs


def check_scale(scale: float) -> float:
    """The guidance scale s: a finite float (s = 0 is no guidance)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"guidance scale s must be a finite number, got {scale!r}")
    return float(scale)


def check_u(u: float) -> float:
    """SoftPAG's blend weight u in [0, 1]."""
    if isinstance(u, bool) or not isinstance(u, (int, float)) or not (0.0 <= float(u) <= 1.0):
        raise ValueError(f"SoftPAG blend u must be in [0, 1], got {u!r}")
    return float(u)


def guide(logits: torch.Tensor, perturbed: torch.Tensor, scale: float) -> torch.Tensor:
    """``logits + s · (logits − perturbed)`` (any shape; both the same shape)."""
    s = check_scale(scale)
    if logits.shape != perturbed.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and perturbed logits {tuple(perturbed.shape)} differ in shape")
    return logits + s * (logits - perturbed)


def head_list(sites: Any, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """Explicit sorted (layer, head) pairs of a selector ('L3H1,L5', [(3, 1)], ...), checked against the model."""
    return site_pairs(parse_sites(sites, n_layers, n_heads))


class RowBlend(Edit):
    """Row groups of one batch, each with its own SoftPAG blend: rows ``[r0, r1)`` get ``edit``.

    ``groups``: [(r0, r1, IdentityBlend)]; rows of no group keep their attention. This is how
    several candidate head sets are perturbed in one forward pass (each candidate on its own copy
    of the prompts)."""

    name = "row_blend"

    def __init__(self, groups: Sequence[tuple[int, int, IdentityBlend]]) -> None:
        super().__init__("all")
        self.groups = [(int(r0), int(r1), e) for r0, r1, e in groups]
        for r0, r1, e in self.groups:
            if not 0 <= r0 < r1:
                raise ValueError(f"row group [{r0}, {r1}) is empty or negative")
            if not isinstance(e, IdentityBlend):
                raise ValueError(f"row groups take identity_blend edits, got {e!r}")

    def bind(self, n_layers: int, n_heads: int) -> RowBlend:
        super().bind(n_layers, n_heads)
        for _, _, e in self.groups:
            e.bind(n_layers, n_heads)
        return self

    def weights(self, a: torch.Tensor, ctx: AttnContext) -> torch.Tensor:  # a: (B, H, Tc, S)
        out = a
        for r0, r1, e in self.groups:
            if r1 > a.shape[0]:
                raise ValueError(f"row group [{r0}, {r1}) is outside the batch of {a.shape[0]} rows")
            if len(e.heads_in(ctx)) == 0:
                continue
            sub = dataclasses.replace(ctx, key_pos=ctx.key_pos[r0:r1], query_pos=ctx.query_pos[r0:r1])
            if out is a:
                out = a.clone()
            out[r0:r1] = e.weights(a[r0:r1], sub)
        return out

    def describe(self) -> str:
        return f"row_blend({len(self.groups)} groups)"


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) position ids of a left- or right-padded batch: 0 at each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _inputs(input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.as_tensor(input_ids)
    if ids.dim() != 2 or ids.shape[1] < 1 or ids.dtype not in (torch.long, torch.int, torch.int32, torch.int64):
        raise ValueError(f"input_ids must be a (B, T) integer tensor with T >= 1, got {tuple(ids.shape)} {ids.dtype}")
    mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask).long()
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask {tuple(mask.shape)} must have the shape of input_ids {tuple(ids.shape)}")
    return ids.long(), mask


def forward_logits(model, ids: torch.Tensor, mask: torch.Tensor, last_only: bool = True) -> torch.Tensor:
    """Float32 CPU logits of one plain pass (whatever is attached): last position (B, V) or all (B, T, V)."""
    dev = model.device
    out = model(
        input_ids=ids.to(dev),
        attention_mask=mask.to(dev),
        position_ids=positions(mask).to(dev),
        use_cache=False,
        logits_to_keep=1 if last_only else 0,
    ).logits
    return (out[:, -1] if last_only else out).float().cpu()


@dataclass
class Guided:
    """Logits of one guided step: ``plain`` and ``perturbed`` passes and ``guided`` = plain + s·(plain − perturbed).
    Shapes (B, V) (last position) or (B, T, V)."""

    plain: torch.Tensor
    perturbed: torch.Tensor
    guided: torch.Tensor
    scale: float
    u: float
    heads: list[tuple[int, int]]


def guided_logits(
    model, input_ids, attention_mask=None, sites: Any = "all", u: float = 1.0, scale: float = 1.0, last_only: bool = True
) -> Guided:
    """Plain, SoftPAG-perturbed (``sites`` blended toward the identity by ``u``) and guided logits.

    input_ids / attention_mask: (B, T), left- or right-padded (position ids follow the mask)."""
    u, scale = check_u(u), check_scale(scale)
    ids, mask = _inputs(input_ids, attention_mask)
    L, H, _ = model_shape(model)
    heads = head_list(sites, L, H)
    with torch.no_grad():
        plain = forward_logits(model, ids, mask, last_only)
        with attach(model, edits=[identity_blend(heads, u=u)]):
            pert = forward_logits(model, ids, mask, last_only)
    return Guided(plain, pert, guide(plain, pert, scale), scale, u, heads)


def perturbed_last_logits(
    model, input_ids, attention_mask, candidates: Sequence[Any], u: float = 1.0, max_rows: int = 64
) -> torch.Tensor:
    """(C, B, V) last-position logits with candidate ``c``'s heads SoftPAG-perturbed, for every candidate
    head set in ``candidates`` (selectors or pair lists). Candidates share forward passes: the (B, T)
    batch is repeated once per candidate, up to ``max_rows`` rows a pass (at least one candidate)."""
    u = check_u(u)
    ids, mask = _inputs(input_ids, attention_mask)
    if not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError(f"max_rows must be an int >= 1, got {max_rows!r}")
    L, H, _ = model_shape(model)
    sets = [head_list(c, L, H) for c in candidates]
    if not sets:
        raise ValueError("candidates is empty: give at least one head set")
    B = ids.shape[0]
    per = max(1, max_rows // B)
    outs = []
    with torch.no_grad():
        for c0 in range(0, len(sets), per):
            chunk = sets[c0 : c0 + per]
            ed = RowBlend([(j * B, (j + 1) * B, identity_blend(s, u=u)) for j, s in enumerate(chunk)])
            with attach(model, edits=[ed]):
                lg = forward_logits(model, ids.repeat(len(chunk), 1), mask.repeat(len(chunk), 1), True)
            outs.append(lg.view(len(chunk), B, -1))
    return torch.cat(outs)


def guided_generate(
    model,
    input_ids,
    attention_mask=None,
    sites: Any = "all",
    u: float = 1.0,
    scale: float = 1.0,
    max_new_tokens: int = 32,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> torch.Tensor:
    """Greedy decoding from the guided logits; returns the (B, max_new_tokens) new tokens (a row that has
    emitted ``eos_token_id`` continues with ``pad_token_id``, default the EOS id, as ``generate`` does).

    Plain and perturbed streams run as one batch of 2B rows with a KV cache (rows B..2B-1 perturbed by
    :class:`RowBlend`); both streams receive the token chosen from the guided logits. Prompts left-padded."""
    u, scale = check_u(u), check_scale(scale)
    ids, mask = _inputs(input_ids, attention_mask)
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if bool((mask[:, -1] == 0).any()):
        raise ValueError("guided_generate needs left-padded prompts (every row's last token real)")
    L, H, _ = model_shape(model)
    heads = head_list(sites, L, H)
    B = ids.shape[0]
    dev = model.device
    x, m = ids.repeat(2, 1).to(dev), mask.repeat(2, 1).to(dev)
    ed = RowBlend([(B, 2 * B, identity_blend(heads, u=u))])
    done = torch.zeros(B, dtype=torch.bool)
    new = []
    cache = None
    step_ids = x
    fill_id = int(eos_token_id if pad_token_id is None else pad_token_id) if eos_token_id is not None else 0
    with torch.no_grad(), attach(model, edits=[ed]):
        for _ in range(max_new_tokens):
            pos = positions(m)[:, -step_ids.shape[1] :]
            out = model(input_ids=step_ids, attention_mask=m, position_ids=pos, cache=cache, use_cache=True)
            cache = out.cache
            last = out.logits[:, -1].float().cpu()
            nxt = guide(last[:B], last[B:], scale).argmax(-1)
            if eos_token_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, fill_id), nxt)
                done |= nxt == eos_token_id
            new.append(nxt)
            step_ids = nxt.repeat(2)[:, None].to(dev)
            m = torch.cat([m, torch.ones(2 * B, 1, dtype=m.dtype, device=dev)], dim=1)
            if eos_token_id is not None and bool(done.all()):
                break
    toks = torch.stack(new, dim=1)
    if toks.shape[1] < max_new_tokens:
        fill = torch.full((B, max_new_tokens - toks.shape[1]), fill_id, dtype=toks.dtype)
        toks = torch.cat([toks, fill], dim=1)
    return toks


__all__ = [
    "Guided",
    "RowBlend",
    "check_scale",
    "check_u",
    "forward_logits",
    "guide",
    "guided_generate",
    "guided_logits",
    "head_list",
    "perturbed_last_logits",
    "positions",
]
