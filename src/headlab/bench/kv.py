"""``headlab bench kv``: KV-cache compression side by side on the same weights and the same items — dense,
NVIDIA's kvpress presses (github.com/NVIDIA/kvpress: StreamingLLM arXiv 2309.17453, SnapKV arXiv 2404.14469,
Knorm arXiv 2406.11430, ExpectedAttention (kvpress, NVIDIA 2025), TOVA arXiv 2401.06104, AdaKV arXiv
2407.11550, DuoAttention arXiv 2410.10819 from a local head pattern) and headlab's per-head plans (sparse or
dense prefill) — on passkey prompts and the RULER-style suite (arXiv 2404.06654; ``headlab.data.longctx``).

kvpress needs an older transformers, so its side runs in its own venv (``bash scripts/kvpress_env.sh``) through
``kv_child.py``; a missing venv is reported with that command, never replaced by numbers. The headlab side is
run by the caller (``headlab.sparsify.eval.kvbench``) and handed in as trial records. Both sides append one
line per finished item to their log in the output folder, so a stopped run resumes. This module exports the
items, runs the child, scores its answers, and turns every trial into rows: accuracy with Wilson 95 % intervals,
exact McNemar against headlab's dense run on the same items, kept KV share and bytes, prefill and decode time.

A trial record (both stacks): {"stack", "label", "method", "fraction", "prefill", "question", "dataset", "task",
"key", "score", "correct", "kv_fraction", "cache_bytes", "prefill_s", "decode_s", "text"}.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..data.longctx import SuiteItem, encode, item_key, score
from ..stats import mcnemar_exact, wilson_interval

#: kvpress presses ``headlab bench kv`` knows (kv_child.py's names)
PRESSES = ("streaming_llm", "snapkv", "knorm", "expected_attention", "tova", "adakv", "duo_attention")
PLAN_METHODS = ("duo", "moa", "retrieval", "uniform", "random")
SETUP = "bash scripts/kvpress_env.sh"
DEFAULT_KVPRESS_PYTHON = Path("build/kvpress-venv/bin/python")
CHILD = Path(__file__).with_name("kv_child.py")
HEADLAB_LOG = "headlab.trials.jsonl"
KVPRESS_LOG = "kvpress.trials.jsonl"
NAN = float("nan")


# ------------------------------------------------------------------------------------------ the kvpress venv
def resolve_python(python: str | os.PathLike | None) -> Path | None:
    """``python`` as given; the default also beside headlab's source tree when run from another folder."""
    if python is None:
        return None
    p = Path(python)
    if not p.exists() and not p.is_absolute() and p == DEFAULT_KVPRESS_PYTHON:
        beside = Path(__file__).resolve().parents[3] / p
        if beside.exists():
            return beside
    return p


_PROBE = (
    "import importlib.metadata as md, json, sys\n"
    "import kvpress\n"
    "print(json.dumps({n: md.version(n) for n in ('torch', 'transformers', 'kvpress')}))\n"
)


def probe_kvpress(python: str | os.PathLike | None, timeout: float = 300) -> dict:
    """{"status": "ok" | "missing", "python", "versions" | "why", "install"}: whether kvpress imports in ``python``."""
    p = resolve_python(python)
    miss = {"status": "missing", "python": str(p), "install": f"{SETUP} (then --kvpress-python build/kvpress-venv/bin/python)"}
    if p is None or not p.exists():
        return {**miss, "why": f"no kvpress venv at {p}"}
    try:
        proc = subprocess.run([str(p), "-c", _PROBE], capture_output=True, text=True, timeout=timeout, env=child_env(None))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {**miss, "why": f"{p} could not be run: {exc}"}
    if proc.returncode != 0:
        return {**miss, "why": f"kvpress does not import in {p}: {proc.stderr.strip()[-300:]}"}
    return {"status": "ok", "python": str(p), "versions": json.loads(proc.stdout.strip().splitlines()[-1])}


def child_env(threads: int | None) -> dict[str, str]:
    """A child's environment: offline, no progress bars, ``threads`` OpenMP threads."""
    env = os.environ.copy()
    env.update(TQDM_DISABLE="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    env.pop("PYTHONPATH", None)  # headlab is not importable there, on purpose
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


# ------------------------------------------------------------------------------------------ items
def dataset_of(item: SuiteItem) -> str:
    return "passkey" if item.task == "passkey" else "suite"


def export_items(items: Sequence[SuiteItem], tokenizer) -> list[dict]:
    """The items as the child reads them: text, answers and the token ids of both question placements."""
    out = []
    for it in items:
        after, inside = encode(it, tokenizer, question_inside=False), encode(it, tokenizer, question_inside=True)
        out.append(
            {
                "key": item_key(it),
                "task": it.task,
                "dataset": dataset_of(it),
                "context": it.context,
                "question": it.question,
                "answer_prefix": it.answer_prefix,
                "max_new": it.max_new,
                "after": {"context_ids": list(after.context_ids), "question_ids": list(after.question_ids)},
                "inside": {"context_ids": list(inside.context_ids), "question_ids": list(inside.question_ids)},
            }
        )
    return out


def press_label(press: str, fraction: float, question: str) -> str:
    return f"{press}@{fraction:g}" + (" (query-aware)" if question == "inside" else "")


def press_configs(
    presses: Sequence[str], fractions: Sequence[float], query_aware: bool, duo_pattern: str | None = None
) -> list[dict]:
    """kvpress configurations: the dense pipeline once, then every press at every fraction (question after the
    compressed context; with ``query_aware`` also inside it)."""
    bad = [p for p in presses if p not in PRESSES]
    if bad:
        raise ValueError(f"unknown press {bad[0]!r}; valid presses: {', '.join(PRESSES)}")
    for f in fractions:
        if not 0 < f < 1:
            raise ValueError(f"KV fractions must be in (0, 1), got {f}")
    out = [{"label": "kvpress dense", "press": "dense", "fraction": 1.0, "question": "after"}]
    for q in ("after", "inside") if query_aware else ("after",):
        for f in fractions:
            for p in presses:
                cfg = {"label": press_label(p, f, q), "press": p, "fraction": f, "question": q}
                if p == "duo_attention":
                    cfg["duo_pattern"] = duo_pattern
                out.append(cfg)
    return out


# ------------------------------------------------------------------------------------------ the child
def read_log(path: Path) -> list[dict]:
    """The JSON lines of a log (a torn last line is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def run_kvpress(
    python: Path,
    folder: Path,
    exported: list[dict],
    configs: list[dict],
    out: Path,
    *,
    threads: int | None = None,
    length: int = 0,
    parity_items: int = 1,
    adapter: dict | None = None,
    tick: Callable[[str], None] | None = None,
) -> list[dict]:
    """Run every config on every item in the kvpress venv (items already in ``out/kvpress.trials.jsonl`` are
    skipped); returns the log's records."""
    log = out / KVPRESS_LOG
    done = {(r["label"], r["key"]) for r in read_log(log) if r.get("type") == "item"}
    keys = {e["key"] for e in exported}
    todo = [c for c in configs if any((c["label"], k) not in done for k in keys)]
    if todo:
        items_path, spec_path = out / "kvpress.items.json", out / "kvpress.spec.json"
        items_path.write_text(json.dumps(exported), encoding="utf-8")
        spec = {
            "folder": str(folder),
            "items": str(items_path),
            "result": str(log),
            "threads": threads,
            "configs": todo,
            "skip": sorted(done),
            "parity_items": parity_items,
            "length": length,
            "adapter": adapter,
        }
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        if tick:
            tick(f"kvpress: {len(todo)} configurations in {python}")
        proc = subprocess.run([str(python), str(CHILD), str(spec_path)], capture_output=True, text=True, env=child_env(threads))
        if proc.returncode != 0:
            with log.open("a", encoding="utf-8") as f:
                f.write(
                    json.dumps(
                        {"type": "error", "label": "*", "error": f"kv_child exit {proc.returncode}: {proc.stderr[-1500:]}"}
                    )
                    + "\n"
                )
        for p in (items_path, spec_path):
            p.unlink(missing_ok=True)
    return read_log(log)


def kvpress_trials(records: list[dict], items: Sequence[SuiteItem], dense_bytes: Callable[[int], float]) -> list[dict]:
    """The child's item records as trial records, scored with the items' own metric."""
    by_key = {item_key(it): it for it in items}
    out = []
    for r in records:
        if r.get("type") != "item" or r["key"] not in by_key:
            continue
        it = by_key[r["key"]]
        s = score(r["text"], it.answers, it.metric)
        out.append(
            {
                "stack": "kvpress",
                "label": r["label"],
                "method": r["press"],
                "fraction": r.get("fraction"),
                "prefill": "dense",
                "question": r["question"],
                "dataset": dataset_of(it),
                "task": it.task,
                "key": r["key"],
                "score": s,
                "correct": s >= 1.0,
                "kv_fraction": r["kept_fraction"],
                "cache_bytes": r["cache_bytes"],
                "dense_bytes": dense_bytes(int(r["context_tokens"])),
                "prefill_s": r["prefill_s"],
                "decode_s": r["decode_s"],
                "text": r["text"],
                "pipeline_parity": r.get("pipeline_parity"),
            }
        )
    return out


def errors(records: list[dict]) -> list[dict]:
    return [{"label": r.get("label"), "error": r.get("error", "")} for r in records if r.get("type") == "error"]


# ------------------------------------------------------------------------------------------ rows
def _median(xs) -> float:
    xs = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return float(statistics.median(xs)) if xs else NAN


def rows(trials: Sequence[dict], items: Sequence[SuiteItem], reference: str = "dense") -> list[dict]:
    """One row per (label, dataset): the configuration's accuracy on the items it finished (Wilson 95 %), the
    suite's per-task accuracy and their mean, McNemar vs headlab's ``reference`` label on the same items, and
    medians of the kept KV share, cache bytes, prefill and decode seconds. A row with fewer items than the
    dataset is marked incomplete."""
    datasets = {d: [item_key(it) for it in items if dataset_of(it) == d] for d in ("passkey", "suite")}
    ref = {(t["dataset"], t["key"]): bool(t["correct"]) for t in trials if t["stack"] == "headlab" and t["label"] == reference}
    groups: dict[tuple, list[dict]] = {}
    for t in trials:
        groups.setdefault((t["stack"], t["label"], t["dataset"]), []).append(t)
    out = []
    for (stack, label, ds), ts in groups.items():
        ts = list({t["key"]: t for t in ts}.values())
        k, n = sum(bool(t["correct"]) for t in ts), len(ts)
        lo, hi = wilson_interval(k, n)
        tasks: dict[str, list] = {}
        for t in ts:
            tasks.setdefault(t["task"], []).append(bool(t["correct"]))
        row: dict[str, Any] = {
            "stack": stack,
            "label": label,
            "method": ts[0]["method"],
            "fraction": ts[0]["fraction"],
            "prefill": ts[0]["prefill"],
            "question": ts[0]["question"],
            "query_aware": ts[0]["question"] == "inside",
            "dataset": ds,
            "n": n,
            "of": len(datasets.get(ds, [])),
            "complete": n == len(datasets.get(ds, [])),
            "correct": k,
            "accuracy": k / n,
            "ci": [lo, hi],
            "tasks": {tk: {"n": len(v), "correct": sum(v), "accuracy": sum(v) / len(v)} for tk, v in sorted(tasks.items())},
            "kv_fraction": _median(t["kv_fraction"] for t in ts),
            "cache_bytes": _median(t["cache_bytes"] for t in ts),
            "dense_bytes": _median(t.get("dense_bytes") for t in ts),
            "prefill_s": _median(t["prefill_s"] for t in ts),
            "decode_s": _median(t["decode_s"] for t in ts),
        }
        row["task_average"] = sum(v["accuracy"] for v in row["tasks"].values()) / len(row["tasks"])
        pairs = [(bool(t["correct"]), ref[(ds, t["key"])]) for t in ts if (ds, t["key"]) in ref]
        if pairs and not (stack == "headlab" and label == reference):
            mc = mcnemar_exact([a for a, _ in pairs], [b for _, b in pairs])
            row["vs_dense"], row["p_vs_dense"], row["paired_n"] = [mc.only_a, mc.only_b], mc.pvalue, len(pairs)
        out.append(row)
    order = {"headlab": 0, "kvpress": 1}
    out.sort(key=lambda r: (r["dataset"], r["fraction"] or 1.0, order[r["stack"]], r["query_aware"], r["label"]))
    return out


# ------------------------------------------------------------------------------------------ report
def _n(x, fmt: str = ".2f") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:{fmt}}"


def table(res: dict) -> str:
    """Markdown: one row per configuration and dataset, then the missing peers and the errors."""
    head = [
        "dataset",
        "stack",
        "config",
        "prefill",
        "question",
        "KV kept",
        "KV MiB held",
        "accuracy [95% CI]",
        "suite task avg",
        "vs dense",
        "prefill s",
        "decode s",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in res["rows"]:
        acc = f"{r['correct']}/{r['n']} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]" + ("" if r["complete"] else f" (of {r['of']})")
        vs = f"+{r['vs_dense'][0]}/−{r['vs_dense'][1]}, p={r['p_vs_dense']:.2g}" if "vs_dense" in r else "–"
        lines.append(
            "| "
            + " | ".join(
                [
                    r["dataset"],
                    r["stack"],
                    r["label"],
                    r["prefill"],
                    "inside (query-aware)" if r["query_aware"] else "after",
                    _n(r["kv_fraction"], ".3f"),
                    _n(r["cache_bytes"] / 2**20 if r["cache_bytes"] == r["cache_bytes"] else NAN),
                    acc,
                    _n(r["task_average"], ".3f") if r["dataset"] == "suite" else "–",
                    vs,
                    _n(r["prefill_s"]),
                    _n(r["decode_s"]),
                ]
            )
            + " |"
        )
    c = res["config"]
    notes = [
        "",
        f"{c['model']} at {c['length']} tokens; passkey {c['passkey']} prompts, suite {c['suite_n']} items per task "
        f"(seed {c['seed']}, digest {c.get('digest', '?')}); KV fractions {c['fractions']}. Accuracy: every reference "
        "found (RULER's string_match_all; qa: string_match_part); vs dense: exact McNemar against headlab's dense run on "
        "the same items. KV kept: share of (layer, KV head, context key) kept after the prefill (kvpress's head-wise "
        "presses — AdaKV, DuoAttention, the headlab adapter — mask keys, so their cache still holds the bytes: KV MiB "
        "held). Query-aware: the question is inside the compressed context (an upper bound, not a deployable setting). "
        "Decode s: the question and the answer; headlab's compressed cache takes the question one token per step, "
        "kvpress's pipeline in one forward.",
    ]
    kv = res.get("kvpress", {})
    if kv.get("status") != "ok":
        notes.append(f"kvpress: MISSING — {kv.get('why', '')}; make it with `{SETUP}`. No kvpress numbers are shown.")
    else:
        notes.append(f"kvpress: {kv.get('versions')} in {kv.get('python')}.")
    for e in res.get("errors", []):
        notes.append(f"error in {e['label']}: {e['error'][:300]}")
    return "\n".join(lines + notes) + "\n"


def plot(res: dict, path) -> None:
    """Accuracy (Wilson bars) against the kept KV share: passkey and the suite, one marker per stack and method."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from ..io import atomic_write_png

    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    for ax, ds in zip(axes, ("passkey", "suite")):
        rs = [r for r in res["rows"] if r["dataset"] == ds]
        methods = sorted({(r["stack"], r["method"], r["prefill"], r["query_aware"]) for r in rs})
        for j, m in enumerate(methods):
            pts = sorted(
                (r["kv_fraction"], r["accuracy"], r["ci"])
                for r in rs
                if (r["stack"], r["method"], r["prefill"], r["query_aware"]) == m
            )
            xs = [p[0] for p in pts]
            ys = [p[1] for p in pts]
            err = [[max(0.0, p[1] - p[2][0]) for p in pts], [max(0.0, p[2][1] - p[1]) for p in pts]]
            name = (
                f"{m[0]} {m[1]}"
                + (f" ({m[2]} prefill)" if m[0] == "headlab" and m[1] != "dense" else "")
                + (" QA" if m[3] else "")
            )
            ax.errorbar(
                xs,
                ys,
                err,
                fmt="o-" if m[0] == "headlab" else "s--",
                color=f"C{j % 10}",
                ms=4,
                lw=0.8,
                capsize=2,
                label=name,
                mfc="none" if m[3] else None,
            )
        ax.set_xlabel("KV kept (share of the context's keys)")
        ax.set_ylabel("accuracy (Wilson 95 %)")
        ax.set_ylim(-0.02, 1.05)
        ax.set_title(f"{ds} at {res['config']['length']} tokens", fontsize=9)
        if rs:
            ax.legend(fontsize=6)
    fig.tight_layout()
    atomic_write_png(path, fig)


def finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


def write(res: dict, out, command: str = "") -> Path:
    """kv.json, kv.records.jsonl (every trial), table.md and kv.png in ``out``, each written atomically."""
    from ..io import atomic_write_json, atomic_write_text

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    body = {k: v for k, v in res.items() if k != "trials"}
    atomic_write_json(folder / "kv.json", finite({"command": command, **body}))
    atomic_write_text(folder / "kv.records.jsonl", "".join(json.dumps(finite(t)) + "\n" for t in res["trials"]))
    atomic_write_text(folder / "table.md", (f"`{command}`\n\n" if command else "") + table(res))
    plot(res, folder / "kv.png")
    return folder


def versions() -> dict:
    from ..timing import versions as v

    return {**v(), "python": sys.version.split()[0]}
