"""Experiment ``refam-squad``: RefAM's global-attention-sink suppression, adapted to text grounding (Kukleva et al.,
"RefAM: Attention Magnets for Zero-Shot Referral Segmentation", arXiv 2509.22650).  An adaptation: RefAM reads
cross-attention from a referring expression to image patches of a diffusion transformer and scores the map against
the referred object's mask; here the expression is a SQuAD question, the "image" is its passage, the object is the
answer span, and the model is SmolLM2-135M-Instruct.

Per item (the plain prompt: instruction, passage, question; :mod:`headlab.data.tasks.squad`), one eager forward.
In each of the layers ``first_layer`` .. last (RefAM: global sinks emerge in deeper layers), the map of that layer
is the attention from the question's tokens to the passage's tokens, averaged over heads and question tokens and
normalised over the passage: m_l (P,).  The grounding map is the mean of m_l over those layers, and it *hits* when
its largest passage token overlaps an occurrence of a gold answer in the passage.

Global attention sinks (GAS) of layer l: keys j with A^h[i, j] >= tau for at least a fraction rho of all (head,
query) pairs, the rule and defaults of :class:`headlab.probes.global_sink.GlobalSinkProbe`.  Suppressed map: each
layer's sink keys that lie in the passage get 0 before that layer's normalisation.  Measured: hit rates of the raw
and the suppressed maps (paired: exact McNemar), the chance rate (answer tokens / passage tokens), and where the
sinks are (items with a sink in the passage; the sink tokens' text).

The decision rule is registered in the claims harness (``repro/headlab_repro/paper_claims.py``, ``refam-squad``).
Shapes: attention (1, H, T, T) per layer; maps (P,) over the passage tokens.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from headlab.progress import progress_bar
from headlab.stats import mcnemar_exact, proportion

from .config import RefamSquadConfig
from .result import LabResult, lab_result, print_table

NAME = RefamSquadConfig.NAME


def answer_tokens(offsets: list[tuple[int, int]], text: str, span: tuple[int, int], answers: list[str]) -> list[int]:
    """Indices of the tokens (character ``offsets``) overlapping any occurrence of any answer inside ``span``."""
    s0, s1 = span
    hits: set[int] = set()
    for ans in answers:
        start = text.find(ans, s0) if ans else -1
        while start >= 0 and start + len(ans) <= s1:
            end = start + len(ans)
            hits |= {t for t, (a, b) in enumerate(offsets) if a < end and b > start and b > a}
            start = text.find(ans, start + 1)
    return sorted(hits)


def global_sinks(attn: torch.Tensor, tau: float, rho: float) -> torch.Tensor:
    """Key positions (K,) that are global sinks of one layer: attn (H, T, T) causal weights; a key is a sink when
    A[h, i, j] >= tau for at least rho of all (head, query) pairs (queries that cannot see it count as not high)."""
    h, t, _ = attn.shape
    high = (attn >= tau).sum((0, 1))  # (T,) high (head, query) pairs per key
    return torch.nonzero(high >= rho * h * t).flatten()


def layer_map(attn: torch.Tensor, queries: torch.Tensor, passage: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
    """(P,) attention from the ``queries`` to the ``passage`` keys, mean over heads and queries, with the keys in
    ``drop`` zeroed, normalised to sum 1 over the passage (uniform if nothing is left)."""
    m = attn[:, queries][:, :, passage].mean((0, 1))  # (P,)
    if drop is not None and drop.numel():
        m = m.masked_fill(torch.isin(passage, drop), 0.0)
    total = m.sum()
    return m / total if total > 0 else torch.full_like(m, 1.0 / len(m))


def run(config: RefamSquadConfig | None = None, *, quiet: bool = False, **overrides) -> LabResult:
    """Raw vs GAS-suppressed attention grounding of the answer span on SQuAD. Settings: :class:`RefamSquadConfig`."""
    from headlab.data.tasks.squad import load as load_squad
    from headlab.models import load
    from headlab.probes.global_sink import GlobalSinkProbe

    cfg = RefamSquadConfig.make(config, **overrides)
    if cfg.items < 1 or cfg.max_chars < 50 or cfg.first_layer < 0:
        raise ValueError(
            f"need items >= 1, max_chars >= 50, first_layer >= 0; got {cfg.items}, {cfg.max_chars}, {cfg.first_layer}"
        )
    probe = GlobalSinkProbe()
    tau, rho = probe.tau, probe.rho
    model, tok = load(cfg.model)
    model.set_attn_implementation("eager")
    n_layers = model.config.num_hidden_layers
    if cfg.first_layer >= n_layers:
        raise ValueError(f"first_layer={cfg.first_layer} must be < the model's {n_layers} layers")
    task = load_squad(cfg.items, max_chars=cfg.max_chars, chat=False)
    raw_hit, sup_hit, chance, records = [], [], [], []
    sink_text: Counter = Counter()
    in_passage = 0
    with progress_bar(NAME, len(task.items), quiet=quiet) as advance:
        for k, it in enumerate(task.items):
            text, span = it.prompt, it.spans["context"]
            enc = tok(text, return_offsets_mapping=True, return_tensors="pt")
            offs = [tuple(o) for o in enc.pop("offset_mapping")[0].tolist()]
            passage = torch.tensor([t for t, (a, b) in enumerate(offs) if a >= span[0] and b <= span[1] and b > a])
            q0 = text.index("Question:", span[1])
            queries = torch.tensor([t for t, (a, b) in enumerate(offs) if a >= q0 and b > a])
            gold = answer_tokens(offs, text, span, list(it.answers or []))
            advance()
            if not gold or not len(passage) or not len(queries):
                continue
            with torch.no_grad():
                att = model(**enc, output_attentions=True, use_cache=False).attentions  # L x (1, H, T, T)
            raw_m, sup_m, n_sink = [], [], 0
            for layer in range(cfg.first_layer, n_layers):
                a = att[layer][0].float()
                sinks = global_sinks(a, tau, rho)
                inside = sinks[torch.isin(sinks, passage)]
                n_sink += len(inside)
                sink_text.update(tok.decode([int(enc["input_ids"][0, j])]) for j in sinks.tolist())
                raw_m.append(layer_map(a, queries, passage, None))
                sup_m.append(layer_map(a, queries, passage, sinks))
            gset = set(gold)
            r = int(int(passage[torch.stack(raw_m).mean(0).argmax()]) in gset)
            s = int(int(passage[torch.stack(sup_m).mean(0).argmax()]) in gset)
            c = len(gset & set(passage.tolist())) / len(passage)
            raw_hit.append(r)
            sup_hit.append(s)
            chance.append(c)
            in_passage += int(n_sink > 0)
            records.append(
                {"item": k, "id": it.meta.get("id"), "raw_hit": r, "suppressed_hit": s, "chance": c, "passage_sinks": n_sink}
            )
    if not raw_hit:
        raise ValueError("no item had its answer inside the passage; raise items or max_chars")
    mc = mcnemar_exact(sup_hit, raw_hit)
    measured = {
        "items": len(raw_hit),
        "raw": proportion(sum(raw_hit), len(raw_hit)),
        "suppressed": proportion(sum(sup_hit), len(sup_hit)),
        "suppressed_vs_raw": {"only_suppressed": mc.only_a, "only_raw": mc.only_b, "mcnemar_p": mc.pvalue},
        "chance": float(np.mean(chance)),
        "items_with_passage_sinks": in_passage,
        "layers": [cfg.first_layer, n_layers - 1],
        "tau": tau,
        "rho": rho,
        "sink_tokens": dict(sink_text.most_common(10)),
    }
    res = lab_result(NAME, measured, cfg.record(), records)
    if not quiet:
        rows = [
            ["raw attention map", measured["raw"]["value"]],
            ["global sinks suppressed", measured["suppressed"]["value"]],
            ["chance (answer share of the passage)", measured["chance"]],
        ]
        print_table(
            f"Answer-span grounding on SQuAD ({len(raw_hit)} items), McNemar p = {mc.pvalue:.2g}", ["map", "hit rate"], rows, res
        )
    return res


def plot(res: LabResult, fig) -> None:
    ax = fig.subplots(1, 1)
    m = res.measured
    names = ["raw", "suppressed"]
    vals = [m[k]["value"] for k in names]
    err = [[v - m[k]["ci"][0] for v, k in zip(vals, names)], [m[k]["ci"][1] - v for v, k in zip(vals, names)]]
    ax.bar(["raw map", "GAS suppressed"], vals, yerr=err, color=["C0", "C1"])
    ax.axhline(m["chance"], ls=":", color="k", label="chance")
    ax.set(ylabel="answer-span hit rate (95% Wilson)", title="SQuAD grounding from question-to-passage attention")
    ax.legend()
