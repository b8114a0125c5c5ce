"""The classic per-head statistics computed by hand from eager ``output_attentions`` maps: the reference
the engine's probes are checked against (used by several test folders)."""

import torch

METRICS = ["sink", "sink_rate", "entropy", "prev_token", "distance"]


def formulas_from_attentions(atts, mask2d, causal=True):
    """Per-metric (L, H) from eager output_attentions, pooled over valid queries."""
    res = {m: [] for m in METRICS}
    valid = mask2d.bool()
    for a in atts:  # (B, H, T, T)
        a = a.double()
        B, H, T, _ = a.shape
        pos = (valid.long().cumsum(-1) - 1).masked_fill(~valid, -1)
        first = valid.float().argmax(-1)
        sink = torch.stack([a[b, :, :, first[b]] for b in range(B)])
        ent = -(torch.special.xlogy(a, a)).sum(-1)
        prev = a[:, :, torch.arange(T), (torch.arange(T) - 1).clamp(min=0)]
        if causal:
            dist = pos[:, None].double() - torch.einsum("bhts,bs->bht", a, pos.clamp(min=0).double())
        else:
            dist = torch.einsum("bhts,bts->bht", a, (pos[:, :, None] - pos.clamp(min=0)[:, None, :]).abs().double())

        def pooled(x, m):
            w = m[:, None].double()
            return (x * w).sum((0, 2)) / w.sum((0, 2))

        res["sink"].append(pooled(sink, valid))
        res["entropy"].append(pooled(ent, valid))
        res["prev_token"].append(pooled(prev, pos >= 1))
        res["distance"].append(pooled(dist, valid))
        alpha = (sink * valid[:, None]).sum(-1) / valid.sum(-1)[:, None]
        res["sink_rate"].append((alpha > 0.3).double().mean(0))
    return {m: torch.stack(v) for m, v in res.items()}
