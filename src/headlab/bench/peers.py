"""``headlab bench peers``: headlab against the tools users know — transformers' eager attention maps,
TransformerLens (``HookedTransformer`` and its ``TransformerBridge``) and nnsight — on the same model, the same
weights and the same token ids.

Two tasks:

- **capture** of per-head statistics (sink = mean weight on key 0, entropy, previous-token share, mean distance)
  at each length: headlab's streaming probes (no maps) vs each peer's attention maps run through headlab's own
  probe formulas (:class:`headlab.bench.peers_child.MapStats`); the baseline is a plain SDPA forward (``sdpa``).
- **patching** of every head's output on IOI prompt pairs: :func:`headlab.measure.patching.head_effects` vs
  TransformerLens' standard per-head loop on ``hook_z`` and nnsight's (one trace per head).

Protocol: every configuration (tool × task × length) runs in its **own fresh process** per round
(:mod:`headlab.bench.peers_child`: load, set-up untimed, one untimed warm-up call, one timed call, peak RSS of the
process), so its peak memory is its own; the configurations alternate by :func:`headlab.timing.order` across
rounds (reversed in odd rounds) so that all see the same machine load; ratios are taken per round (tool / SDPA,
headlab / tool) and reported as median and range (:func:`headlab.timing.spread`). **Parity before speed**: a
peer's time counts only where its numbers equal headlab's (statistics: max |peer − headlab| <= 1e-4, the mean
distance in units of the length; patching: normalised effects within 1e-4, or the raw metric changes where the
clean-corrupt gap is below 0.5). A peer whose maps cannot fit in memory (layers × heads × T² × 4 bytes, every
layer's map kept as ``output_attentions`` / ``run_with_cache`` / ``.save()`` keep them) is not run; the memory it
would need is reported instead. A peer that is not installed is reported as missing, with the command that
installs it (``scripts/peers_env.sh``) — never faked.

The peers live in their own venv (``--peers-python``, default ``build/peers-venv/bin/python``) with the same
torch and transformers as headlab's; headlab's own source tree is put on their ``PYTHONPATH``, so both sides run
the same probe code.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..timing import load_average, machine, order, spread, versions
from .peers_child import CAPTURE_TOOLS, METRICS, PATCHING_TOOLS, PEER_PACKAGES

#: the peers, in the order tables list them
PEERS = ("eager", "tl", "tl-bridge", "nnsight")
#: what each peer is, for tables
LABELS = {
    "sdpa": "plain SDPA forward (baseline)",
    "headlab": "headlab (streaming probes)",
    "eager": "transformers eager, output_attentions",
    "tl": "TransformerLens HookedTransformer",
    "tl-bridge": "TransformerLens TransformerBridge",
    "nnsight": "nnsight",
}
DEFAULT_PEERS_PYTHON = Path("build/peers-venv/bin/python")
SETUP = "bash scripts/peers_env.sh build/peers-venv"
#: the versions scripts/peers_env.sh installs (TransformerLens 4 dropped HookedTransformer; 3.9 has both)
PINS = {"transformer-lens": "3.9.0", "nnsight": "0.8.1"}
PARITY_TOL = 1e-4
#: below this clean-corrupt metric gap, patching parity compares raw metric changes instead of normalised effects
SMALL_GAP = 0.5
Spawn = Callable[[str, dict], dict]


# ------------------------------------------------------------------------------------------ memory
def maps_bytes(n_layers: int, n_heads: int, length: int, dtype_bytes: int = 4) -> int:
    """Bytes of every layer's attention maps of one sequence: layers × heads × T² × ``dtype_bytes``."""
    for name, v in (("n_layers", n_layers), ("n_heads", n_heads), ("length", length), ("dtype_bytes", dtype_bytes)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    return n_layers * n_heads * length * length * dtype_bytes


def needed_bytes(tool: str, n_layers: int, n_heads: int, length: int, weights_bytes: int = 0) -> int:
    """What a capture configuration needs at least: the weights, plus every layer's maps for a peer (headlab and
    the SDPA baseline keep none)."""
    maps = 0 if tool in ("sdpa", "headlab") else maps_bytes(n_layers, n_heads, length)
    return weights_bytes + maps


def memory_limit_bytes(fraction: float = 0.8) -> int:
    """``fraction`` of the machine's physical memory (MemTotal): above it a configuration is not started."""
    total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = 16 << 30
    return int(total * fraction)


def gb(n: float) -> float:
    return n / 1e9


# ------------------------------------------------------------------------------------------ the peers' venv
def install_command(tool: str) -> str:
    """How to get a peer: the setup script (a venv beside headlab's, same torch and transformers)."""
    pkg = PEER_PACKAGES.get(tool)
    pin = f" (it installs {pkg}=={PINS[pkg]})" if pkg else ""
    return f"{SETUP}{pin}, then --peers-python build/peers-venv/bin/python"


def resolve_peers_python(python: str | os.PathLike | None) -> Path | None:
    """``python`` as given; the default (``build/peers-venv/bin/python``) also beside headlab's source tree when
    the command runs from another folder."""
    if python is None:
        return None
    p = Path(python)
    if not p.exists() and not p.is_absolute() and p == DEFAULT_PEERS_PYTHON:
        beside = Path(__file__).resolve().parents[3] / p  # the checkout that holds src/headlab
        if beside.exists():
            return beside
    return p


_PROBE = r"""
import importlib, importlib.metadata as md, json, sys
out = {"python": sys.executable, "versions": {}, "have": {}}
for n in ("torch", "transformers", "transformer-lens", "nnsight", "matplotlib"):
    try:
        out["versions"][n] = md.version(n)
    except md.PackageNotFoundError:
        out["versions"][n] = None
def have(mod, attr=None):
    try:
        m = importlib.import_module(mod)
        return attr is None or hasattr(m, attr)
    except Exception as e:
        return False
out["have"]["tl"] = have("transformer_lens.HookedTransformer", "HookedTransformer")
out["have"]["tl-bridge"] = have("transformer_lens.model_bridge", "TransformerBridge")
out["have"]["nnsight"] = have("nnsight")
print(json.dumps(out))
"""


def probe_peers(peers: Sequence[str], python: str | os.PathLike | None, timeout: float = 300) -> dict[str, dict]:
    """{peer: {"status": "ok" | "missing", "python", "why", "install", "versions"}}. ``eager`` runs in headlab's
    own interpreter; the others need ``python`` (the peers' venv) with their package importable."""
    out: dict[str, dict] = {}
    python = resolve_peers_python(python)
    found: dict | None = None
    why = ""
    need_venv = [p for p in peers if p != "eager"]
    if need_venv:
        if python is None or not Path(python).exists():
            why = f"no peers venv at {python}" if python is not None else "no --peers-python given"
        else:
            try:
                proc = subprocess.run(
                    [str(python), "-c", _PROBE], capture_output=True, text=True, timeout=timeout, env=child_env(None)
                )
                if proc.returncode == 0:
                    found = json.loads(proc.stdout.strip().splitlines()[-1])
                else:
                    why = f"{python} failed: {proc.stderr.strip()[-300:]}"
            except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
                why = f"{python} could not be asked for its packages: {exc}"
    for p in peers:
        if p not in PEERS:
            raise ValueError(f"unknown peer {p!r}; valid: {', '.join(PEERS)}")
        if p == "eager":
            out[p] = {"status": "ok", "python": sys.executable, "versions": versions()}
        elif found is None:
            out[p] = {"status": "missing", "why": why, "install": install_command(p)}
        elif not found["have"].get(p):
            pkg = PEER_PACKAGES[p]
            v = found["versions"].get(pkg)
            reason = (
                f"{pkg} is not installed in {python}"
                if v is None
                else f"{pkg} {v} in {python} has no {'HookedTransformer (removed in 4.0)' if p == 'tl' else 'usable module'}"
            )
            out[p] = {"status": "missing", "why": reason, "install": install_command(p), "versions": found["versions"]}
        else:
            out[p] = {"status": "ok", "python": str(python), "versions": found["versions"]}
    return out


# ------------------------------------------------------------------------------------------ processes
def child_env(threads: int | None) -> dict[str, str]:
    """The environment of a fresh process: headlab's source tree first on PYTHONPATH (both venvs run the same
    probe code), no progress bars, offline."""
    env = os.environ.copy()
    src = str(Path(__file__).resolve().parents[2])  # the folder that holds the headlab package
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(TQDM_DISABLE="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def spawn(python: str, spec: dict) -> dict:
    """Run one configuration in a fresh ``python`` process (:mod:`headlab.bench.peers_child`); its result, or
    ``{"error", "stderr"}`` when it failed (an exception, or killed: e.g. out of memory)."""
    with tempfile.TemporaryDirectory(prefix="headlab-peers-") as tmp:
        spec_path, result = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps({**spec, "result": str(result)}))
        proc = subprocess.run(
            [python, "-m", "headlab.bench.peers_child", str(spec_path)],
            capture_output=True,
            text=True,
            env=child_env(spec.get("threads")),
        )
        res = json.loads(result.read_text()) if result.exists() else {}
    if proc.returncode != 0 or "error" in res or not res:
        why = res.get("error") or f"exit status {proc.returncode}" + (" (killed: out of memory?)" if proc.returncode < 0 else "")
        return {"error": why, "stderr": proc.stderr.strip()[-2000:]}
    return res


# ------------------------------------------------------------------------------------------ parity
def stats_parity(peer: Mapping[str, Any], ref: Mapping[str, Any], length: int) -> dict[str, float]:
    """{metric: max |peer − headlab|} over heads; the mean distance divided by the length (it is in tokens)."""
    out = {}
    for m in METRICS:
        a, b = _flat(peer[m]), _flat(ref[m])
        if len(a) != len(b):
            raise ValueError(f"{m}: {len(a)} heads vs headlab's {len(b)}")
        scale = float(length) if m == "distance" else 1.0
        out[m] = max((abs(x - y) / scale for x, y in zip(a, b)), default=0.0)
    return out


def patching_parity(peer: Mapping[str, Any], ref: Mapping[str, Any]) -> dict[str, float]:
    """max |Δ normalised effect|, max |Δ raw metric change| (patched − corrupt) and the clean-corrupt gap (headlab's)."""
    gap = ref["clean"] - ref["corrupt"]
    pgap = peer["clean"] - peer["corrupt"]
    a, b = _flat(peer["raw"]), _flat(ref["raw"])
    if len(a) != len(b):
        raise ValueError(f"{len(a)} heads patched vs headlab's {len(b)}")
    eff = max(abs((x - peer["corrupt"]) / pgap - (y - ref["corrupt"]) / gap) for x, y in zip(a, b))
    raw = max(abs((x - peer["corrupt"]) - (y - ref["corrupt"])) for x, y in zip(a, b))
    return {"effect": eff, "raw_change": raw, "gap": gap}


def parity_ok(task: str, par: Mapping[str, float] | None) -> bool:
    if par is None:
        return False
    if task == "patching":
        key = "effect" if abs(par["gap"]) >= SMALL_GAP else "raw_change"
        return math.isfinite(par[key]) and par[key] <= PARITY_TOL
    return all(math.isfinite(v) and v <= PARITY_TOL for v in par.values())


def _flat(x: Any) -> list[float]:
    if hasattr(x, "tolist"):
        x = x.tolist()
    out: list[float] = []
    for row in x:
        out.extend(float(v) for v in (row if isinstance(row, (list, tuple)) else [row]))
    return out


# ------------------------------------------------------------------------------------------ the run
def model_folder(model: str) -> Path:
    """The local folder of ``model``'s fp32 weights: the folder itself, or an embedded model's converted cache
    (made by :func:`headlab.models.load` on first use)."""
    p = Path(model).expanduser()
    if (p / "config.json").exists():
        return p.resolve()
    from .. import models

    def cached() -> Path | None:
        org = models.origin(model) or {}
        for e in models.cache_entries():
            meta = e["meta"]
            if meta.get("model") == org.get("model") and meta.get("sha256") == org.get("sha256"):
                return Path(e["path"])
        return None

    folder = cached()
    if folder is None:
        m, _ = models.load(model)  # converts into the cache once
        folder = Path(getattr(m.config, "_name_or_path", "") or "")
        del m
        folder = cached() or folder
    if not (folder / "config.json").exists():
        raise ValueError(f"{model!r}: no local folder of weights found; give --model a Hugging Face folder")
    return folder


def _shape(folder: Path) -> tuple[int, int, int]:
    cfg = json.loads((folder / "config.json").read_text())
    L, H = int(cfg["num_hidden_layers"]), int(cfg["num_attention_heads"])
    return L, H, int(cfg.get("num_key_value_heads") or H)


def _weights_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def run(
    folder: str | os.PathLike,
    lengths: Sequence[int],
    repeats: int,
    peers: Sequence[str] = PEERS,
    *,
    peers_python: str | os.PathLike | None = DEFAULT_PEERS_PYTHON,
    threads: int = 0,
    ioi: Mapping[str, Any] | None = None,
    warmup: int = 1,
    limit_bytes: int | None = None,
    ids: Mapping[int, Sequence[int]] | None = None,
    availability: Mapping[str, dict] | None = None,
    spawner: Spawn | None = None,
    tick: Callable[[str], None] | None = None,
) -> dict:
    """Every sample and the summaries (see the module docstring). ``ioi``: ``{"clean", "corrupt", "answer",
    "distractors"}`` (token ids, unpadded) for the patching task (None: capture only). ``ids``: {length: token ids}
    (default: the built-in prose, :func:`headlab.bench.capture.prose_ids`). ``availability`` (default
    :func:`probe_peers`) and ``spawner`` (default :func:`spawn`) are for tests."""
    folder = Path(folder)
    if not lengths or any(not isinstance(n, int) or n < 2 for n in lengths):
        raise ValueError(f"lengths must be ints >= 2, got {list(lengths)!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    bad = [p for p in peers if p not in PEERS]
    if bad or len(set(peers)) != len(peers):
        raise ValueError(f"peers {list(peers)!r}: give distinct names among {', '.join(PEERS)}")
    tick = tick or (lambda msg: None)
    spawner = spawner or (lambda python, spec: spawn(python, spec))
    limit = memory_limit_bytes() if limit_bytes is None else int(limit_bytes)
    L, H, _ = _shape(folder)
    wbytes = _weights_bytes(folder)
    avail = dict(availability) if availability is not None else probe_peers(peers, peers_python)
    python = {"sdpa": sys.executable, "headlab": sys.executable}
    python.update({p: a["python"] for p, a in avail.items() if a["status"] == "ok"})
    if ids is None:
        from transformers import AutoTokenizer

        from .capture import prose_ids

        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        ids = {n: prose_ids(tok, n)[0].tolist() for n in lengths}
    base = {"folder": str(folder), "threads": threads, "warmup": warmup}
    samples: list[dict] = []
    started = time.time()
    load0 = load_average()

    def one(task: str, tool: str, rnd: int, length: int | None, spec: dict) -> dict:
        where = f"{task}{'' if length is None else f' {length} tokens'}"
        tick(f"{where}, round {rnd + 1}/{repeats}: {tool} (fresh process)")
        t0 = time.perf_counter()
        res = spawner(python[tool], {**base, **spec, "task": task, "tool": tool})
        s = {"task": task, "length": length, "round": rnd, "tool": tool, "load_average": load_average()}
        s["process_seconds"] = time.perf_counter() - t0
        if "error" in res:
            s.update(status="failed", error=res["error"], stderr=res.get("stderr", ""))
            tick(f"{where}: {tool} failed: {res['error']}")
        else:
            s.update(status="ok", **{k: v for k, v in res.items() if k not in ("tool", "task", "length")})
            tick(f"{where}, round {rnd + 1}/{repeats}: {tool} {res['seconds']:.2f} s, peak {res['peak_mb']:.0f} MiB")
        samples.append(s)
        return s

    capture: dict[str, dict] = {}
    for n in lengths:
        tools: dict[str, dict] = {"sdpa": {"status": "ran"}, "headlab": {"status": "ran"}}
        for p in peers:
            need = needed_bytes(p, L, H, n, wbytes)
            if avail[p]["status"] != "ok":
                tools[p] = {"status": "missing", "why": avail[p].get("why", ""), "install": avail[p].get("install", "")}
            elif need > limit:
                tools[p] = {
                    "status": "skipped",
                    "needs_gb": gb(need),
                    "maps_gb": gb(maps_bytes(L, H, n)),
                    "limit_gb": gb(limit),
                    "why": f"every layer's maps need {gb(maps_bytes(L, H, n)):.1f} GB (+ weights) > {gb(limit):.1f} GB",
                }
                tick(f"{n} tokens: {p} not run: {tools[p]['why']}")
            else:
                tools[p] = {"status": "ran", "needs_gb": gb(need)}
        run_tools = [t for t in CAPTURE_TOOLS if t in tools and tools[t]["status"] == "ran"]
        got = [one("capture", t, r, n, {"ids": list(ids[n])}) for r in range(repeats) for t in order(run_tools, r)]
        capture[str(n)] = summarize_task("capture", got, tools, n)

    patching = None
    if ioi is not None:
        tools = {"headlab": {"status": "ran"}}
        for p in peers:
            if p not in PATCHING_TOOLS:
                continue
            if avail[p]["status"] != "ok":
                tools[p] = {"status": "missing", "why": avail[p].get("why", ""), "install": avail[p].get("install", "")}
            else:
                tools[p] = {"status": "ran"}
        run_tools = [t for t in PATCHING_TOOLS if t in tools and tools[t]["status"] == "ran"]
        spec = {k: ioi[k] for k in ("clean", "corrupt", "answer", "distractors")}
        got = [one("patching", t, r, None, spec) for r in range(repeats) for t in order(run_tools, r)]
        patching = summarize_task("patching", got, tools, None)
        patching["prompts"] = len(ioi["clean"])
        patching["tokens"] = len(ioi["clean"][0])

    for s in samples:  # the records keep every sample's numbers; the statistics themselves stay in the summaries
        s.pop("stats", None)
        s.pop("raw", None)
    return {
        "config": {
            "model": str(folder),
            "lengths": list(lengths),
            "repeats": repeats,
            "peers": list(peers),
            "threads": threads,
            "warmup": warmup,
            "prompts": None if ioi is None else len(ioi["clean"]),
            "metrics": list(METRICS),
            "parity_tol": PARITY_TOL,
            "limit_gb": gb(limit),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
            "shape": {"layers": L, "heads": H},
        },
        "machine": machine(),
        "versions": versions(),
        "peers": avail,
        "load_average": {"start": load0, "end": load_average()},
        "seconds": time.time() - started,
        "capture": capture,
        "patching": patching,
        "samples": samples,
    }


def _ratio_list(a: list[dict], b: list[dict]) -> list[float]:
    """Per round, seconds of ``a`` / seconds of ``b`` (rounds where both ran)."""
    rb = {s["round"]: s["seconds"] for s in b}
    return [s["seconds"] / rb[s["round"]] for s in a if s["round"] in rb and rb[s["round"]] > 0]


def summarize_task(task: str, got: list[dict], tools: dict[str, dict], length: int | None) -> dict:
    """Per tool: seconds, ratio to SDPA (capture), headlab / tool, peak RSS (median and range), parity against
    headlab's numbers; the best peer (the one headlab is least ahead of, among those with parity) and headlab's
    ratio to it. Mutates ``got`` (adds each sample's parity)."""
    ok = {t: [s for s in got if s["tool"] == t and s["status"] == "ok"] for t in tools}
    ref = ok.get("headlab", [None])[0] if ok.get("headlab") else None
    out: dict[str, Any] = {"tools": {}}
    if task == "capture" and ref is not None:
        out["headlab_stats"] = ref["stats"]
    elif task == "patching" and ref is not None:
        out["headlab_effects"] = {"raw": ref["raw"], "clean": ref["clean"], "corrupt": ref["corrupt"]}
    for s in got:
        if s["status"] != "ok" or s["tool"] in ("sdpa", "headlab") or ref is None:
            continue
        if task == "capture":
            s["parity"] = stats_parity(s["stats"], ref["stats"], int(length or 0))
        else:
            s["parity"] = patching_parity(s, ref)
        s["parity_ok"] = parity_ok(task, s["parity"])
    for t, info in tools.items():
        row = dict(info)
        mine = ok.get(t, [])
        failed = [s for s in got if s["tool"] == t and s["status"] == "failed"]
        if failed:
            row.update(status="failed", error=failed[0]["error"], failed_rounds=len(failed))
        if mine:
            row["seconds"] = spread([s["seconds"] for s in mine])
            row["peak_mb"] = spread([s["peak_mb"] for s in mine])
            if task == "capture":
                row["forward_seconds"] = spread([s["forward_seconds"] for s in mine])
                row["stats_seconds"] = spread([s["stats_seconds"] for s in mine])
                r = _ratio_list(mine, ok.get("sdpa", []))
                if r:
                    row["ratio"], row["ratios"] = spread(r), r
            if t not in ("sdpa", "headlab"):
                r = _ratio_list(ok.get("headlab", []), mine)
                if r:
                    row["headlab_over"], row["headlab_over_ratios"] = spread(r), r
                pars = [s["parity"] for s in mine if s.get("parity") is not None]
                if pars:
                    row["parity"] = {k: max(p[k] for p in pars) for k in pars[0]}
                row["parity_ok"] = bool(pars) and len(pars) == len(mine) and all(s.get("parity_ok") for s in mine)
        out["tools"][t] = row
    peers = {t: r for t, r in out["tools"].items() if t not in ("sdpa", "headlab")}
    counted = {t: r for t, r in peers.items() if r["status"] == "ran" and r.get("parity_ok") and "headlab_over" in r}
    if counted:
        best = max(counted, key=lambda t: counted[t]["headlab_over"]["median"])
        out["best_peer"], out["headlab_vs_best"] = best, counted[best]["headlab_over"]
    else:
        out["best_peer"], out["headlab_vs_best"] = None, None
    return out


# ------------------------------------------------------------------------------------------ the report
def _fmt_spread(s: Mapping[str, float] | None, fmt: str = ".2f", unit: str = "") -> str:
    if not s:
        return "–"
    if s["min"] == s["max"]:
        return f"{s['median']:{fmt}}{unit}"
    return f"{s['median']:{fmt}}{unit} [{s['min']:{fmt}}–{s['max']:{fmt}}]"


def _parity_text(row: Mapping[str, Any], task: str) -> str:
    par = row.get("parity")
    if par is None:
        return "–"
    if task == "patching":
        key = "effect" if abs(par["gap"]) >= SMALL_GAP else "raw_change"
        val = f"{key} {par[key]:.1e}"
    else:
        val = f"{max(par.values()):.1e}"
    return f"{'ok' if row.get('parity_ok') else 'FAILED'} ({val})"


def _note(row: Mapping[str, Any]) -> str:
    st = row["status"]
    if st == "skipped":
        return f"not run: maps need {row['maps_gb']:.1f} GB (limit {row['limit_gb']:.1f} GB)"
    if st == "missing":
        return f"missing: {row.get('why', '')}; install: `{row.get('install', '')}`"
    if st == "failed":
        return f"failed: {row.get('error', '')[:160]}"
    return ""


def table(res: Mapping[str, Any]) -> str:
    c = res["config"]
    la = res.get("load_average") or {}
    start, end = la.get("start"), la.get("end")
    load = " / ".join("?" if x is None else " ".join(f"{v:.1f}" for v in x) for x in (start, end))
    lines = [
        f"{Path(c['model']).name}, fp32, {c['threads'] or 'default'} threads; {c['repeats']} round(s), each configuration in "
        f"its own fresh process per round ({c['warmup']} untimed warm-up call, 1 timed call), alternating order; "
        f"median [range] over rounds; load average at start / end: {load}.",
        "",
        f"### Per-head statistics ({', '.join(c['metrics'])})",
        "",
        "| tokens | tool | time s | × SDPA forward | headlab / tool | peak RSS MiB | parity (max diff) | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, block in res["capture"].items():
        for t, row in block["tools"].items():
            lines.append(
                f"| {n} | {t} | {_fmt_spread(row.get('seconds'))} | {_fmt_spread(row.get('ratio'), unit='x')} | "
                f"{_fmt_spread(row.get('headlab_over'), unit='x')} | {_fmt_spread(row.get('peak_mb'), '.0f')} | "
                f"{_parity_text(row, 'capture')} | {_note(row)} |"
            )
    p = res.get("patching")
    if p:
        lines += [
            "",
            f"### Activation patching of every head ({p['prompts']} IOI prompt pairs of {p['tokens']} tokens)",
            "",
            "| tool | time s | headlab / tool | peak RSS MiB | parity | note |",
            "|---|---|---|---|---|---|",
        ]
        for t, row in p["tools"].items():
            lines.append(
                f"| {t} | {_fmt_spread(row.get('seconds'))} | {_fmt_spread(row.get('headlab_over'), unit='x')} | "
                f"{_fmt_spread(row.get('peak_mb'), '.0f')} | {_parity_text(row, 'patching')} | {_note(row)} |"
            )
    lines += [
        "",
        "Tools: " + "; ".join(f"{t}: {LABELS[t]}" for t in ("sdpa", "headlab", *c["peers"])) + ".",
        f"Parity: max |peer − headlab| <= {c['parity_tol']:g} (mean distance / length; patching: normalised effect, or "
        f"raw metric change where the clean-corrupt gap < {SMALL_GAP}). Peak RSS: the whole process (weights included).",
    ]
    return "\n".join(lines) + "\n"


def plot(res: Mapping[str, Any], path: Path) -> None:
    """Bars: time / plain SDPA forward and peak RSS per tool per length; patching seconds per tool."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    lengths = list(res["capture"])
    tools = ["headlab", *res["config"]["peers"]]
    has_patch = bool(res.get("patching"))
    fig = Figure(figsize=(12 if has_patch else 9, 3.8))
    axes = fig.subplots(1, 3 if has_patch else 2)
    width = 0.8 / max(1, len(tools))
    for ax, key, ylabel in ((axes[0], "ratio", "time / plain SDPA forward"), (axes[1], "peak_mb", "peak RSS (MiB)")):
        for j, t in enumerate(tools):
            for i, n in enumerate(lengths):
                row = res["capture"][n]["tools"].get(t)
                x = i + (j - (len(tools) - 1) / 2) * width
                if row is None:
                    continue
                if row.get(key):
                    s = row[key]
                    ax.bar(x, s["median"], width, color=f"C{j}", label=t if i == 0 else None)
                    ax.errorbar(x, s["median"], [[s["median"] - s["min"]], [s["max"] - s["median"]]], color="k", lw=0.8)
                else:
                    text = {"skipped": f"needs\n{row.get('maps_gb', 0):.0f} GB", "missing": "missing"}.get(row["status"], "–")
                    ax.text(x, 0, text, rotation=90, ha="center", va="bottom", fontsize=6, color=f"C{j}")
        ax.set_xticks(range(len(lengths)), lengths)
        ax.set_xlabel("tokens")
        ax.set_ylabel(ylabel)
    axes[0].axhline(1.0, color="grey", lw=0.8)
    axes[0].legend(fontsize=7)
    axes[0].set_title("per-head statistics: time", fontsize=9)
    axes[1].set_title("per-head statistics: peak memory", fontsize=9)
    if has_patch:
        ax = axes[2]
        prow = res["patching"]["tools"]
        names = [t for t in tools if t in prow]
        for j, t in enumerate(names):
            s = prow[t].get("seconds")
            if s:
                ax.bar(j, s["median"], color=f"C{tools.index(t)}")
                ax.errorbar(j, s["median"], [[s["median"] - s["min"]], [s["max"] - s["median"]]], color="k", lw=0.8)
            else:
                ax.text(j, 0, prow[t]["status"], rotation=90, ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(names)), names, fontsize=7)
        ax.set_ylabel("seconds")
        ax.set_title(f"patching {res['config']['shape']['layers'] * res['config']['shape']['heads']} heads", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write(res: Mapping[str, Any], out: str | os.PathLike, command: str) -> Path:
    """``out``: peers.json (command, config, summaries, every sample), peers.records.jsonl (one line per sample),
    table.md and peers.png, written atomically (nothing is left half-written)."""
    from ..io import atomic_dir, atomic_write_json, atomic_write_text

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")
    doc = {"command": command, **res}
    with atomic_dir(out) as stage:
        atomic_write_json(stage / "peers.json", finite(doc))
        recs = "".join(json.dumps(finite(s), allow_nan=False) + "\n" for s in res["samples"])
        atomic_write_text(stage / "peers.records.jsonl", recs)
        atomic_write_text(stage / "table.md", table(res))
        plot(res, stage / "peers.png")
    return out


def finite(x: Any) -> Any:
    """JSON without NaN or infinities (they become null)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x
