"""Token groups on the command line (MDI / AEI in ``headlab scan --group``) and the dilution curve.

"When Language Overrules: Revealing Text Dominance in Multimodal Large Language Models", arXiv
2508.10552, measures how attention splits between two token groups (text vs another modality); here
the groups are any spans of a text. Per head, over the selected queries i (all by default):

    share[g] = mean_i Σ_{j∈g} A[i, j]
    aei[g]   = mean_i share_i[g] / (|g visible to i| / |keys visible to i|)   (1 = its token share)
    mdi[a/b] = aei[a] / aei[b]                                                (> 1: a dominates b)

(:class:`headlab.probes.GroupShareProbe`). A group spec (``NAME=SPEC``) is one of

    ``0-15,40-50,7``  token positions of each text, inclusive ranges (0 = the first token as scanned,
                      the ``--prefix`` token included); ``40-`` runs to the end of the text
    ``last:N``        the last N tokens of each text
    ``text:STRING``   every token that overlaps an occurrence of STRING in the text (case-sensitive;
                      needs a fast tokenizer)
    ``rest``          every token in no other group

Substring groups resolve per text, so every text runs in its own forward pass (one extra pass per
text next to the scan's). The dilution curve (:func:`dilution_curve`) grows one group — a document
in front of a fixed tail (instruction or question) — and follows its share, per-token share and AEI.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..engine.hf import attach
from ..io import atomic_write_png
from ..probes import GroupShareProbe
from .stats import forward_for_attention

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_RANGE = re.compile(r"^(\d+)(?:-(\d*))?$")
GROUP_KINDS = ("share", "aei", "mdi")


@dataclass(frozen=True)
class TokenGroup:
    """A parsed group: ``kind`` "ranges" (``ranges`` inclusive, end None = to the end), "last"
    (``last`` tokens), "text" (``text`` substring) or "rest"."""

    name: str
    spec: str
    kind: str
    ranges: tuple[tuple[int, int | None], ...] = ()
    last: int = 0
    text: str = ""

    def positions(self, n_tokens: int, offsets: Sequence[tuple[int, int]] | None = None, source: str | None = None) -> list[int]:
        """Positions 0..n_tokens-1 of this group in one text; ``offsets`` (per position (start, end)
        characters in ``source``, (0, 0) for tokens without text) for ``text:`` groups."""
        if self.kind == "ranges":
            out: set[int] = set()
            for a, b in self.ranges:
                end = n_tokens - 1 if b is None else min(b, n_tokens - 1)
                out.update(range(a, end + 1))
            return sorted(out)
        if self.kind == "last":
            return list(range(max(0, n_tokens - self.last), n_tokens))
        if self.kind == "text":
            if offsets is None or source is None:
                raise ValueError(f"group {self.name!r} ({self.spec}) needs the text and its token offsets")
            hits = [m.start() for m in re.finditer(re.escape(self.text), source)]
            L = len(self.text)
            return [p for p, (s, e) in enumerate(offsets[:n_tokens]) if e > s and any(s < o + L and e > o for o in hits)]
        raise ValueError(f"group {self.name!r}: 'rest' positions follow from the other groups (resolve_groups)")


def parse_group(item: str) -> TokenGroup:
    """``"NAME=SPEC"`` -> TokenGroup (the grammar is in the module docstring); ValueError names the bad value."""
    if not isinstance(item, str) or "=" not in item:
        raise ValueError(
            f"--group {item!r} must look like NAME=SPEC, e.g. doc=0-99, question=last:12, ans=text:Answer, other=rest"
        )
    name, spec = item.split("=", 1)
    name, spec = name.strip(), spec.strip()
    if not _NAME.match(name):
        raise ValueError(
            f"--group {item!r}: the name {name!r} must start with a letter or _ and hold only letters, digits, _ . -"
        )
    if spec == "rest":
        return TokenGroup(name, spec, "rest")
    if spec.startswith("text:"):
        if not spec[5:]:
            raise ValueError(f"--group {item!r}: text: needs a non-empty substring, e.g. {name}=text:Answer")
        return TokenGroup(name, spec, "text", text=spec[5:])
    if spec.startswith("last:"):
        n = spec[5:]
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"--group {item!r}: last:N needs an integer N >= 1, got {n!r}")
        return TokenGroup(name, spec, "last", last=int(n))
    ranges = []
    for part in spec.split(","):
        m = _RANGE.match(part.strip())
        if not m:
            raise ValueError(
                f"--group {item!r}: bad part {part.strip()!r}; SPEC is positions and inclusive ranges like "
                "0-15,40-50 (40- = to the end), last:N, text:STRING or rest"
            )
        a = int(m.group(1))
        b = None if m.group(2) == "" else int(m.group(2)) if m.group(2) is not None else a
        if b is not None and b < a:
            raise ValueError(f"--group {item!r}: range {part.strip()!r} ends before it starts")
        ranges.append((a, b))
    return TokenGroup(name, spec, "ranges", ranges=tuple(ranges))


def parse_groups(items: Sequence[str]) -> dict[str, TokenGroup]:
    """Several ``NAME=SPEC`` -> {name: TokenGroup}, in order; names must differ and at most one is ``rest``."""
    out: dict[str, TokenGroup] = {}
    for item in items:
        g = parse_group(item)
        if g.name in out:
            raise ValueError(f"--group {g.name!r} is given twice ({out[g.name].spec!r} and {g.spec!r}); use distinct names")
        out[g.name] = g
    if sum(g.kind == "rest" for g in out.values()) > 1:
        raise ValueError("only one --group may be 'rest'")
    if out and all(g.kind == "rest" for g in out.values()):
        raise ValueError("a 'rest' group needs at least one other --group")
    return out


def token_offsets(tok, text: str, ids: Sequence[int], n_prefix: int) -> list[tuple[int, int]]:
    """(start, end) characters of each of ``ids`` in ``text``: the ``n_prefix`` prefix tokens get (0, 0)."""
    if not getattr(tok, "is_fast", False):
        raise ValueError("text: groups need a fast tokenizer (character offsets); use position ranges instead")
    enc = tok(text, return_offsets_mapping=True)
    own = list(enc["input_ids"])
    mine = list(ids[n_prefix:])
    if own[: len(mine)] != mine:
        raise ValueError("text: groups: the tokenizer's offsets do not match the scanned token ids")
    return [(0, 0)] * n_prefix + [tuple(o) for o in enc["offset_mapping"][: len(mine)]]


def resolve_groups(
    groups: dict[str, TokenGroup], n_tokens: int, offsets=None, source: str | None = None, where: str = "the text"
) -> dict[str, list[int]]:
    """{name: positions} in one text of ``n_tokens``; an empty group raises ValueError naming it and the text."""
    out: dict[str, list[int]] = {}
    for name, g in groups.items():
        if g.kind != "rest":
            out[name] = g.positions(n_tokens, offsets, source)
    for name, g in groups.items():
        if g.kind == "rest":
            taken = {p for v in out.values() for p in v}
            out[name] = [p for p in range(n_tokens) if p not in taken]
    for name in groups:
        if not out[name]:
            raise ValueError(f"--group {name}={groups[name].spec} matches no token of {where} ({n_tokens} tokens)")
    return {name: out[name] for name in groups}


def group_metric_names(groups: dict[str, TokenGroup]) -> list[str]:
    """The scan metrics of the groups: share:<g>, aei:<g> per group, then mdi:<first>/<other> for each other group."""
    names = [f"{k}:{g}" for g in groups for k in ("share", "aei")]
    first = next(iter(groups), None)
    return names + [f"mdi:{first}/{g}" for g in list(groups)[1:]]


def group_formula(metric: str) -> str | None:
    """The formula of a group metric name (share:g, aei:g, mdi:a/b); None for other names."""
    kind, _, rest = metric.partition(":")
    if not rest or kind not in GROUP_KINDS:
        return None
    cite = " [When Language Overrules, arXiv 2508.10552]"
    if kind == "share":
        return f"mean over queries i of sum_{{j in {rest}}} A[i, j]{cite}"
    if kind == "aei":
        return f"mean over queries i of share_i[{rest}] / (visible keys in {rest} / visible keys){cite}"
    a, _, b = rest.partition("/")
    return f"aei:{a} / aei:{b} (> 1: {a} gets more than its token share relative to {b}){cite}"


def with_group_ratios(stats: dict[str, torch.Tensor], metrics: Sequence[str]) -> dict[str, torch.Tensor]:
    """``stats`` plus every ``mdi:a/b`` of ``metrics`` (aei:a / aei:b), in ``metrics`` order."""
    out = dict(stats)
    for m in metrics:
        if m.startswith("mdi:") and m not in out:
            a, _, b = m[4:].partition("/")
            if f"aei:{a}" in out and f"aei:{b}" in out:
                out[m] = out[f"aei:{a}"] / out[f"aei:{b}"]
    return {m: out[m] for m in metrics if m in out} | {m: v for m, v in out.items() if m not in metrics}


def group_states(
    model,
    ids: Sequence[torch.Tensor],
    groups: dict[str, TokenGroup],
    queries: TokenGroup | None = None,
    *,
    tok=None,
    texts: Sequence[str] | None = None,
    n_prefix: int = 0,
    edits=(),
    index: Sequence[int] | None = None,
    tick: Callable[[str], None] | None = None,
) -> dict[str, dict]:
    """{"share:<g>" | "aei:<g>": {"total", "count"}} over the texts ``ids`` (each (1, T)), one forward
    pass per text (groups resolve per text). ``queries``: the query rows counted (None = all).
    ``tok``/``texts``/``n_prefix`` are needed for ``text:`` groups; ``index``: the texts' numbers in messages."""
    tick = tick or (lambda msg: None)
    needs_text = any(g.kind == "text" for g in groups.values()) or (queries is not None and queries.kind == "text")
    if needs_text and (tok is None or texts is None):
        raise ValueError("text: groups need the tokenizer and the texts")
    total: dict[str, dict] = {}
    for k, x in enumerate(ids):
        num = index[k] if index is not None else k
        T = int(x.shape[1])
        offsets = token_offsets(tok, texts[k], x[0].tolist(), n_prefix) if needs_text and texts is not None else None
        src = texts[k] if texts is not None else None
        pos = resolve_groups(groups, T, offsets, src, where=f"text #{num}")
        qpos = None
        if queries is not None:
            qpos = resolve_groups({"queries": queries}, T, offsets, src, where=f"text #{num}")["queries"]
        probe = GroupShareProbe(pos, queries=qpos)
        with attach(model, probes=[probe], edits=list(edits)):
            forward_for_attention(model, x)
        for m, s in probe.states().items():
            if m not in total:
                total[m] = {"total": s["total"].clone(), "count": s["count"].clone()}
            else:
                total[m]["total"] += s["total"]
                total[m]["count"] += s["count"]
        tick(f"groups: text {num + 1} ({T} tokens)")
    return total


def dilution_curve(
    model,
    tok,
    document: str,
    tail: str,
    sizes: Sequence[int],
    *,
    prefix: str | None = None,
    edits=(),
    tick: Callable[[str], None] | None = None,
) -> list[dict]:
    """How a growing group's attention dilutes: for each n in ``sizes``, the first n tokens of
    ``document`` (group "doc") then ``tail`` (group "tail", e.g. an instruction or question); the
    queries are the tail's tokens. ``prefix``: a special token put first, in neither group (keeps the
    sink out of the document). Per n (means over every layer and head; ``*_by_layer`` per layer):
    share_doc, share_tail, share_per_doc_token = share_doc / n, aei_doc, aei_tail, mdi = aei_doc / aei_tail."""
    tick = tick or (lambda msg: None)
    doc = tok(document, add_special_tokens=False)["input_ids"]
    tl = tok(tail, add_special_tokens=False)["input_ids"]
    pre: list[int] = []
    if prefix:
        pid = tok.convert_tokens_to_ids(prefix)
        if pid is None or pid == tok.unk_token_id:
            raise ValueError(f"prefix {prefix!r} is not a single token of this tokenizer")
        pre = [int(pid)]
    if not tl:
        raise ValueError("tail is empty after tokenisation: give the instruction or question that reads the document")
    sizes = list(sizes)
    if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
        raise ValueError(f"sizes must be a non-empty list of ints >= 1, got {sizes!r}")
    if max(sizes) > len(doc):
        raise ValueError(f"document has {len(doc)} tokens: sizes must lie in 1..{len(doc)}, got max {max(sizes)}")
    rows = []
    for n in sorted(set(sizes)):
        p = len(pre)
        ids = torch.tensor([pre + doc[:n] + tl], dtype=torch.long)
        groups = {"doc": range(p, p + n), "tail": range(p + n, p + n + len(tl))}
        probe = GroupShareProbe(groups, queries=groups["tail"])
        with attach(model, probes=[probe], edits=list(edits)):
            forward_for_attention(model, ids)
        r = probe.results()
        by = {k: v.double().nanmean(-1) for k, v in r.items()}  # per layer, mean over heads
        mdi = (by["aei:doc"] / by["aei:tail"]).nanmean()
        rows.append(
            {
                "n_doc": n,
                "n_tail": len(tl),
                "share_doc": float(by["share:doc"].nanmean()),
                "share_tail": float(by["share:tail"].nanmean()),
                "share_per_doc_token": float(by["share:doc"].nanmean()) / n,
                "aei_doc": float(by["aei:doc"].nanmean()),
                "aei_tail": float(by["aei:tail"].nanmean()),
                "mdi": float(mdi),
                "share_doc_by_layer": [round(float(v), 6) for v in by["share:doc"]],
                "aei_doc_by_layer": [round(float(v), 6) for v in by["aei:doc"]],
            }
        )
        tick(f"dilution: {n} document tokens")
    return rows


def dilution_png(path: Path, rows: list[dict], title: str = "attention dilution") -> Path:
    """Two panels over the document size: the shares of doc and tail, and the per-token share and AEI of doc."""
    import matplotlib

    matplotlib.use("Agg")

    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("no dilution rows to plot")
    n = [r["n_doc"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    a1.plot(n, [r["share_doc"] for r in rows], "o-", label="share: document")
    a1.plot(n, [r["share_tail"] for r in rows], "s-", label="share: tail")
    a1.set_xlabel("document tokens")
    a1.set_ylabel("attention share of the tail's queries")
    a1.legend(fontsize=8)
    a2.plot(n, [r["share_per_doc_token"] for r in rows], "o-", label="share per document token")
    a2.set_yscale("log")
    a2.set_xlabel("document tokens")
    a2.set_ylabel("share per token")
    b = a2.twinx()
    b.plot(n, [r["aei_doc"] for r in rows], "^--", color="tab:red", label="AEI document")
    b.set_ylabel("AEI (1 = token share)")
    h1, l1 = a2.get_legend_handles_labels()
    h2, l2 = b.get_legend_handles_labels()
    a2.legend(h1 + h2, l1 + l2, fontsize=8)
    if len(n) > 1 and max(n) / max(1, min(n)) >= 8:
        for ax in (a1, a2):
            ax.set_xscale("log")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return atomic_write_png(path, fig)
