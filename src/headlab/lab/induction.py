"""Experiment ``induction``: abrupt emergence of in-context learning through an induction head, on the
bursty in-context classification task of Reddy, "The mechanistic basis of data dependence and abrupt
learning in an in-context classification task" (ICLR 2024, arXiv 2312.03002).

Data: K classes with centroids μ_c ~ N(0, I_D/D) and L label vectors ~ N(0, I_D/D); class c has label
c mod L.  Items x = (μ_c + ε η)/√(1+ε²).  A sequence is N (item, label) pairs then a query item; the target
is the query's label.  With probability p_B a training sequence is *bursty*: N/B classes, each B times,
one of them the query's class; otherwise its N classes are drawn i.i.d. (Zipf exponent α).
Evaluation: ICL = bursty sequences of *novel* classes with labels drawn at random per sequence (only the
in-context mapping works); IWL = no item of the query's class in the context (B = 0).

Model: two causal attention-only layers, one head each, with residuals, on tokens [x or label ; one-hot
position] (D + 2N + 1 dims), then an MLP read-out at the query token (Reddy's architecture; widths ours).
Induction-head score: layer-2 attention mass from the query onto label tokens whose preceding item has
the query's class (ICL sequences); previous-token score: layer-1 attention of label tokens on the item
just before them.

Defaults (N = 4, D = 31, K = 16384, Adam 3e-3) are smaller than Reddy's (N = 8, D = 63, SGD) so that the
transition happens within a few CPU minutes; with K = 16384 classes in-weights learning barely starts.

Abruptness (:func:`abruptness`): the steepest rise of the ICL accuracy above chance (values below chance
count as chance) between evaluations ``eval_every`` steps apart, divided by the mean rate from step 0 to
the first step at 90% of the final gain above chance.
A steady ramp gives about 1 however long training runs; a plateau followed by a jump gives much more.
The decision rule is registered in the claims harness beside the library (``repro/headlab_repro/lab_claims.py``) (``induction``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from headlab.progress import progress_bar

from .config import InductionConfig
from .result import LabResult, lab_result, print_table

NAME = InductionConfig.NAME
EVAL_SEQUENCES = 1024


class BurstyTask:
    """Generator of Reddy's sequences; every tensor is (B, 2N+1, D + 2N + 1) tokens and (B,) targets."""

    def __init__(self, K=512, L=32, D=63, N=8, B=2, p_bursty=0.9, alpha=0.0, eps=0.1, seed=0):
        if N % B:
            raise ValueError(f"N={N} must be a multiple of B={B}")
        if K < N // B:
            raise ValueError(f"K={K} must be >= N/B={N // B}")
        self.K, self.L, self.D, self.N, self.B, self.p_bursty, self.eps = K, L, D, N, B, p_bursty, eps
        g = torch.Generator().manual_seed(seed)
        self.mu = torch.randn(K, D, generator=g) / math.sqrt(D)
        self.labels = torch.randn(L, D, generator=g) / math.sqrt(D)
        p = torch.arange(1, K + 1, dtype=torch.float).pow(-alpha)
        self.p = p / p.sum()
        self.dim = D + 2 * N + 1

    def _tokens(self, mu, cls, lab_ctx, q_cls, gen):
        """cls (B,N) class ids into mu, lab_ctx (B,N) label ids, q_cls (B,) -> tokens (B,2N+1,dim)."""
        bsz = cls.shape[0]
        items = mu[torch.cat([cls, q_cls[:, None]], 1)]
        items = (items + self.eps * torch.randn(items.shape, generator=gen)) / math.sqrt(1 + self.eps**2)
        seq = torch.zeros(bsz, 2 * self.N + 1, self.D)
        seq[:, 0 : 2 * self.N : 2] = items[:, : self.N]
        seq[:, 1 : 2 * self.N : 2] = self.labels[lab_ctx]
        seq[:, -1] = items[:, -1]
        pos = torch.eye(2 * self.N + 1).expand(bsz, -1, -1)
        return torch.cat([seq, pos], -1)

    def _bursty_classes(self, bsz, pick, gen):
        m = self.N // self.B
        groups = pick(bsz, m)  # (B, m) distinct-ish classes
        ctx = groups.repeat_interleave(self.B, dim=1)  # (B, N)
        perm = torch.rand(bsz, self.N, generator=gen).argsort(1)
        return ctx.gather(1, perm), groups[:, 0]

    def train_batch(self, bsz: int, gen: torch.Generator):
        pick = lambda b, m: torch.multinomial(self.p, b * m, replacement=True, generator=gen).view(b, m)
        bc, bq = self._bursty_classes(bsz, pick, gen)
        nc, nq = pick(bsz, self.N), pick(bsz, 1)[:, 0]
        bursty = torch.rand(bsz, generator=gen) < self.p_bursty
        cls = torch.where(bursty[:, None], bc, nc)
        q = torch.where(bursty, bq, nq)
        return self._tokens(self.mu, cls, cls % self.L, q, gen), q % self.L

    def icl_batch(self, bsz: int, gen: torch.Generator):
        """Novel classes, random labels per sequence; returns tokens, targets, and (B,N) match mask."""
        m = self.N // self.B
        mu = torch.randn(bsz * m, self.D, generator=gen) / math.sqrt(self.D)
        pick = lambda b, mm: torch.arange(b * mm).view(b, mm)
        cls, q = self._bursty_classes(bsz, pick, gen)
        lab_of = torch.rand(bsz, self.L, generator=gen).argsort(1)[:, :m]  # (B,m) distinct labels
        local = cls - torch.arange(bsz)[:, None] * m
        lab = lab_of.gather(1, local)
        target = lab_of[:, 0]
        return self._tokens(mu, cls, lab, q, gen), target, cls == q[:, None]

    def iwl_batch(self, bsz: int, gen: torch.Generator):
        """Query class from training classes, absent from the context (B = 0)."""
        q = torch.multinomial(self.p, bsz, replacement=True, generator=gen)
        cls = torch.multinomial(self.p, bsz * self.N, replacement=True, generator=gen).view(bsz, self.N)
        clash = cls == q[:, None]
        cls = torch.where(clash, (cls + 1) % self.K, cls)
        return self._tokens(self.mu, cls, cls % self.L, q, gen), q % self.L


class AttnLayer(nn.Module):
    """Single-head causal softmax attention with residual; keeps its last weights (B, T, T)."""

    def __init__(self, dim: int):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.last: torch.Tensor | None = None

    def forward(self, x):
        t = x.shape[1]
        s = self.q(x) @ self.k(x).transpose(1, 2) / math.sqrt(x.shape[-1])
        s = s.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
        a = s.softmax(-1)
        self.last = a.detach()
        return x + a @ self.v(x)


class InductionNet(nn.Module):
    def __init__(self, dim: int, n_labels: int, hidden: int = 128):
        super().__init__()
        self.l1, self.l2 = AttnLayer(dim), AttnLayer(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_labels))

    def forward(self, x):
        return self.mlp(self.l2(self.l1(x))[:, -1])


@torch.no_grad()
def evaluate(net: InductionNet, task: BurstyTask, icl, iwl) -> dict[str, float]:
    x, y, match = icl
    acc_icl = (net(x).argmax(-1) == y).float().mean().item()
    a2 = net.l2.last[:, -1, 1 : 2 * task.N : 2]  # query -> label tokens (B, N)
    induction = (a2 * match).sum(-1).mean().item()
    a1 = net.l1.last
    idx = torch.arange(1, 2 * task.N, 2)
    prev = a1[:, idx, idx - 1].mean().item()
    xw, yw = iwl
    acc_iwl = (net(xw).argmax(-1) == yw).float().mean().item()
    return {"icl_acc": acc_icl, "iwl_acc": acc_iwl, "induction_score": induction, "prev_token_score": prev}


def abrupt_window(steps: list[int], acc: list[float], chance: float) -> tuple[float, float]:
    """Steps where accuracy first reaches 10% and 90% of its final gain above chance (nan if never)."""
    gain = acc[-1] - chance
    if gain <= 0:
        return float("nan"), float("nan")
    first = lambda frac: next((s for s, a in zip(steps, acc) if a >= chance + frac * gain), float("nan"))
    return first(0.1), first(0.9)


def abruptness(steps: list[int], acc: list[float], chance: float) -> tuple[float, float, float]:
    """(abruptness, step at 90% of the final gain, step ending the steepest interval); nan when no gain.

    Accuracies below chance count as chance: the early climb from 1/L to chance (learning to answer with a
    label from the context) is not in-context learning and must not count as the rise."""
    acc = [max(a, chance) for a in acc]
    gain = acc[-1] - chance
    t90 = next((s for s, a in zip(steps, acc) if a >= chance + 0.9 * gain), float("nan")) if gain > 0 else float("nan")
    if math.isnan(t90) or t90 <= steps[0]:
        return float("nan"), t90, float("nan")
    slopes = [((a1 - a0) / (s1 - s0), s1) for s0, s1, a0, a1 in zip(steps, steps[1:], acc, acc[1:])]
    steep, at = max(slopes)
    mean = (acc[steps.index(t90)] - acc[0]) / (t90 - steps[0])
    return (steep / mean if mean > 0 else float("nan")), t90, at


def run(config: InductionConfig | None = None, *, quiet: bool = False, **overrides) -> LabResult:
    """Train Reddy's network on the bursty task, evaluating ICL / IWL accuracy and the head scores every
    ``eval_every`` steps. Settings: :class:`InductionConfig`."""
    cfg = InductionConfig.make(config, **overrides)
    steps, N, B, seed, eval_every = cfg.steps, cfg.N, cfg.B, cfg.seed, cfg.eval_every
    if eval_every < 1:
        raise ValueError(f"eval_every={eval_every} must be >= 1")
    task = BurstyTask(cfg.K, cfg.L, cfg.D, N, B, cfg.p_bursty, cfg.alpha, cfg.eps, seed)
    torch.manual_seed(seed)
    net = InductionNet(task.dim, cfg.L)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed + 1)
    eg = torch.Generator().manual_seed(seed + 2)
    icl, iwl = task.icl_batch(EVAL_SEQUENCES, eg), task.iwl_batch(EVAL_SEQUENCES, eg)
    every = eval_every
    curve: dict[str, list] = {"step": [], "icl_acc": [], "iwl_acc": [], "induction_score": [], "prev_token_score": []}

    def log(step):
        curve["step"].append(step)
        for k, v in evaluate(net, task, icl, iwl).items():
            curve[k].append(v)

    log(0)
    with progress_bar("induction", steps, quiet=quiet) as advance:
        for step in range(1, steps + 1):
            x, y = task.train_batch(cfg.batch, gen)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            advance()
            if step % every == 0 or step == steps:
                log(step)
    chance = B / N
    t10, t90 = abrupt_window(curve["step"], curve["icl_acc"], chance)
    ab, _, steep_at = abruptness(curve["step"], curve["icl_acc"], chance)
    measured = {
        **curve,
        "final_icl_acc": curve["icl_acc"][-1],
        "final_iwl_acc": curve["iwl_acc"][-1],
        "final_induction_score": curve["induction_score"][-1],
        "icl_chance": chance,
        "rise_start_step": t10,
        "rise_end_step": t90,
        "abruptness": ab,
        "steepest_step": steep_at,
        "eval_sequences": EVAL_SEQUENCES,
    }
    records = [dict(zip(curve, vals)) for vals in zip(*curve.values())]
    res = lab_result(NAME, measured, cfg.record(optimizer="Adam"), records)
    if not quiet:
        rows = [
            [s, a, w, i, p]
            for s, a, w, i, p in zip(
                curve["step"], curve["icl_acc"], curve["iwl_acc"], curve["induction_score"], curve["prev_token_score"]
            )
        ]
        stride = max(1, len(rows) // 12)
        print_table(
            "bursty in-context classification",
            ["step", "ICL acc", "IWL acc", "induction score", "prev-token score"],
            rows[::stride] + [rows[-1]],
            res,
        )
    return res


def plot(res: LabResult, fig) -> None:
    m = res.measured
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(m["step"], m["icl_acc"], label="ICL accuracy (novel classes)")
    ax1.plot(m["step"], m["iwl_acc"], label="IWL accuracy (no match in context)")
    ax1.axhline(m["icl_chance"], ls=":", color="k", label="ICL chance")
    ax1.set(xlabel="step", ylabel="accuracy", title="accuracy over training")
    ax1.legend(fontsize=7)
    ax2.plot(m["step"], m["induction_score"], label="layer-2 induction score")
    ax2.plot(m["step"], m["prev_token_score"], label="layer-1 previous-token score")
    ax2.set(xlabel="step", ylabel="attention mass", title="head scores over training")
    ax2.legend(fontsize=7)
