"""Stop-word "magnet" share per head: the attention mass that lands on function words and punctuation.

RefAM (Kukleva et al., "RefAM: Attention Magnets for Zero-Shot Referral Segmentation", arXiv
2509.22650) finds that stop words act as attention magnets: they collect surplus attention that
carries no content. Per head, over valid queries i:

    magnet = mean_i Σ_{j ∈ M, pos(j) > 0} A[i, j]

with M the keys whose token is a magnet (:func:`is_magnet`: an English stop word from
:data:`STOP_WORDS`, a punctuation-only token, or a whitespace-only token). The first real token is
left out: it is the attention sink whatever its text (the ``sink`` metric measures it).

The probe needs each key's token: ``ctx.state["input_ids"]`` (B, S), and the magnet vocabulary ids
``ctx.state["magnet_ids"]`` (or ``MagnetProbe(magnet_ids=...)``). ``headlab scan`` provides both;
with ``attach`` pass ``state=magnet_state(tokenizer, input_ids)`` and set ``run.state["input_ids"]``
to each batch. Read it against the magnet tokens' share of the text (:func:`magnet_fraction`): a head
whose magnet share is well above that fraction is drawn to function words.

Fast form (no map): the share is Σ_j A[i, j] m_j with the key indicator m (B, S), a weighted sum over
keys like the output itself, so the engine appends m as one more value column of the SDPA call
(``"keys"``: :meth:`MagnetProbe.key_weights`) and reads Σ_j A_ij m_j back per query, exactly.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

import torch

from ..engine.context import AttnContext
from .base import Probe

#: the stop words (lower case): articles, pronouns, prepositions, conjunctions, auxiliaries, particles
# fmt: off
STOP_WORDS = frozenset((
    "a", "an", "the", "this", "that", "these", "those", "it", "its", "it's", "he", "him", "his", "she", "her",
    "hers", "they", "them", "their", "theirs", "we", "us", "our", "you", "your", "i", "me", "my", "mine", "who",
    "whom", "whose", "which", "what", "there", "here", "of", "to", "in", "on", "at", "by", "for", "with", "from",
    "into", "onto", "over", "under", "about", "as", "than", "then", "so", "and", "or", "but", "nor", "if", "because",
    "while", "though", "although", "not", "no", "yes", "do", "does", "did", "done", "be", "is", "am", "are", "was",
    "were", "been", "being", "have", "has", "had", "having", "will", "would", "shall", "should", "can", "could",
    "may", "might", "must", "also", "just", "very", "too", "only", "such", "some", "any", "all", "each", "every",
    "other", "more", "most", "much", "many", "s", "t",
))
# fmt: on


def is_magnet(text: str) -> bool:
    """Whether a token's text is a magnet: a stop word (case-insensitive, surrounding blanks and
    word-piece marks ignored), a punctuation-only or a whitespace-only token."""
    t = text.replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\n").replace("##", "")
    core = t.strip()
    if not core:
        return True  # blanks and newlines
    if all(unicodedata.category(c).startswith("P") or unicodedata.category(c).startswith("S") for c in core):
        return True
    return core.lower() in STOP_WORDS


def magnet_ids(tokenizer, ids: Iterable[int]) -> torch.Tensor:
    """(K,) long: the ids among ``ids`` whose decoded token is a magnet (special tokens are not)."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    uniq = sorted({int(i) for i in ids} - special)
    keep = [i for i in uniq if is_magnet(tokenizer.decode([i]))]
    return torch.tensor(keep, dtype=torch.long)


def magnet_state(tokenizer, input_ids: torch.Tensor) -> dict:
    """``{"input_ids", "magnet_ids"}`` for ``attach(..., state=...)`` over ``input_ids`` (B, T)."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, tokens), got shape {tuple(input_ids.shape)}")
    return {"input_ids": input_ids, "magnet_ids": magnet_ids(tokenizer, input_ids.reshape(-1).tolist())}


def magnet_fraction(input_ids: torch.Tensor, mids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> float:
    """Fraction of the real tokens after each row's first that are magnets (the share of a head that
    attended uniformly, roughly)."""
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    pos = valid.long().cumsum(-1) - 1
    keep = valid & (pos > 0)
    n = int(keep.sum())
    return float((torch.isin(input_ids, mids) & keep).sum()) / n if n else float("nan")


class MagnetProbe(Probe):
    name = "magnet"
    fast_needs = ("keys",)
    formula = "mean over queries i of sum_j A[i, j] over keys j > 0 whose token is a stop word, punctuation or blank"
    paper = 'Kukleva et al., "RefAM: Attention Magnets for Zero-Shot Referral Segmentation", arXiv 2509.22650'
    role = None  # the paper gives no head threshold

    def __init__(self, magnet_ids: torch.Tensor | Iterable[int] | None = None) -> None:
        super().__init__()
        self.magnet_ids = None if magnet_ids is None else torch.as_tensor(list(magnet_ids), dtype=torch.long)

    def key_is_magnet(self, ctx: AttnContext) -> torch.Tensor:
        """(B, S) bool: keys (after each row's first real token) whose token is a magnet."""
        ids = ctx.state.get("input_ids")
        mids = self.magnet_ids if self.magnet_ids is not None else ctx.state.get("magnet_ids")
        if ids is None or mids is None:
            raise RuntimeError(
                "the magnet probe needs each key's token: ctx.state['input_ids'] (B, S) and the magnet ids "
                "(ctx.state['magnet_ids'] or MagnetProbe(magnet_ids=...)); headlab scan sets them, with attach "
                "pass state=magnet_state(tokenizer, input_ids)"
            )
        ids = torch.as_tensor(ids)
        if tuple(ids.shape) != tuple(ctx.key_pos.shape):
            raise ValueError(
                f"magnet probe: ctx.state['input_ids'] has shape {tuple(ids.shape)} but the keys are (B, S) = "
                f"{tuple(ctx.key_pos.shape)}; it runs on full forward passes (no KV cache), one input_ids per batch"
            )
        dev = ctx.key_pos.device
        return torch.isin(ids.to(dev), torch.as_tensor(mids).to(dev)) & (ctx.key_pos > 0)

    def key_weights(self, ctx: AttnContext) -> torch.Tensor:
        """(B, S) float: 1 on magnet keys after each row's first real token (the fast form's value column)."""
        return self.key_is_magnet(ctx).float()

    def update_fast(self, stats, ctx: AttnContext) -> None:
        self.add(ctx, stats[self.key_stat], ctx.query_valid())  # (B, H, T) Σ_j A_ij m_j

    def update(self, a: torch.Tensor, ctx: AttnContext) -> None:
        # a (B, H, Tc, S)
        m = self.key_is_magnet(ctx).to(a.dtype)  # (B, S)
        share = torch.einsum("bhts,bs->bht", a, m)  # pad query rows are dropped by add()
        self.add(ctx, share, ctx.query_valid())
