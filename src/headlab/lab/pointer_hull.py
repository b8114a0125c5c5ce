"""Experiment ``pointer-hull``: Pointer Networks on planar convex hulls (Vinyals, Fortunato, Jaitly, "Pointer
Networks", NeurIPS 2015, arXiv 1506.03134), against a sequence-to-sequence model with input attention whose output
is a fixed dictionary of positions, the paper's baseline.

Data: n points uniform in the unit square, n drawn per training step from [``n_min``, ``n_max``]; the target is the
hull (:func:`convex_hull`: counterclockwise, starting at the hull point with the lowest input index, collinear points
left out) as 1-based input positions followed by 0, the end symbol.

Models (same LSTM encoder and decoder, width ``hidden``; the decoder's input is the coordinates of the point chosen
at the previous step):

- Ptr-Net: p(C_i = j) = softmax_j(v^T tanh(W_1 e_j + W_2 d_i)) over [end; the n points]
  (:class:`headlab.modules.PointerHead`): the attention *is* the output, so its dictionary grows with n;
- seq2seq + attention: the same additive attention blends the encoder states into a context c_i and a linear layer
  maps [d_i; c_i] to a fixed dictionary {end, 1, ..., max(test_n)}.  It can name every test position, but the
  positions above ``n_max`` are never targets in training.

Both are trained by teacher forcing on the same batches and decoded greedily with the same constraint (no point
twice, no position above n).  Measured at each test length on ``test_items`` fresh point sets: exact-hull accuracy
(the whole output sequence right), the area of the output polygon over the hull's area when the output is a simple
polygon of >= 3 points (the paper's "area coverage") and the share of outputs that are not.  The per-item
correctness of both models on the same sets is kept for a paired test.

The decision rule is registered in the claims harness (``repro/headlab_repro/paper_claims.py``, ``pointer-hull``).
Shapes: points (B, n, 2); targets (B, m) with -100 padding; log-probabilities (B, m, n + 1) or (B, m, V).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from headlab.modules.pointer import PointerHead
from headlab.modules.training import adamw, step
from headlab.progress import progress_bar

from .config import PointerHullConfig
from .result import LabResult, lab_result, print_table

NAME = PointerHullConfig.NAME
PAD = -100
#: the paper's Table 1 (convex hull), beside ours in the docs: (model, trained n, tested n) -> (accuracy %, area %)
PAPER_TABLE1 = {
    ("LSTM + attention", "50", "50"): (38.9, 99.7),
    ("Ptr-Net", "50", "50"): (72.6, 99.9),
    ("Ptr-Net", "5-50", "50"): (69.6, 99.9),
    ("Ptr-Net", "5-50", "100"): (50.3, 99.9),
    ("Ptr-Net", "5-50", "500"): (1.3, 99.2),
}


# ------------------------------------------------------------------------------------------ geometry
def _cross(o, a, b) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def convex_hull(points: np.ndarray) -> list[int]:
    """Hull vertices of ``points`` (n, 2) as 0-based indices, counterclockwise, starting at the lowest index
    (Andrew's monotone chain; collinear points on an edge are left out)."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3:
        raise ValueError(f"points must be (n >= 3, 2), got shape {tuple(pts.shape)}")
    order = sorted(range(len(pts)), key=lambda i: (pts[i, 0], pts[i, 1]))
    lower: list[int] = []
    for i in order:
        while len(lower) >= 2 and _cross(pts[lower[-2]], pts[lower[-1]], pts[i]) <= 0:
            lower.pop()
        lower.append(i)
    upper: list[int] = []
    for i in reversed(order):
        while len(upper) >= 2 and _cross(pts[upper[-2]], pts[upper[-1]], pts[i]) <= 0:
            upper.pop()
        upper.append(i)
    hull = lower[:-1] + upper[:-1]  # counterclockwise
    k = hull.index(min(hull))
    return hull[k:] + hull[:k]


def polygon_area(points: np.ndarray, idx: list[int]) -> float:
    """Area of the polygon visiting ``points[idx]`` in order (shoelace, absolute value)."""
    if len(idx) < 3:
        return 0.0
    p = np.asarray(points, dtype=np.float64)[list(idx)]
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _segments_cross(a, b, c, d) -> bool:
    """Segments ab and cd cross (a proper intersection: each separates the other's ends)."""
    d1, d2, d3, d4 = _cross(c, d, a), _cross(c, d, b), _cross(a, b, c), _cross(a, b, d)
    return d1 * d2 < 0 and d3 * d4 < 0


def is_simple_polygon(points: np.ndarray, idx: list[int]) -> bool:
    """``idx`` names >= 3 distinct points whose closed polygon has no crossing non-adjacent edges."""
    if len(idx) < 3 or len(set(idx)) != len(idx):
        return False
    p = np.asarray(points, dtype=np.float64)
    k = len(idx)
    edges = [(p[idx[i]], p[idx[(i + 1) % k]]) for i in range(k)]
    for i in range(k):
        for j in range(i + 1, k):
            if j == i + 1 or (i == 0 and j == k - 1):
                continue
            if _segments_cross(*edges[i], *edges[j]):
                return False
    return True


def sample_batch(batch: int, n: int, gen: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """``batch`` sets of ``n`` uniform points: points (B, n, 2), targets (B, max hull + 1) of 1-based positions then
    0 (end), -100 after it, and the 0-based hulls."""
    if batch < 1 or n < 3:
        raise ValueError(f"batch must be >= 1 and n >= 3, got batch={batch}, n={n}")
    pts = gen.random((batch, n, 2))
    hulls = [convex_hull(p) for p in pts]
    m = max(len(h) for h in hulls) + 1
    tgt = torch.full((batch, m), PAD, dtype=torch.long)
    for b, h in enumerate(hulls):
        tgt[b, : len(h) + 1] = torch.tensor([i + 1 for i in h] + [0])
    return torch.from_numpy(pts).float(), tgt, hulls


# ------------------------------------------------------------------------------------------ models
class _EncDec(nn.Module):
    """LSTM encoder over the points and LSTM-cell decoder fed the previously chosen point (a learned start
    vector first); ``dictionary(enc, d, n)`` gives the (B, K) logits of one step (subclasses)."""

    def __init__(self, hidden: int):
        super().__init__()
        if hidden < 1:
            raise ValueError(f"hidden={hidden} must be >= 1")
        self.hidden = hidden
        self.embed = nn.Linear(2, hidden)
        self.encoder = nn.LSTM(hidden, hidden, batch_first=True)
        self.decoder = nn.LSTMCell(hidden, hidden)
        self.start = nn.Parameter(torch.zeros(hidden))
        self.end = nn.Parameter(torch.randn(hidden) * 0.1)  # the encoder state of position 0 (end symbol)

    def dictionary(self, enc: torch.Tensor, d: torch.Tensor, n: int) -> torch.Tensor:
        raise NotImplementedError

    def size(self, n: int) -> int:
        """Number of output symbols for inputs of n points."""
        raise NotImplementedError

    def _encode(self, pts: torch.Tensor):
        x = self.embed(pts)  # (B, n, h)
        enc, (h, c) = self.encoder(x)
        enc = torch.cat([self.end.expand(len(pts), 1, -1), enc], 1)  # (B, n+1, h): position 0 = end
        return x, enc, (h[0], c[0])

    def _valid(self, chosen: torch.Tensor, n: int) -> torch.Tensor:
        """(B, K) True where a symbol may be output: the end, or a position <= n not chosen yet."""
        k = self.size(n)
        ok = torch.zeros(chosen.shape[0], k, dtype=torch.bool)
        ok[:, : n + 1] = True
        ok[:, 1 : n + 1] &= ~chosen[:, 1:]
        return ok

    def forward(self, pts: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Teacher-forced log-probabilities (B, m, K) of the targets ``tgt`` (B, m)."""
        b, n, _ = pts.shape
        x, enc, (h, c) = self._encode(pts)
        chosen = torch.zeros(b, n + 1, dtype=torch.bool)
        inp = self.start.expand(b, -1)
        out = []
        for t in range(tgt.shape[1]):
            h, c = self.decoder(inp, (h, c))
            logits = self.dictionary(enc, h, n).masked_fill(~self._valid(chosen, n), float("-inf"))
            out.append(logits.log_softmax(-1))
            y = tgt[:, t].clamp_min(0)  # padding reads position 0
            chosen = chosen.clone()
            chosen[torch.arange(b), y] = True
            inp = torch.where((y > 0)[:, None], x[torch.arange(b), (y - 1).clamp_min(0)], self.start.expand(b, -1))
        return torch.stack(out, 1)

    @torch.no_grad()
    def decode(self, pts: torch.Tensor) -> list[list[int]]:
        """Greedy outputs as 0-based point indices (the end symbol and what follows removed)."""
        b, n, _ = pts.shape
        x, enc, (h, c) = self._encode(pts)
        chosen = torch.zeros(b, n + 1, dtype=torch.bool)
        done = torch.zeros(b, dtype=torch.bool)
        inp = self.start.expand(b, -1)
        outs: list[list[int]] = [[] for _ in range(b)]
        for _ in range(n + 1):
            h, c = self.decoder(inp, (h, c))
            logits = self.dictionary(enc, h, n).masked_fill(~self._valid(chosen, n), float("-inf"))
            y = logits.argmax(-1)
            for i in range(b):
                if not done[i]:
                    if int(y[i]) == 0:
                        done[i] = True
                    else:
                        outs[i].append(int(y[i]) - 1)
            chosen[torch.arange(b), y] = True
            inp = torch.where((y > 0)[:, None], x[torch.arange(b), (y - 1).clamp_min(0)], self.start.expand(b, -1))
            if bool(done.all()):
                break
        return outs


class PtrNet(_EncDec):
    """Pointer network: the decoder's additive attention over [end; points] is the output distribution."""

    def __init__(self, hidden: int):
        super().__init__(hidden)
        self.pointer = PointerHead(hidden, hidden, hidden)

    def size(self, n: int) -> int:
        return n + 1

    def dictionary(self, enc, d, n):
        return self.pointer.scores(enc, d[:, None])[:, 0]  # (B, n+1)


class Seq2SeqAttention(_EncDec):
    """Seq2seq with input attention: the attention blends the encoder states into a context, and a linear layer maps
    [decoder state; context] to a fixed dictionary {end, 1, ..., ``vocab``}."""

    def __init__(self, hidden: int, vocab: int):
        super().__init__(hidden)
        if vocab < 1:
            raise ValueError(f"vocab={vocab} must be >= 1")
        self.vocab = vocab
        self.attn = PointerHead(hidden, hidden, hidden)
        self.classify = nn.Linear(2 * hidden, vocab + 1)

    def size(self, n: int) -> int:
        if n > self.vocab:
            raise ValueError(f"n={n} points exceed the fixed dictionary of {self.vocab} positions")
        return self.vocab + 1

    def dictionary(self, enc, d, n):
        a = self.attn(enc[:, 1:], d[:, None])[:, 0].exp()  # (B, n) attention over the points
        ctx = torch.einsum("bn,bnh->bh", a, enc[:, 1:])
        return self.classify(torch.cat([d, ctx], -1))  # (B, vocab+1)


# ------------------------------------------------------------------------------------------ training / evaluation
def _nll(logp: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    return nn.functional.nll_loss(logp.flatten(0, 1).clamp_min(-1e4), tgt.flatten(), ignore_index=PAD)


def evaluate(model: _EncDec, pts: torch.Tensor, hulls: list[list[int]]) -> dict:
    """Exact-hull accuracy, area coverage over simple outputs, invalid share and per-item correctness."""
    outs = model.decode(pts)
    correct, cover, invalid = [], [], 0
    for p, o, h in zip(pts.numpy(), outs, hulls):
        correct.append(int(o == h))
        if is_simple_polygon(p, o):
            cover.append(polygon_area(p, o) / polygon_area(p, h))
        else:
            invalid += 1
    return {
        "accuracy": float(np.mean(correct)),
        "area_coverage": float(np.mean(cover)) if cover else float("nan"),
        "invalid": invalid / len(outs),
        "correct": correct,
    }


def run(config: PointerHullConfig | None = None, *, quiet: bool = False, **overrides) -> LabResult:
    """Train Ptr-Net and seq2seq + attention on the same batches; greedy test at each length.
    Settings: :class:`PointerHullConfig`."""
    cfg = PointerHullConfig.make(config, **overrides)
    if cfg.n_min < 3 or cfg.n_max < cfg.n_min:
        raise ValueError(f"need 3 <= n_min <= n_max, got n_min={cfg.n_min}, n_max={cfg.n_max}")
    if cfg.steps < 1 or cfg.batch < 1 or cfg.test_items < 1:
        raise ValueError(f"steps, batch and test_items must be >= 1, got {cfg.steps}, {cfg.batch}, {cfg.test_items}")
    if not cfg.test_n or min(cfg.test_n) < 3:
        raise ValueError(f"test_n must list lengths >= 3, got {cfg.test_n}")
    torch.manual_seed(cfg.seed)
    vocab = max(max(cfg.test_n), cfg.n_max)
    models = {"ptr_net": PtrNet(cfg.hidden), "seq2seq_attention": Seq2SeqAttention(cfg.hidden, vocab)}
    opts = {k: adamw(m, cfg.steps, cfg.lr) for k, m in models.items()}
    gen = np.random.default_rng(cfg.seed)
    records: list[dict] = []
    curves: dict[str, list[float]] = {k: [] for k in models}
    every = max(1, cfg.steps // 20)
    with progress_bar(NAME, cfg.steps, quiet=quiet) as advance:
        for s in range(cfg.steps):
            n = int(gen.integers(cfg.n_min, cfg.n_max + 1))
            pts, tgt, _ = sample_batch(cfg.batch, n, gen)
            for k, m in models.items():
                loss = _nll(m(pts, tgt), tgt)
                step(m, *opts[k], loss)
                if s % every == 0 or s == cfg.steps - 1:
                    curves[k].append(loss.item())
                    records.append({"step": s, "model": k, "n": n, "loss": loss.item()})
            advance()
    test_gen = np.random.default_rng(cfg.seed + 10_000)
    measured: dict = {"models": {k: {"train_loss": curves[k], "by_n": {}} for k in models}, "items": cfg.test_items}
    measured["mean_hull_size"] = {}
    for n in cfg.test_n:
        pts, _, hulls = sample_batch(cfg.test_items, n, test_gen)
        measured["mean_hull_size"][str(n)] = float(np.mean([len(h) for h in hulls]))
        for k, m in models.items():
            m.eval()
            ev = evaluate(m, pts, hulls)
            measured["models"][k]["by_n"][str(n)] = ev
            records += [{"model": k, "test_n": n, "item": i, "correct": c} for i, c in enumerate(ev["correct"])]
    res = lab_result(NAME, measured, cfg.record(vocab=vocab), records)
    if not quiet:
        rows = [
            [k, n, v["accuracy"], v["area_coverage"], v["invalid"]]
            for k, mm in measured["models"].items()
            for n, v in mm["by_n"].items()
        ]
        print_table(
            f"Convex hull, trained on n in [{cfg.n_min}, {cfg.n_max}]",
            ["model", "test n", "exact accuracy", "area coverage", "invalid"],
            rows,
            res,
        )
    return res


def plot(res: LabResult, fig) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    for k, m in res.measured["models"].items():
        ax1.plot(m["train_loss"], label=k)
        ns = list(m["by_n"])
        ax2.plot([int(n) for n in ns], [m["by_n"][n]["accuracy"] for n in ns], marker="o", label=k)
    ax1.set(xlabel="training (evaluation points)", ylabel="teacher-forced NLL", title="training")
    ax2.axvline(res.config["n_max"], ls=":", color="k")
    ax2.set(xlabel="test n (dotted: largest trained n)", ylabel="exact-hull accuracy", title="length generalisation")
    ax1.legend()
    ax2.legend()
