"""``moa`` planner: MoA's attention-influence profile and per-KV-head elastic rules (Fu et al., arXiv 2406.14909).

1. Calibration (MoA profiles on the dense model's *own responses* to long inputs): a prompt of
   CPython's pydoc prose (``headlab.data.prose``, never the RULER essays the evaluation uses)
   followed by an instruction about it ("summarise", "repeat the first sentence", ...), inside the
   model's chat template; the dense model continues it greedily for ``response`` tokens. Without a
   tokenizer (or ``data="synthetic"``), seeded random tokens with a copied span stand in. With
   ``calib`` (a :class:`headlab.data.calib.CalibText` or a path) the document is a window of the
   user's own text instead of the pydoc prose.
2. Profile: the loss is the cross-entropy of the model on its own continuation; one backward pass
   through the dense model gives dL/dO per layer, and ``moa.influence`` turns it into the
   first-order loss change of masking every attention entry, summed per query head and key
   distance (sink keys apart). Several lengths (default 1K and 2K), cached on disk.
3. Plan: per KV head (its query heads' influence summed) the rule (alpha, beta) from a candidate
   grid, or full, minimising the profiled loss under the KV budget at ``length``
   (``moa.rules``). Streaming heads are one-head ``moa([[alpha, beta]], sink)`` entries.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ....data.calib import CalibText, as_calib
from ....patterns.headplan import HeadPlan, model_fingerprint, model_info, plan_from_entries
from ....progress import progress_bar
from ..budget import FULL
from ..common import PlanRequest, Progress, as_tuple, check_int, check_ints, check_length, keyword_planner, weights_digest
from .influence import capture, distance_histogram
from .rules import DEFAULT_ALPHAS, DEFAULT_BETAS, FULL_RULE, candidate_rules, check_rules_grid, choose, kept_keys, rule_losses

__all__ = ["MoaRequest", "make_plan", "plan", "profile", "INSTRUCTIONS", "DEFAULT_LENGTHS"]

DEFAULT_LENGTHS = (1024, 2048)
#: instructions appended to the prose; answers draw on the beginning, the middle and the whole text
INSTRUCTIONS = (
    "Repeat the first sentence of the text above.",
    "Summarize the text above in a few sentences.",
    "List the main topics of the text above, in the order they appear.",
    "What does the middle of the text above explain? Answer with details.",
)
_PROTOCOL = "moa-influence/1"


# ---------------------------------------------------------------------------------------------- data
def _prompt_ids(model, tokenizer, n: int, index: int, seed: int, data: str, calib: CalibText | None = None) -> torch.Tensor:
    """(1, n) prompt token ids of calibration item ``index``: prose + instruction, or synthetic tokens.

    ``calib``: the document is a window of its text instead of CPython's pydoc prose (``data`` "prose")."""
    if data == "synthetic":
        vocab = int((getattr(model.config, "text_config", None) or model.config).vocab_size)
        g = torch.Generator().manual_seed(1_000_003 * seed + 7919 * index + n)
        ids = torch.randint(3, vocab, (n,), generator=g)
        span = max(1, n // 8)
        ids[n - span :] = ids[n // 8 : n // 8 + span]  # a copied span: something long-range to attend to
        return ids[None]
    from ....data.prose import haystack

    instr = INSTRUCTIONS[(index + seed) % len(INSTRUCTIONS)]
    marker = "\x00DOC\x00"
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": f"{marker}\n\n{instr}"}], tokenize=False, add_generation_prompt=True
        )
    else:
        text = f"{marker}\n\n{instr}\n"
    pre, post = text.split(marker)
    pre_ids = tokenizer(pre, add_special_tokens=False)["input_ids"]
    post_ids = tokenizer(post, add_special_tokens=False)["input_ids"]
    room = n - len(pre_ids) - len(post_ids)
    if room < 16:
        raise ValueError(f"calibration length {n} leaves {room} tokens of prose after the chat template; use longer lengths")
    if calib is not None:
        return torch.tensor(pre_ids + calib.window_ids(tokenizer, room, 1000 * seed + index) + post_ids, dtype=torch.long)[None]
    doc = tokenizer(haystack(tokenizer, room + 64, seed=1000 * seed + index), add_special_tokens=False)["input_ids"]
    if len(doc) < room:
        raise RuntimeError(f"pydoc prose gave {len(doc)} tokens, need {room}")
    return torch.tensor(pre_ids + doc[:room] + post_ids, dtype=torch.long)[None]


@torch.no_grad()
def _continue(model, ids: torch.Tensor, response: int) -> torch.Tensor:
    """(1, n + response): ``ids`` and the dense model's greedy continuation (EOS suppressed)."""
    gc = model.generation_config
    pad = gc.pad_token_id if gc.pad_token_id is not None else (gc.eos_token_id if gc.eos_token_id is not None else 0)
    if isinstance(pad, list):
        pad = pad[0]
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=response,
        min_new_tokens=response,
        do_sample=False,
        pad_token_id=pad,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    if out.shape[1] != ids.shape[1] + response:
        raise RuntimeError(f"generation gave {out.shape[1] - ids.shape[1]} tokens, expected {response}")
    return out


# ---------------------------------------------------------------------------------------------- profile
def _profile_sequence(model, ids: torch.Tensor, response: int, sink: int, chunk: int | None = None):
    """Influence of one (1, n) sequence whose last ``response`` tokens are the loss targets.

    Returns (hist (layers, H, n) |dL| by key distance, sinks (layers, H) |dL| on keys < sink, loss)."""
    n_layers = model_info(model)["n_layers"]
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        with capture(model) as cap, torch.enable_grad():
            emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
            logits = model(inputs_embeds=emb, logits_to_keep=response + 1, use_cache=False).logits
            loss = torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, -response:])
            loss.backward()
            hists, sinks = [], []
            for layer in range(n_layers):
                r = cap.layers.pop(layer)
                h, s = distance_histogram(
                    r["q"], r["k"], r["v"], r["out"].grad, r["scale"], sink, chunk=chunk, out=r["out"].detach()
                )
                hists.append(h)
                sinks.append(s)
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)
    return torch.stack(hists), torch.stack(sinks), float(loss.detach())


def _weights_digest(model) -> str:
    return weights_digest(model)


def profile(
    model,
    tokenizer,
    *,
    lengths=DEFAULT_LENGTHS,
    items: int = 4,
    seed: int = 0,
    response: int = 64,
    sink: int = 64,
    data: str | None = None,
    progress: Progress | None = None,
    cache_dir=None,
    cache: bool = True,
    chunk: int | None = None,
    calib: CalibText | None = None,
) -> dict:
    """MoA influence profile, cached on disk under ``cache_dir`` (default ``$HEADLAB_CACHE/profiles``).

    Returns {"settings", "hist": {n: (layers, H, n) float64 mean |dL| by key distance},
    "sink": {n: (layers, H)}, "loss": {n: mean self-continuation loss}, "seconds", "cached"}.
    Per-query-head; the same seed and settings give the same profile. ``calib``: the documents are
    windows of its text (settings "data" is "calib", "calib" the sha256 of its file, part of the cache
    key); it must hold at least max(lengths) - response tokens (it is never repeated)."""
    from ....io import atomic_write_bytes
    from ....models import cache_dir as default_cache

    maxpos = model_info(model)["max_positions"]
    lengths = sorted({int(n) for n in (lengths if isinstance(lengths, (list, tuple)) else [lengths])})
    if isinstance(items, bool) or not isinstance(items, int) or items < 1:
        raise ValueError(f"items must be an integer >= 1 (calibration sequences per length), got {items!r}")
    if isinstance(response, bool) or not isinstance(response, int) or response < 1:
        raise ValueError(f"response must be an integer >= 1 (continuation tokens), got {response!r}")
    if isinstance(sink, bool) or not isinstance(sink, int) or sink < 0:
        raise ValueError(f"sink must be an integer >= 0, got {sink!r}")
    for n in lengths:
        if n < response + sink + 16 or (maxpos is not None and n > maxpos):
            raise ValueError(
                f"profile length {n} out of range: valid lengths are {response + sink + 16}.."
                f"{maxpos if maxpos is not None else 'the model context'} (response={response}, sink={sink})"
            )
    if data is None:
        data = "prose" if tokenizer is not None else "synthetic"
    if data not in ("prose", "synthetic"):
        raise ValueError(f"data must be 'prose' (CPython pydoc text) or 'synthetic', got {data!r}")
    if data == "prose" and tokenizer is None:
        raise ValueError("data='prose' needs a tokenizer; pass one or use data='synthetic'")
    calib = as_calib(calib)
    if calib is not None:
        if data == "synthetic":
            raise ValueError("calib gives the calibration text; data='synthetic' uses none: drop one of them")
        n_max = max(lengths) - response
        calib.require(
            tokenizer, n_max, f"method moa (its longest prompt, lengths up to {max(lengths)} minus response {response})"
        )
    settings = {
        "protocol": _PROTOCOL,
        "data": data,
        "lengths": lengths,
        "items": items,
        "seed": int(seed),
        "response": response,
        "sink": sink,
        "instructions": hashlib.sha256("\n".join(INSTRUCTIONS).encode()).hexdigest()[:8] if data == "prose" else None,
    }
    if calib is not None:
        settings.update(data="calib", calib=calib.sha256)
    fp = model_fingerprint(model)
    key = hashlib.sha256(json.dumps({**settings, "weights": _weights_digest(model)}, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else default_cache() / "profiles"
    path = folder / f"moa-{fp}-{key}.pt"
    total = items * len(lengths)
    if cache and path.is_file():
        try:
            got = torch.load(path, weights_only=True)
            if got.get("settings") == settings:
                if progress is not None:
                    progress(total, total, f"MoA profile from cache {path.name}")
                return {
                    **got,
                    "hist": {int(k): v for k, v in got["hist"].items()},
                    "sink": {int(k): v for k, v in got["sink"].items()},
                    "loss": {int(k): v for k, v in got["loss"].items()},
                    "cached": True,
                    "path": str(path),
                }
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed and replaced
            pass
    t0 = time.time()
    with progress_bar("MoA profile", total, quiet=progress is not None) as bar:
        tick = progress or bar.update
        hist, sinks, losses = {}, {}, {}
        done = 0
        for n in lengths:
            acc_h = acc_s = None
            acc_l = 0.0
            for i in range(items):
                tick(done, total, f"MoA profile: {n} tokens, item {i + 1}/{items}")
                ids = _continue(model, _prompt_ids(model, tokenizer, n - response, i, seed, data, calib), response)
                h, s, loss = _profile_sequence(model, ids, response, sink, chunk)
                acc_h = h if acc_h is None else acc_h + h
                acc_s = s if acc_s is None else acc_s + s
                acc_l += loss
                done += 1
            hist[n], sinks[n], losses[n] = acc_h / items, acc_s / items, acc_l / items
        tick(total, total, "MoA profile done")
    result = {
        "settings": settings,
        "fingerprint": fp,
        "hist": hist,
        "sink": sinks,
        "loss": losses,
        "seconds": round(time.time() - t0, 2),
    }
    if cache:
        buf = io.BytesIO()
        torch.save(
            {
                **result,
                "hist": {str(k): v for k, v in hist.items()},
                "sink": {str(k): v for k, v in sinks.items()},
                "loss": {str(k): v for k, v in losses.items()},
            },
            buf,
        )
        atomic_write_bytes(path, buf.getvalue())
    return {**result, "cached": False, "path": str(path) if cache else None}


# ---------------------------------------------------------------------------------------------- plan
def _entry(rule, sink: int) -> dict:
    if tuple(rule) == FULL_RULE:
        return dict(FULL)
    return {"pattern": "moa", "args": {"spans": [[float(rule[0]), float(rule[1])]], "sink": int(sink)}}


@dataclass(frozen=True)
class MoaRequest(PlanRequest):
    """Settings of a MoA plan: ``lengths`` (profiled lengths, >= 1 each; the model's context and
    ``response + sink + 16`` bound them when profiling), ``items`` (>= 1 sequences per length),
    ``response`` (>= 1 continuation tokens the loss is taken on), ``sink`` (>= 0), ``alphas`` /
    ``betas`` (the candidate grid: alphas >= 0, betas in [0, 1); the full rule is always a
    candidate), ``data`` ("prose", "synthetic" or None = prose when there is a tokenizer),
    ``cache`` (reuse / write the on-disk profile), ``chunk`` (query rows per influence block,
    >= 1, or None) and ``calib`` (the documents' text: a :class:`~headlab.data.calib.CalibText` or a
    path; None = CPython's pydoc prose; not with data="synthetic")."""

    lengths: tuple[int, ...] = DEFAULT_LENGTHS
    items: int = 4
    response: int = 64
    sink: int = 64
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    betas: tuple[float, ...] = DEFAULT_BETAS
    data: str | None = None
    cache: bool = True
    chunk: int | None = None
    calib: CalibText | str | Path | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "calib", as_calib(self.calib))
        object.__setattr__(self, "lengths", check_ints("lengths", self.lengths, 1))
        check_int("items", self.items, 1)
        check_int("response", self.response, 1)
        check_int("sink", self.sink, 0)
        object.__setattr__(self, "alphas", as_tuple(self.alphas))
        object.__setattr__(self, "betas", as_tuple(self.betas))
        check_rules_grid(self.alphas, self.betas)
        if self.data not in (None, "prose", "synthetic"):
            raise ValueError(f"data must be 'prose' (CPython pydoc text) or 'synthetic', got {self.data!r}")
        if self.calib is not None and self.data == "synthetic":
            raise ValueError("calib gives the calibration text; data='synthetic' uses none: drop one of them")
        if self.cache not in (True, False):  # 1 / 0 from ``--opt cache=0`` count
            raise ValueError(f"cache must be True or False, got {self.cache!r}")
        object.__setattr__(self, "cache", bool(self.cache))
        if self.chunk is not None:
            check_int("chunk", self.chunk, 1)


def plan(model, tokenizer, request: MoaRequest, *, progress: Progress | None = None, cache_dir=None) -> HeadPlan:
    """A MoA plan for ``model``: per KV head an elastic rule alpha + beta * N (plus ``sink``) or full,
    with kv_fraction <= ``request.budget`` at ``request.length`` tokens."""
    t0 = time.time()
    budget, seed, sink, items, response = request.budget, request.seed, request.sink, request.items, request.response
    length = check_length(model, request.length)
    alphas, betas, lengths = request.alphas, request.betas, request.lengths
    info = model_info(model)
    L, H, Hkv = info["n_layers"], info["n_heads"], info["n_kv_heads"]
    rules = candidate_rules(length, sink, lengths, alphas, betas)
    keys = kept_keys(rules, length, sink)
    if int(keys.min()) > budget * length + 1e-9:
        raise ValueError(
            f"KV budget {budget} is below the cheapest candidate rule's kv_fraction "
            f"{int(keys.min()) / length:.4f} at length {length} (sink {sink}); add smaller alphas/betas"
        )
    prof = profile(
        model,
        tokenizer,
        lengths=lengths,
        items=items,
        seed=seed,
        response=response,
        sink=sink,
        data=request.data,
        progress=progress,
        cache_dir=cache_dir,
        cache=request.cache,
        chunk=request.chunk,
        calib=request.calib,
    )
    # a KV head's loss is the sum over the query heads that share its keys and values
    kv_hists = {n: h.reshape(L, Hkv, H // Hkv, n).sum(2).reshape(L * Hkv, n) for n, h in prof["hist"].items()}
    loss, parts = rule_losses(kv_hists, rules, length)
    pick = choose(loss.numpy(), keys, budget, length)
    entries = [[_entry(rules[int(pick[li * Hkv + h])], sink) for h in range(Hkv)] for li in range(L)]
    narrowest = loss[:, 0].reshape(L, Hkv)  # loss under the cheapest band: how much a head needs its span
    data = prof["settings"]["data"]
    calibration = {
        "data": (
            "pydoc prose (CPython pydoc_data.topics) + instruction, target = the model's own greedy continuation"
            if data == "prose"
            else f"user text ({request.calib.path}) + instruction, target = the model's own greedy continuation"
            if data == "calib" and request.calib is not None
            else "synthetic random tokens with a copied span, target = the model's own greedy continuation"
        ),
        **({"source": request.calib.source(tokenizer)} if request.calib is not None else {}),
        "lengths": prof["settings"]["lengths"],
        "items": items,
        "response": response,
        "seed": seed,
        "self_loss": {str(k): round(v, 4) for k, v in prof["loss"].items()},
    }
    options = {
        "sink": sink,
        "alphas": list(alphas),
        "betas": list(betas),
        "candidates": len(rules),
        "objective": round(float(loss[torch.arange(L * Hkv), torch.as_tensor(pick)].sum()), 8),
        "profile_seconds": prof["seconds"],
        "profile_cached": prof["cached"],
        "relative_weight": [round(float(x), 4) for x in parts["relative"]],
        "scores_are": "normalised profiled loss of each KV head under the narrowest candidate band",
    }
    return plan_from_entries(
        entries,
        model,
        length=length,
        method="moa",
        budget=budget,
        seed=seed,
        granularity="kv_head",
        calibration=calibration,
        scores=narrowest.tolist(),
        seconds=round(time.time() - t0, 2),
        model_name=request.model_name,
        options=options,
    )


make_plan = keyword_planner(
    plan,
    MoaRequest,
    "make_plan",
    """A MoA plan for ``model``: per KV head an elastic rule alpha + beta * N (plus ``sink``) or full,
    with kv_fraction <= ``budget`` at ``length`` tokens; keywords: the fields of :class:`MoaRequest`.

    Options: lengths (profiled lengths), items (sequences per length),
    response (continuation tokens the loss is taken on), sink, alphas / betas (the candidate
    grid; the full rule is always a candidate), data ("prose" or "synthetic"), cache (reuse /
    write the on-disk profile), chunk (query rows per influence block), model_name, calib (the
    user's text replacing the pydoc prose: a path or a :class:`~headlab.data.calib.CalibText`).""",
)
