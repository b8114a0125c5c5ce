"""Synthetic recall tasks for ``headlab bench mechanisms``: seeded batch generators with a loss mask.

- :func:`mqar` — multi-query associative recall (Arora et al., "Zoology", arXiv 2312.04927): the context
  lists ``pairs`` key-value pairs ``k_1 v_1 … k_N v_N``, then every key is queried again in a random order
  ``k_{π1} v_{π1} k_{π2} v_{π2} …``; the model must predict each queried value right after its key.
  Keys come from ids [0, n_keys), values from [n_keys, n_keys + n_values); keys in one sequence are distinct.
- :func:`selective_copy` — selective copying (Gu & Dao, Mamba, arXiv 2312.00752): ``n_tokens`` data tokens
  (ids [2, vocab)) scattered at random positions of a ``length``-long stretch of blanks (id 0), then
  ``n_tokens`` copy markers (id 1); at the i-th marker the model must output the i-th data token in order.

Each returns ``(inputs (B, T) long, targets (B, T) long, mask (B, T) bool)``: the loss and the accuracy are
taken where ``mask`` is True (the recall positions).  Same generator state -> same batch.
"""

from __future__ import annotations

import torch

BLANK, MARK = 0, 1


def mqar(batch: int, pairs: int, gen: torch.Generator, n_keys: int = 64, n_values: int = 64):
    """MQAR batch; vocabulary n_keys + n_values, length T = 4 * pairs."""
    if pairs < 1 or pairs > n_keys or n_values < 2:
        raise ValueError(f"need 1 <= pairs={pairs} <= n_keys={n_keys} and n_values={n_values} >= 2")
    keys = torch.stack([torch.randperm(n_keys, generator=gen)[:pairs] for _ in range(batch)])  # (B, N)
    vals = torch.randint(n_keys, n_keys + n_values, (batch, pairs), generator=gen)  # (B, N)
    order = torch.stack([torch.randperm(pairs, generator=gen) for _ in range(batch)])  # (B, N)
    ctx = torch.stack([keys, vals], -1).flatten(1)  # (B, 2N)
    qk, qv = keys.gather(1, order), vals.gather(1, order)
    query = torch.stack([qk, qv], -1).flatten(1)  # (B, 2N)
    seq = torch.cat([ctx, query], 1)  # (B, 4N)
    inputs, targets = seq[:, :-1], seq[:, 1:]
    mask = torch.zeros_like(targets, dtype=torch.bool)
    mask[:, 2 * pairs :: 2] = True  # positions holding a queried key predict its value
    return inputs, targets, mask


def selective_copy(batch: int, length: int, n_tokens: int, gen: torch.Generator, vocab: int = 16):
    """Selective-copying batch; T = length + n_tokens; targets are BLANK except at the markers."""
    if n_tokens < 1 or length < n_tokens or vocab < 3:
        raise ValueError(f"need 1 <= n_tokens={n_tokens} <= length={length} and vocab={vocab} >= 3")
    data = torch.randint(2, vocab, (batch, n_tokens), generator=gen)  # (B, M)
    pos = torch.stack([torch.randperm(length, generator=gen)[:n_tokens].sort().values for _ in range(batch)])
    ctx = torch.full((batch, length), BLANK, dtype=torch.long)
    ctx.scatter_(1, pos, data)
    inputs = torch.cat([ctx, torch.full((batch, n_tokens), MARK, dtype=torch.long)], 1)  # (B, L+M)
    targets = torch.full_like(inputs, BLANK)
    targets[:, length:] = data  # the i-th marker's position must output the i-th data token
    mask = torch.zeros_like(targets, dtype=torch.bool)
    mask[:, length:] = True
    return inputs, targets, mask
