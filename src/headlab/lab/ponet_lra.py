"""Experiment ``ponet-lra``: PoNet's pooling token mixer against softmax attention on a long-range task (Tan et al.,
"PoNet: Pooling Network for Efficient Token Mixing in Long Sequences", ICLR 2022, arXiv 2110.02442; official code
lxchtan/PoNet, ``examples/LRA/code/attention_ponet.py``).

Task (:func:`listops`, after Long Range Arena's ListOps): nested prefix expressions over the digits 0-9 with the
operators MAX, MIN, MED (lower median) and SM (sum mod 10), nesting up to ``depth``, 2 to ``max_args`` arguments per
operator, only expressions of ``length``/2 to ``length`` tokens kept (as LRA keeps a length band); the label is the
value (10 classes).

Models: the same bidirectional encoder (token and learned position embeddings, ``layers`` pre-LayerNorm blocks of
mixer + 4x MLP, mean over the real tokens, linear read-out, width ``d_model``), its mixer either PoNet
(:class:`headlab.modules.PoNetMixer`, segments of ``segment_size`` tokens, local window 3) or ``heads``-head softmax
attention (SDPA with the key-padding mask).  Both are trained on the same batches for ``steps`` AdamW steps
(:mod:`headlab.modules.training`), then tested on ``test_items`` fresh expressions (accuracy with its Wilson interval,
the exact McNemar test PoNet vs softmax on the same items).

Time per training step (forward, backward, update) of each at every ``timing_lengths`` length, ``timing_batch``
random sequences, ``timing_repeats`` alternating rounds after a warm-up (:func:`headlab.timing.alternate`): medians,
ranges and the per-round ratio PoNet / softmax.  ``steps`` = 0 skips training (the timing-only run of the
``ponet-speed`` claim).

The decision rules are registered in the claims harness (``repro/headlab_repro/paper_claims.py``: ``ponet-lra``,
``ponet-speed``).  Shapes: tokens (B, T) int, mask (B, T) bool, logits (B, 10).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from headlab.modules.ponet import PoNetMixer
from headlab.modules.softmax import MultiHeadAttention
from headlab.modules.training import adamw, step
from headlab.progress import progress_bar
from headlab.stats import mcnemar_exact, proportion
from headlab.timing import alternate, load_text, spread

from .config import PonetLraConfig
from .result import LabResult, lab_result, print_table

NAME = PonetLraConfig.NAME
PAD, DIGIT0, OP0, CLOSE = 0, 1, 11, 15
OPS = ("MAX", "MIN", "MED", "SM")
VOCAB = 16
MIXERS = ("softmax", "ponet")
P_LEAF = 0.25


# ------------------------------------------------------------------------------------------ data
def _value(op: int, vals: list[int]) -> int:
    if op == 0:
        return max(vals)
    if op == 1:
        return min(vals)
    if op == 2:
        return sorted(vals)[(len(vals) - 1) // 2]
    return sum(vals) % 10


def _tree(rng: np.random.Generator, depth: int, max_depth: int, max_args: int) -> tuple[list[int], int]:
    if depth >= max_depth or (depth > 0 and rng.random() < P_LEAF):
        d = int(rng.integers(0, 10))
        return [DIGIT0 + d], d
    op = int(rng.integers(0, len(OPS)))
    toks, vals = [OP0 + op], []
    for _ in range(int(rng.integers(2, max_args + 1))):
        t, v = _tree(rng, depth + 1, max_depth, max_args)
        toks += t
        vals.append(v)
    return toks + [CLOSE], _value(op, vals)


def evaluate_tokens(tokens: list[int]) -> int:
    """The value of one expression written as tokens (a stack evaluator, independent of the generator)."""
    stack: list[list[int]] = []
    for t in tokens:
        if OP0 <= t < OP0 + len(OPS):
            stack.append([t - OP0])
        elif t == CLOSE:
            op, *vals = stack.pop()
            v = _value(op, vals)
            if not stack:
                return v
            stack[-1].append(v)
        elif DIGIT0 <= t < DIGIT0 + 10:
            if not stack:
                return t - DIGIT0
            stack[-1].append(t - DIGIT0)
    raise ValueError(f"unbalanced expression of {len(tokens)} tokens")


def listops(n: int, length: int, depth: int, max_args: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` expressions of length/2..length tokens: tokens (n, length) padded with 0, labels (n,)."""
    if length < 8 or depth < 1 or max_args < 2 or n < 1:
        raise ValueError(f"need n >= 1, length >= 8, depth >= 1, max_args >= 2; got {n}, {length}, {depth}, {max_args}")
    toks = torch.zeros(n, length, dtype=torch.long)
    labels = torch.zeros(n, dtype=torch.long)
    i, tries = 0, 0
    while i < n:
        tries += 1
        if tries > 1000 * n:
            raise ValueError(f"depth={depth}, max_args={max_args} rarely give {length // 2}..{length} tokens; change them")
        t, v = _tree(rng, 0, depth, max_args)
        if length // 2 <= len(t) <= length:
            toks[i, : len(t)] = torch.tensor(t)
            labels[i] = v
            i += 1
    return toks, labels


# ------------------------------------------------------------------------------------------ models
class SoftmaxMixer(nn.Module):
    """Bidirectional multi-head softmax attention with a key-padding mask: x (B, T, D), mask (B, T) -> (B, T, D)."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.mha = MultiHeadAttention(d_model, heads, causal=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.mha.heads(x)  # (B, H, T, d)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return self.mha.out(o.transpose(1, 2).reshape(x.shape))


class Encoder(nn.Module):
    """Embeddings, ``layers`` pre-LN blocks (mixer, 4x GELU MLP), final LN, mean over real tokens, linear read-out."""

    def __init__(self, mixer: str, cfg: PonetLraConfig, max_len: int, n_classes: int = 10):
        super().__init__()
        if mixer not in MIXERS:
            raise ValueError(f"mixer={mixer!r}; valid: {list(MIXERS)}")
        d = cfg.d_model
        self.tok = nn.Embedding(VOCAB, d)
        self.pos = nn.Embedding(max_len, d)
        make = (lambda: PoNetMixer(d, cfg.heads, cfg.segment_size)) if mixer == "ponet" else (lambda: SoftmaxMixer(d, cfg.heads))
        self.mixers = nn.ModuleList(make() for _ in range(cfg.layers))
        self.norms1 = nn.ModuleList(nn.LayerNorm(d) for _ in range(cfg.layers))
        self.norms2 = nn.ModuleList(nn.LayerNorm(d) for _ in range(cfg.layers))
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, n_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = tokens != PAD
        x = self.tok(tokens) + self.pos.weight[: tokens.shape[1]]
        for mix, n1, n2, mlp in zip(self.mixers, self.norms1, self.norms2, self.mlps):
            x = x + mix(n1(x), mask)
            x = x + mlp(n2(x))
        x = self.norm(x)
        m = mask[..., None].to(x.dtype)
        return self.head((x * m).sum(1) / m.sum(1).clamp_min(1))


# ------------------------------------------------------------------------------------------ run
def _check(cfg: PonetLraConfig) -> None:
    if cfg.steps < 0 or cfg.batch < 1 or cfg.test_items < 1:
        raise ValueError(f"need steps >= 0, batch >= 1, test_items >= 1; got {cfg.steps}, {cfg.batch}, {cfg.test_items}")
    if cfg.d_model < 1 or cfg.heads < 1 or cfg.d_model % cfg.heads or cfg.layers < 1:
        raise ValueError(f"d_model={cfg.d_model} must be a positive multiple of heads={cfg.heads}; layers={cfg.layers} >= 1")
    if not cfg.timing_lengths or min(cfg.timing_lengths) < 8 or cfg.timing_batch < 1 or cfg.timing_repeats < 1:
        raise ValueError(
            f"timing_lengths must list lengths >= 8 and timing_batch, timing_repeats be >= 1; got {cfg.timing_lengths}, "
            f"{cfg.timing_batch}, {cfg.timing_repeats}"
        )


def time_steps(cfg: PonetLraConfig, max_len: int, log=None) -> dict:
    """Seconds per training step of each mixer at every timing length (alternating rounds, medians and ranges)."""
    out = {}
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    for n in cfg.timing_lengths:
        toks = torch.randint(DIGIT0, CLOSE + 1, (cfg.timing_batch, n), generator=gen)
        y = torch.randint(0, 10, (cfg.timing_batch,), generator=gen)
        calls = {}
        for k in MIXERS:
            torch.manual_seed(cfg.seed)
            m = Encoder(k, cfg, max_len)
            opt, sched = adamw(m, 10**6, cfg.lr)
            calls[k] = lambda m=m, opt=opt, sched=sched, toks=toks, y=y: step(m, opt, sched, F.cross_entropy(m(toks), y))
        t = alternate(calls, cfg.timing_repeats, warmup=1)
        ratios = t.ratios("ponet", "softmax")
        out[str(n)] = {
            "seconds": {k: t.spread(k) for k in MIXERS},
            "ratio": spread(ratios),
            "pair_ratios": ratios,
            "samples": {k: t.wall[k] for k in MIXERS},
        }
        if log is not None:
            log(f"{n} tokens: softmax {t.median('softmax'):.3f} s, ponet {t.median('ponet'):.3f} s per step")
    return out


def run(config: PonetLraConfig | None = None, *, quiet: bool = False, **overrides) -> LabResult:
    """Train PoNet and softmax encoders on the same ListOps-like batches, test them, time one step of each.
    Settings: :class:`PonetLraConfig`."""
    cfg = PonetLraConfig.make(config, **overrides)
    _check(cfg)
    max_len = max(cfg.length, *cfg.timing_lengths)
    measured: dict = {"models": {}}
    records: list[dict] = []
    if cfg.steps > 0:
        rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        models = {k: Encoder(k, cfg, max_len) for k in MIXERS}
        opts = {k: adamw(m, cfg.steps, cfg.lr) for k, m in models.items()}
        curves: dict[str, list[float]] = {k: [] for k in MIXERS}
        every = max(1, cfg.steps // 30)
        with progress_bar(NAME, cfg.steps, quiet=quiet) as advance:
            for s in range(cfg.steps):
                toks, y = listops(cfg.batch, cfg.length, cfg.depth, cfg.max_args, rng)
                for k, m in models.items():
                    loss = F.cross_entropy(m(toks), y)
                    step(m, *opts[k], loss)
                    if s % every == 0 or s == cfg.steps - 1:
                        curves[k].append(loss.item())
                        records.append({"step": s, "model": k, "loss": loss.item()})
                advance()
        toks, y = listops(cfg.test_items, cfg.length, cfg.depth, cfg.max_args, np.random.default_rng(cfg.seed + 10_000))
        correct = {}
        with torch.no_grad():
            for k, m in models.items():
                m.eval()
                pred = torch.cat([m(toks[i : i + 256]).argmax(-1) for i in range(0, len(toks), 256)])
                correct[k] = (pred == y).long().tolist()
                records += [{"model": k, "item": i, "label": int(y[i]), "pred": int(pred[i])} for i in range(len(y))]
        mc = mcnemar_exact(correct["ponet"], correct["softmax"])
        counts = torch.bincount(y, minlength=10)
        for k in MIXERS:
            measured["models"][k] = {
                "train_loss": curves[k],
                "accuracy": proportion(sum(correct[k]), len(correct[k])),
                "params": sum(p.numel() for p in models[k].parameters()),
            }
        measured["ponet_vs_softmax"] = {"only_ponet": mc.only_a, "only_softmax": mc.only_b, "mcnemar_p": mc.pvalue}
        measured["majority_rate"] = float(counts.max()) / len(y)
        measured["test_items"] = len(y)
        measured["mean_length"] = float((toks != PAD).sum(-1).float().mean())
    measured["timing"] = time_steps(cfg, max_len)
    measured["load"] = load_text()
    res = lab_result(cfg.name, measured, cfg.record(max_len=max_len), records)
    if not quiet:
        rows = [
            [k, measured["models"].get(k, {}).get("accuracy", {}).get("value", float("nan"))]
            + [measured["timing"][str(n)]["seconds"][k]["median"] for n in cfg.timing_lengths]
            for k in MIXERS
        ]
        print_table(
            f"ListOps-like task, {cfg.length // 2}-{cfg.length} tokens, {cfg.steps} steps",
            ["mixer", "test accuracy", *[f"s / step @ {n}" for n in cfg.timing_lengths]],
            rows,
            res,
        )
    return res


def plot(res: LabResult, fig) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    for k, m in res.measured["models"].items():
        ax1.plot(m["train_loss"], label=f"{k} (test acc {m['accuracy']['value']:.3f})")
    ax1.set(xlabel="training (evaluation points)", ylabel="cross-entropy", title="ListOps-like training")
    ns = list(res.measured["timing"])
    for k in MIXERS:
        ax2.plot([int(n) for n in ns], [res.measured["timing"][n]["seconds"][k]["median"] for n in ns], marker="o", label=k)
    ax2.set(xscale="log", yscale="log", xlabel="tokens", ylabel="seconds per training step (median)", title="cost")
    ax1.legend()
    ax2.legend()
