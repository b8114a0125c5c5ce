"""Controlled relaxations of attention from Xue, Moosavi, Aletras, "Deconstructing Attention: Investigating
Design Principles for Effective Language Modeling" (2025), as drop-in token mixers for
:func:`headlab.lab.tiny_lm` (signature ``factory(d_model, n_heads) -> nn.Module``, x (B,T,D) -> (B,T,D)).

Dot-product attention interweaves four principles; each variant relaxes one (the paper names the variants
RndEmbQK, FixedSeqQK, StaticEmbQK, Approximate / Non-approximate; the exact semantics below are this
module's reading of them):

=============  ========================================  =========================================================
variant        relaxes                                   weights A (causal, rows over j <= i)
=============  ========================================  =========================================================
softmax        (standard)                                softmax(q_i·k_j/√d), q, k from the current state x
no-mix         token mixing                              A = I (o_i = v_i: no information crosses positions)
fixed-seq      sequence dependence                       softmax(p_i W_q · p_j W_k/√d), p = sinusoidal positions:
                                                         the same map for every input
static-emb     coupling of q, k to the current layer     softmax from q, k projected from the token embeddings e
rnd-emb        coupling and learned token codes          q, k projected from a frozen random code r(token id)
taylor         the exact form (approximates softmax)     (1 + s + s²/2) / Σ_j (·), s = q·k/√d: 2nd-order exp
relu-len       the exact form (does not approximate it)  relu(s_ij) / (i + 1): no exponent, no normaliser
=============  ========================================  =========================================================

v is always computed from the current state x, so only the weights are relaxed.  ``static-emb`` and
``rnd-emb`` read the model's inputs through an :class:`EmbeddingTap` that the caller fills with a forward
hook on the embedding layer (``tap.attach(model.tok)``); they raise if the tap is empty.
:func:`layer_stack` builds uniform or hybrid stacks (e.g. softmax in even layers, a variant in odd ones):
it returns one factory whose i-th call builds layer i's mixer, which is how ``TinyLM`` calls it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._heads import causal_mask, check_choice, check_dims, check_input, merge_heads, split_heads
from .softmax import MultiHeadAttention, softmax_attend, softmax_weights


class EmbeddingTap:
    """Holds the last token ids (B,T) and embeddings (B,T,D) seen by an embedding layer."""

    def __init__(self):
        self.ids: torch.Tensor | None = None
        self.emb: torch.Tensor | None = None

    def hook(self, module, args, output) -> None:
        self.ids, self.emb = args[0], output

    def attach(self, embedding: nn.Module):
        """Register the forward hook on ``embedding`` (an nn.Embedding); returns the hook handle."""
        return embedding.register_forward_hook(self.hook)

    def get(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.ids is None or self.emb is None:
            raise ValueError("EmbeddingTap is empty: call tap.attach(model.tok) before the forward pass")
        if self.ids.shape[1] != t:
            raise ValueError(f"tap holds T={self.ids.shape[1]} tokens, the mixer got T={t}")
        return self.ids, self.emb


def sinusoid(t: int, d: int, device=None) -> torch.Tensor:
    """(T, d) sinusoidal position codes (Vaswani et al.), d even or odd."""
    pos = torch.arange(t, dtype=torch.float, device=device)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float, device=device) / d)
    out = torch.zeros(t, d, device=device)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)[:, : d // 2]
    return out


def taylor_weights(q, k, causal: bool = True):
    """(1 + s + s²/2) row-normalised, s = q k^T/√d: q (B,H,T,d), k (B,H,S,d) -> (B,H,T,S); always > 0."""
    t, s = q.shape[-2], k.shape[-2]
    x = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    w = 1 + x + 0.5 * x * x
    if causal:
        w = w * causal_mask(s, q.device)[s - t :].to(w.dtype)
    return w / w.sum(-1, keepdim=True)


def relu_len_weights(q, k, causal: bool = True):
    """relu(q k^T/√d) / (number of visible keys): (B,H,T,d), (B,H,S,d) -> (B,H,T,S)."""
    t, s = q.shape[-2], k.shape[-2]
    w = F.relu(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]))
    if causal:
        m = causal_mask(s, q.device)[s - t :]
        return w * m.to(w.dtype) / m.sum(-1, keepdim=True).to(w.dtype)
    return w / s


#: similarity-form name -> weights(q, k, causal) for :class:`FormAttention`
FORMS: dict[str, Callable] = {"softmax": softmax_weights, "taylor": taylor_weights, "relu-len": relu_len_weights}


class FormAttention(MultiHeadAttention):
    """Multi-head attention with another similarity form (``taylor`` or ``relu-len``, see :data:`FORMS`)."""

    def __init__(self, d_model: int, n_heads: int, form: str = "taylor", causal: bool = True):
        super().__init__(d_model, n_heads, causal)
        check_choice("form", form, FORMS)
        self.form = form

    def forward(self, x, return_weights: bool = False):
        q, k, v = self.heads(x)
        a = FORMS[self.form](q, k, self.causal)
        y = self.out(merge_heads(a @ v))
        return (y, a) if return_weights else y


class NoMixing(nn.Module):
    """Token mixing removed: y_i = W_o W_v x_i (A = identity); weights returned as the (T, T) identity."""

    def __init__(self, d_model: int, n_heads: int, causal: bool = True):
        super().__init__()
        self.d_head = check_dims(d_model, n_heads)
        self.d_model, self.n_heads, self.causal = d_model, n_heads, causal  # causal or not: nothing is mixed
        self.value, self.out = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)

    def forward(self, x, return_weights: bool = False):
        check_input(x, self.d_model)
        y = self.out(self.value(x))
        if return_weights:
            b, t, _ = x.shape
            return y, torch.eye(t, device=x.device).expand(b, self.n_heads, t, t)
        return y


class _QKFrom(nn.Module):
    """Softmax attention whose q, k come from ``source(x) -> (B, T, D_src)`` and v from x."""

    def __init__(self, d_model: int, n_heads: int, d_src: int, causal: bool = True):
        super().__init__()
        self.d_head = check_dims(d_model, n_heads)
        self.d_model, self.n_heads, self.causal = d_model, n_heads, causal
        self.qk = nn.Linear(d_src, 2 * d_model)
        self.value, self.out = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)

    def source(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x, return_weights: bool = False):
        check_input(x, self.d_model)
        q, k = (split_heads(z, self.n_heads) for z in self.qk(self.source(x)).chunk(2, -1))
        o, a = softmax_attend(q, k, split_heads(self.value(x), self.n_heads), self.causal, return_weights)
        y = self.out(merge_heads(o))
        return (y, a) if return_weights else y


class FixedSeqAttention(_QKFrom):
    """Sequence-independent weights: q, k from sinusoidal positions only (any length)."""

    def __init__(self, d_model: int, n_heads: int, causal: bool = True):
        super().__init__(d_model, n_heads, d_model, causal)

    def source(self, x):
        return sinusoid(x.shape[1], self.d_model, x.device).expand(x.shape[0], -1, -1)


class StaticEmbAttention(_QKFrom):
    """q, k from the model's input token embeddings (read through ``tap``), not the current layer."""

    def __init__(self, d_model: int, n_heads: int, tap: EmbeddingTap, causal: bool = True):
        super().__init__(d_model, n_heads, d_model, causal)
        self.tap = tap

    def source(self, x):
        return self.tap.get(x.shape[1])[1]


class RandomEmbAttention(_QKFrom):
    """q, k from a frozen random code of the token ids (read through ``tap``), N(0, 1) (vocab, D) seeded."""

    def __init__(self, d_model: int, n_heads: int, tap: EmbeddingTap, vocab: int = 257, seed: int = 0, causal: bool = True):
        super().__init__(d_model, n_heads, d_model, causal)
        self.tap = tap
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("code", torch.randn(vocab, d_model, generator=g))

    code: torch.Tensor

    def source(self, x):
        ids = self.tap.get(x.shape[1])[0]
        if int(ids.max()) >= self.code.shape[0]:
            raise ValueError(f"token id {int(ids.max())} >= vocab={self.code.shape[0]}")
        return self.code[ids]


#: variants that need no tap: name -> factory(d_model, n_heads)
SIMPLE: dict[str, Callable[[int, int], nn.Module]] = {
    "softmax": lambda d, h: MultiHeadAttention(d, h),
    "no-mix": lambda d, h: NoMixing(d, h),
    "fixed-seq": lambda d, h: FixedSeqAttention(d, h),
    "taylor": lambda d, h: FormAttention(d, h, "taylor"),
    "relu-len": lambda d, h: FormAttention(d, h, "relu-len"),
}
VARIANTS = (*SIMPLE, "static-emb", "rnd-emb")


def variant_factory(name: str, tap: EmbeddingTap | None = None, vocab: int = 257) -> Callable[[int, int], nn.Module]:
    """Factory for variant ``name`` (:data:`VARIANTS`); ``static-emb`` / ``rnd-emb`` need a ``tap``."""
    if name in SIMPLE:
        return SIMPLE[name]
    if name not in VARIANTS:
        raise ValueError(f"variant={name!r}; valid: {list(VARIANTS)}")
    if tap is None:
        raise ValueError(f"variant {name!r} reads the token embeddings: pass tap=EmbeddingTap()")
    if name == "static-emb":
        return lambda d, h: StaticEmbAttention(d, h, tap)
    return lambda d, h: RandomEmbAttention(d, h, tap, vocab)


def layer_stack(names: Sequence[str], tap: EmbeddingTap | None = None, vocab: int = 257) -> Callable[[int, int], nn.Module]:
    """One factory whose i-th call builds ``names[i]``'s mixer (a hybrid or uniform stack for ``tiny_lm``
    with ``layers=len(names)``); a call past the end raises."""
    if not names:
        raise ValueError("names must list one variant per layer")
    factories = [variant_factory(n, tap, vocab) for n in names]
    calls = iter(range(len(factories)))

    def make(d_model: int, n_heads: int) -> nn.Module:
        i = next(calls, None)
        if i is None:
            raise ValueError(f"layer_stack({list(names)}) builds {len(names)} layers; asked for one more")
        return factories[i](d_model, n_heads)

    make.__name__ = "+".join(names)
    return make
