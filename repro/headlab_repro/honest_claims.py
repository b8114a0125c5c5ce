"""Honest rewrites of two loose rules: bf16 head statistics judged by a bound that does not come from the
measurement it checks, and the HTML head atlas judged against a page budget set outside headlab.

``devices-bf16`` took its tolerance from the very comparison it re-runs, and ``report-page-2k`` checks the page
against the writer's own byte budget, so neither could fail for a reason outside headlab's constants. The two
claims below keep those results (they stay as they were, exploratory) and add rules that can:

* ``devices-bf16-lengths``: what a user reads from a head atlas is how heads differ from one another and which
  heads are extreme. A dtype gap below a tenth of the spread between heads cannot change that, and neither can
  a gap that keeps the ten most extreme heads of each statistic. The bound is a share of the model's own
  between-head spread (not of a number seen before), checked at 256, 1024 and 4096 tokens.
* ``report-page-budget``: the page must stay under 5 MiB, the size at which Lighthouse's total-byte-weight
  audit ("Avoid enormous network payloads") was set to fail a page: about the 95th percentile of web pages in the
  HTTP Archive when the audit was written (GoogleChrome/lighthouse pull request 1759). It is checked at 2048,
  4096 and 8192 tokens, and every stored map must decode to the shape the page states.

Sink metric arXiv 2410.10781; previous-token heads arXiv 2209.11895; bertviz arXiv 1904.02679.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from .claims import Claim, Tolerance, number, register
from .kernel_claims import DEVICES, REPORT_METRICS, _scan_config, page_data

# --- bf16 vs fp32 at several lengths ------------------------------------------------------------------------

BF16_LENGTHS = (256, 1024, 4096)
BF16_SMOKE_LENGTHS = (64, 128)
BF16_METRICS = ("sink", "entropy", "prev_token", "distance")
GAP_OF_SPREAD = 0.1  # max |bf16 - fp32| over heads <= this share of the fp32 standard deviation over heads
TOP_K = 10  # the most extreme heads of each statistic ...
TOP_KEEP = 9  # ... of which at least this many stay the most extreme in bf16
# the end of each statistic a user looks for: sinks, previous-token and long-range heads are high, focused
# heads have low entropy
EXTREME_HIGH = {"sink": True, "entropy": False, "prev_token": True, "distance": True}


def _bf16_cmd(tokens: int, dtype: str) -> str:
    sub = "fp32" if dtype == "float32" else "bf16"
    return (
        f"headlab scan --model smollm2-135m --n-texts 1 --max-tokens {tokens} --metrics {','.join(BF16_METRICS)} "
        f"--dtype {dtype} --threads 2 --quiet --out {{out}}/T{tokens}/{sub}"
    )


def _bf16_cmds(lengths: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(_bf16_cmd(t, d) for t in lengths for d in ("float32", "bfloat16"))


def _bf16_size(lengths: tuple[int, ...]) -> dict:
    return {"lengths": list(lengths), "n_texts": 1, "metrics": list(BF16_METRICS), "dtypes": ["float32", "bfloat16"]}


def _collect_bf16_lengths(out: Path) -> tuple[dict, list[dict], dict]:
    """DIR/T<tokens>/{fp32,bf16}: one ``headlab scan`` folder each (meta.json, heads.json, atlas.png)."""
    out = Path(out)
    runs: dict = {}
    records: list[dict] = []
    for sub in sorted(out.glob("T*"), key=lambda p: int(p.name[1:])):
        tokens = int(sub.name[1:])
        pair = {}
        for dt in ("fp32", "bf16"):
            meta = json.loads((sub / dt / "meta.json").read_text())
            cfg = _scan_config(meta)
            if cfg["max_tokens"] != tokens:
                raise ValueError(f"{sub / dt}: the scan kept {cfg['max_tokens']} tokens, the folder says {tokens}")
            pair[dt] = {"heads": json.loads((sub / dt / "heads.json").read_text()), "metrics": cfg["metrics"]}
        runs[str(tokens)] = pair
        f32 = {(h["layer"], h["head"]): h for h in pair["fp32"]["heads"]}
        for h in pair["bf16"]["heads"]:
            ref = f32[(h["layer"], h["head"])]
            records.append(
                {"tokens": tokens, "layer": h["layer"], "head": h["head"], **{f"{m}_gap": h[m] - ref[m] for m in BF16_METRICS}}
            )
    lengths = [int(t) for t in runs]
    raw = {
        "runs": runs,
        "config": {
            "lengths": lengths,
            "n_texts": 1,
            "metrics": list(BF16_METRICS),
            "dtypes": ["float32", "bfloat16"],
        },
    }
    files = {
        "raw": [f"T{t}/{d}/meta.json" for t in lengths for d in ("fp32", "bf16")],
        "plot": [f"T{t}/bf16/atlas.png" for t in lengths],
        "records": [f"T{t}/{d}/heads.json" for t in lengths for d in ("fp32", "bf16")],
    }
    return raw, records, files


def _top(values: dict, k: int, high: bool) -> set:
    return set(sorted(values, key=lambda s: (-values[s] if high else values[s], s))[:k])


def _summary_bf16_lengths(raw: dict) -> dict:
    out = {}
    for tokens, pair in raw["runs"].items():
        f32 = {(h["layer"], h["head"]): h for h in pair["fp32"]["heads"]}
        b16 = {(h["layer"], h["head"]): h for h in pair["bf16"]["heads"]}
        if set(f32) != set(b16):
            raise ValueError(f"at {tokens} tokens the fp32 and bf16 scans cover different heads")
        for m in BF16_METRICS:
            a = {s: float(f32[s][m]) for s in f32}
            b = {s: float(b16[s][m]) for s in f32}
            gap = max(abs(b[s] - a[s]) for s in a)
            spread = statistics.pstdev(a.values())
            keep = len(_top(a, TOP_K, EXTREME_HIGH[m]) & _top(b, TOP_K, EXTREME_HIGH[m]))
            out[f"{m}.gap_over_spread.T{tokens}"] = number(
                gap / spread if spread > 0 else float("inf"), n=len(a), gap=gap, spread=spread, tokens=int(tokens)
            )
            out[f"{m}.top{TOP_K}_kept.T{tokens}"] = number(keep, n=TOP_K, tokens=int(tokens))
    return out


def _rule_bf16_lengths(x: dict) -> list:
    conds = []
    lengths = sorted({v["tokens"] for v in x.values()})
    for t in lengths:
        for m in BF16_METRICS:
            g = x[f"{m}.gap_over_spread.T{t}"]
            k = x[f"{m}.top{TOP_K}_kept.T{t}"]
            conds.append(
                (
                    f"{t} tokens, {m}: max |bf16 - fp32| {g['gap']:.3g} is {g['value']:.3f} of the spread over heads "
                    f"{g['spread']:.3g} (<= {GAP_OF_SPREAD})",
                    g["value"] <= GAP_OF_SPREAD,
                )
            )
            conds.append(
                (
                    f"{t} tokens, {m}: {k['value']:.0f} of the {TOP_K} most extreme heads stay so in bf16 (>= {TOP_KEEP})",
                    k["value"] >= TOP_KEEP,
                )
            )
    return conds


register(
    Claim(
        name="devices-bf16-lengths",
        table=DEVICES,
        short="bf16 vs fp32 head statistics of SmolLM2-135M at 256, 1024 and 4096 tokens, against the spread over heads",
        claim=(
            "A bf16 model gives the same head atlas as fp32: at every length, each statistic's largest bf16 gap is "
            "under a tenth of how much heads differ from one another, and the most extreme heads stay the most extreme."
        ),
        paper="sink metric arXiv 2410.10781; previous-token heads arXiv 2209.11895",
        command=_bf16_cmds(BF16_LENGTHS),
        size=_bf16_size(BF16_LENGTHS),
        smoke=_bf16_cmds(BF16_SMOKE_LENGTHS),
        smoke_size=_bf16_size(BF16_SMOKE_LENGTHS),
        rule=(
            "For each of sink, entropy, prev_token and distance over all 270 heads of SmolLM2-135M on the first built-in "
            f"text cut to each of {', '.join(map(str, BF16_LENGTHS))} tokens: max over heads of |bf16 - fp32| <= "
            f"{GAP_OF_SPREAD} x the standard deviation over heads of the fp32 statistic, and at least {TOP_KEEP} of the "
            f"{TOP_K} most extreme fp32 heads (highest sink, prev_token and distance; lowest entropy) are among the "
            f"{TOP_K} most extreme bf16 heads. Every condition at every length must hold."
        ),
        conditions=_rule_bf16_lengths,
        summarize=_summary_bf16_lengths,
        collect=_collect_bf16_lengths,
        cost_s=900,
        smoke_cost_s=60,
        tolerance=Tolerance("abs", 0.05),  # not a timing: quality run; gap/spread shares and head counts
        show=tuple(f"{m}.gap_over_spread.T{t}" for t in BF16_LENGTHS for m in ("sink", "entropy")),
        notes=(
            "Replaces the rule of devices-bf16, whose tolerance came from its own measurement. The bound is a share of "
            "the model's between-head spread, chosen for what it means to a reader of the atlas; the 1024-token gaps of "
            "devices-bf16 were known when it was chosen (the spread over heads was not computed), 256 and 4096 tokens "
            "were never measured. CPU bf16: gaps move with the CPU's bf16 support; a rerun elsewhere may move a share by a "
            "few hundredths or a count by one head."
        ),
    )
)


# --- the HTML head atlas against Lighthouse's payload limit --------------------------------------------------

PAGE_LIMIT_BYTES = 5 * 1024 * 1024  # Lighthouse total-byte-weight: "Avoid enormous network payloads"
PAGE_LENGTHS = (2048, 4096, 8192)
PAGE_SMOKE_LENGTHS = (32, 64)
MIN_DETAIL_2K = 24  # the map planner's max_detail, promised at 2048 tokens


def _page_cmd(tokens: int) -> str:
    return (
        f"headlab scan --model smollm2-135m --n-texts 1 --max-tokens {tokens} --metrics {REPORT_METRICS} --html "
        f"--threads 2 --quiet --out {{out}}/T{tokens}"
    )


def _page_size(lengths: tuple[int, ...]) -> dict:
    return {"lengths": list(lengths), "n_texts": 1, "metrics": REPORT_METRICS.split(",")}


def _blob_ok(h: dict, n_tokens: int, encoding: str) -> bool:
    """Every blob of one head decodes to the size its fields state."""
    from headlab.report.data import unpack

    if len(unpack(h["map"], encoding)) != int(h["rows"]) * int(h["cols"]):
        return False
    if "topk_pos" in h:
        cells = n_tokens * int(h["k"])
        return (
            len(unpack(h["topk_pos"], encoding)) == cells * int(h["pos_bytes"])
            and len(unpack(h["topk_w"], encoding)) == cells * 2
        )
    return True


def _collect_page(out: Path) -> tuple[dict, list[dict], dict]:
    """DIR/T<tokens>: one ``headlab scan --html`` folder each (meta.json, heads.json, atlas.png, index.html)."""
    out = Path(out)
    pages: dict = {}
    records: list[dict] = []
    for sub in sorted(out.glob("T*"), key=lambda p: int(p.name[1:])):
        tokens = int(sub.name[1:])
        meta = json.loads((sub / "meta.json").read_text())
        if _scan_config(meta)["max_tokens"] != tokens:
            raise ValueError(f"{sub}: the scan kept {_scan_config(meta)['max_tokens']} tokens, the folder says {tokens}")
        page = sub / "index.html"
        maps = page_data(page.read_text(encoding="utf-8")).get("maps") or {}
        text = (maps.get("texts") or [{}])[0]
        heads = text.get("heads") or {}
        enc = maps.get("encoding", "raw")
        bad = [k for k, h in heads.items() if not _blob_ok(h, int(text["n_tokens"]), enc)]
        kinds = [h["kind"] for h in heads.values()]
        pages[str(tokens)] = {
            "bytes": page.stat().st_size,
            "n_tokens": text.get("n_tokens"),
            "n_heads": meta["n_layers"] * meta["n_heads"],
            "encoding": enc,
            "detail": kinds.count("detail"),
            "overview": kinds.count("overview"),
            "undecodable": bad,
        }
        records += [
            {"tokens": tokens, "site": k, "kind": h["kind"], "rows": h["rows"], "cols": h["cols"]} for k, h in heads.items()
        ]
    lengths = [int(t) for t in pages]
    raw = {"pages": pages, "config": {"lengths": lengths, "n_texts": 1, "metrics": REPORT_METRICS.split(",")}}
    files = {
        "raw": [f"T{t}/meta.json" for t in lengths],
        "plot": [f"T{t}/atlas.png" for t in lengths],
        "records": [f"T{t}/heads.json" for t in lengths],
        "page": [f"T{t}/index.html" for t in lengths],
    }
    return raw, records, files


def _summary_page(raw: dict) -> dict:
    out = {}
    for t, p in raw["pages"].items():
        out[f"page_mib.T{t}"] = number(p["bytes"] / 2**20, n=1, bytes=p["bytes"], tokens=int(t), encoding=p["encoding"])
        out[f"mapped_heads.T{t}"] = number(p["detail"] + p["overview"], n=p["n_heads"], tokens=int(t))
        out[f"detail_heads.T{t}"] = number(p["detail"], n=p["n_heads"], tokens=int(t))
        out[f"undecodable_heads.T{t}"] = number(len(p["undecodable"]), n=p["n_heads"], tokens=int(t))
    return out


def _rule_page(x: dict) -> list:
    conds = []
    for t in sorted({v["tokens"] for v in x.values()}):
        mb, mapped = x[f"page_mib.T{t}"], x[f"mapped_heads.T{t}"]
        bad = x[f"undecodable_heads.T{t}"]
        conds += [
            (
                f"{t} tokens: index.html is {mb['bytes']:,} bytes ({mb['value']:.2f} MiB, <= 5 MiB = {PAGE_LIMIT_BYTES:,})",
                mb["bytes"] <= PAGE_LIMIT_BYTES,
            ),
            (f"{t} tokens: {mapped['value']:.0f} of {mapped['n']} heads have a map", mapped["value"] == mapped["n"]),
            (f"{t} tokens: {bad['value']:.0f} heads have a blob that does not decode to its stated size", bad["value"] == 0),
        ]
    if "detail_heads.T2048" in x:
        d = x["detail_heads.T2048"]
        conds.append((f"2048 tokens: {d['value']:.0f} heads get detail maps (>= {MIN_DETAIL_2K})", d["value"] >= MIN_DETAIL_2K))
    return conds


register(
    Claim(
        name="report-page-budget",
        table=DEVICES,
        short="HTML head atlas of SmolLM2-135M at 2048, 4096 and 8192 tokens against Lighthouse's 5 MiB payload limit",
        claim=(
            "The self-contained head-atlas page stays under the 5 MiB at which Lighthouse flags an enormous network "
            "payload, at 2048, 4096 and 8192 tokens, while every one of the 270 heads has a map that decodes."
        ),
        paper="Lighthouse total-byte-weight audit (GoogleChrome/lighthouse #1759); bertviz (arXiv 1904.02679) holds every map in the page",
        command=tuple(_page_cmd(t) for t in PAGE_LENGTHS),
        size=_page_size(PAGE_LENGTHS),
        smoke=tuple(_page_cmd(t) for t in PAGE_SMOKE_LENGTHS),
        smoke_size=_page_size(PAGE_SMOKE_LENGTHS),
        rule=(
            "With `headlab scan --html` on the first built-in text cut to each of 2048, 4096 and 8192 tokens: index.html "
            "<= 5 MiB (5,242,880 bytes), all 270 heads have a map, every stored blob decodes to the size its fields state, "
            "and >= 24 heads get detail maps at 2048 tokens."
        ),
        conditions=_rule_page,
        summarize=_summary_page,
        collect=_collect_page,
        cost_s=480,
        smoke_cost_s=40,
        tolerance=Tolerance("abs", 0.05),  # not a timing: MiB and head counts
        show=tuple(f"page_mib.T{t}" for t in PAGE_LENGTHS) + ("detail_heads.T2048",),
        notes=(
            "Replaces the rule of report-page-2k, which checked the writer's own budget. The raw page at 2048 tokens was "
            "5.65 MB (report-page-2k) when this limit was chosen, so the page now stores its maps gzip-compressed; a gzip "
            "of that whole 2048-token page (2.29 MB) was looked at when the encoding was chosen, hence exploratory. "
            "4096 and 8192 tokens were never measured. Lighthouse counts transfer bytes; a local page's transfer is its "
            "file."
        ),
    )
)
