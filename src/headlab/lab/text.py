"""Offline training text for the lab LMs: CPython's ``pydoc_data.topics`` (real English technical prose,
~465k characters, shipped with every Python), byte-level tokenised.

Token ids 0..255 are bytes; :data:`BOS` = 256 is prepended to every training window, so the vocabulary
has :data:`VOCAB` = 257 entries.  Windows are drawn with a seeded ``torch.Generator`` (deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BOS = 256
VOCAB = 257


def corpus_text() -> str:
    """All topics joined in sorted key order (uses headlab.data.prose when it exists)."""
    try:
        from headlab.data.prose import texts  # type: ignore

        paras = texts()
        if paras:
            return "\n\n".join(paras)
    except Exception:  # noqa: BLE001 - the lead's module may not exist yet
        pass
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def encode(text: str) -> torch.Tensor:
    """UTF-8 bytes as a long tensor (T,)."""
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


def decode(ids) -> str:
    return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")


@dataclass
class TextData:
    """Train/validation byte streams (last ``val_frac`` of the corpus is validation)."""

    train: torch.Tensor
    val: torch.Tensor

    @classmethod
    def load(cls, val_frac: float = 0.1) -> TextData:
        if not 0 < val_frac < 1:
            raise ValueError(f"val_frac={val_frac} must be in (0, 1)")
        ids = encode(corpus_text())
        cut = int(len(ids) * (1 - val_frac))
        return cls(ids[:cut], ids[cut:])

    def batch(self, split: str, batch: int, seq_len: int, gen: torch.Generator):
        """Inputs (B, seq_len) = [BOS, c_1..c_{seq_len-1}] and targets (B, seq_len) = [c_1..c_{seq_len}]."""
        if split not in ("train", "val"):
            raise ValueError(f"split={split!r}; valid: 'train', 'val'")
        src = self.train if split == "train" else self.val
        if seq_len < 2 or seq_len >= len(src):
            raise ValueError(f"seq_len={seq_len} must be in [2, {len(src) - 1}]")
        start = torch.randint(0, len(src) - seq_len, (batch,), generator=gen)
        win = torch.stack([src[s : s + seq_len] for s in start.tolist()])
        inputs = torch.cat([torch.full((batch, 1), BOS, dtype=torch.long), win[:, :-1]], 1)
        return inputs, win
