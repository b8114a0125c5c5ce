"""The kvpress side of ``headlab bench kv``: run in kvpress's own venv (``scripts/kvpress_env.sh``), it evaluates
KV-cache presses of NVIDIA's kvpress (github.com/NVIDIA/kvpress) on the items headlab wrote, with kvpress's
text-generation pipeline: the context is prefilled under the press (compressed), then the question is fed and
the answer decoded greedily on the compressed cache (``KVPressTextGenerationPipeline.generate_answer``).

Presses: StreamingLLM (Xiao et al., arXiv 2309.17453), SnapKV (Li et al., arXiv 2404.14469), Knorm (Devoto et
al., arXiv 2406.11430), ExpectedAttention (kvpress, NVIDIA 2025), TOVA (Oren et al., arXiv 2401.06104), AdaKV
(Feng et al., arXiv 2407.11550; head-wise budgets over SnapKV scores), DuoAttention (Xiao et al., arXiv 2410.10819;
kvpress's ``DuoAttentionPress`` with a head-pattern folder given offline: its own loader downloads the patterns
and its on-the-fly scoring downloads a dataset), ``dense`` (no press: the pipeline's own
uncompressed run, a parity check with headlab's dense run) and ``adapter`` (a headlab plan as a press:
``headlab/sparsify/interop/press.py``, loaded by path).

This file imports only torch, transformers and kvpress (headlab is not installed in that venv)::

    python kv_child.py SPEC.json

SPEC: {"folder", "items" (JSON file), "result" (JSON-lines file, appended), "threads", "configs": [{"label",
"press", "fraction" (of the KV pairs kept), "question": "after" | "inside", "duo_pattern" (duo_attention only),
"dataset", "tasks"}], "skip": [[label, item key], ...], "parity_items", "length" (the items' token length),
"adapter": {"path", "spec"} | null}. Every finished item is appended as one line as soon as it is done, so a
stopped run resumes where it was; a press that fails writes an error line and the run goes on.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import resource
import sys
import time
import traceback


def _read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _record(out, rec: dict) -> None:
    out.write(json.dumps(rec) + "\n")
    out.flush()


def _duo_press(folder: str, fraction: float, length: int):
    """kvpress's DuoAttentionPress on a local pattern folder (``full_attention_heads.tsv`` + ``config.json``): the
    share of streaming heads r is set so the kept share at ``length`` keys is ``fraction``:
    (1 - r) + r * (sink + recent) / length = fraction."""
    import os

    import numpy as np
    import torch
    from kvpress import DuoAttentionPress  # pyright: ignore[reportMissingImports]

    alphas = np.clip(np.loadtxt(os.path.join(folder, "full_attention_heads.tsv"), dtype=float, delimiter="\t", ndmin=2), 0, 1)
    cfg = _read_json(os.path.join(folder, "config.json"))
    sink, recent = int(cfg["sink_size"]), int(cfg["recent_size"])
    r = min(1.0, max(0.0, (1.0 - fraction) / max(1e-9, 1.0 - (sink + recent) / length)))

    class OfflineDuoAttentionPress(DuoAttentionPress):
        def post_init_from_model(self, model):  # the same rule as DuoAttentionPress, from the local folder
            self.sink_size, self.recent_size = sink, recent
            n_pruned = round(alphas.size * self.head_compression_ratio)
            self.streaming_mask = torch.zeros(alphas.shape, dtype=torch.bool)
            if n_pruned > 0:
                idx = np.argsort(alphas, axis=None, kind="stable")[:n_pruned]
                self.streaming_mask[np.unravel_index(idx, alphas.shape)] = True

    return OfflineDuoAttentionPress(head_compression_ratio=r)


def _press(name: str, fraction: float, adapter: dict | None, cfg: dict | None = None, length: int = 0):
    """The press ``name`` keeping ``fraction`` of the context's KV pairs (kvpress's ``compression_ratio`` is the
    share it *removes*: 1 - fraction)."""
    import kvpress  # pyright: ignore[reportMissingImports]

    cfg = cfg or {}
    ratio = 1.0 - fraction
    if name == "dense":
        return None
    if name == "adapter":
        if not adapter:
            raise ValueError("press 'adapter' needs the spec's 'adapter': {'path', 'spec'}")
        mod_spec = importlib.util.spec_from_file_location("headlab_press_adapter", adapter["path"])
        if mod_spec is None or mod_spec.loader is None:
            raise ValueError(f"cannot load the press adapter from {adapter['path']}")
        mod = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(mod)
        return mod.HeadPlanPress.from_spec(adapter["spec"])
    simple = {
        "streaming_llm": kvpress.StreamingLLMPress,
        "snapkv": kvpress.SnapKVPress,
        "knorm": kvpress.KnormPress,
        "expected_attention": kvpress.ExpectedAttentionPress,
        "tova": kvpress.TOVAPress,
    }
    if name in simple:
        return simple[name](compression_ratio=ratio)
    if name == "adakv":
        return kvpress.AdaKVPress(press=kvpress.SnapKVPress(compression_ratio=ratio))
    if name == "duo_attention":
        if not cfg.get("duo_pattern"):
            raise ValueError(
                "duo_attention needs a local head-pattern folder ('duo_pattern'): kvpress's DuoAttentionPress "
                "downloads its patterns (and its on-the-fly scoring a dataset), which cannot run offline"
            )
        return _duo_press(cfg["duo_pattern"], fraction, length or 4096)
    raise ValueError(f"unknown press {name!r}")


def _cache_stats(model, cache, n_ctx: int) -> dict:
    """Bytes the cache holds, kept tokens per layer, and the kept fraction counting head-wise masked keys
    (AdaKV and the adapter mask keys instead of removing them: ``module.masked_key_indices``)."""
    layers = list(cache.layers)
    nbytes = sum(int(x.numel() * x.element_size()) for lay in layers for x in (lay.keys, lay.values))
    lengths = [int(lay.keys.shape[2]) for lay in layers]
    heads = int(layers[0].keys.shape[1])
    masked = 0
    for layer in model.model.layers:
        idx = getattr(layer.self_attn, "masked_key_indices", None)
        if idx is not None:
            masked += int(idx[0].numel())
    total = len(layers) * heads * n_ctx
    kept = sum(lengths) * heads - masked
    return {"cache_bytes": nbytes, "kept_tokens": lengths, "masked_keys": masked, "kept_fraction": kept / total}


def _run_item(model, pipe, press, item: dict, question: str) -> dict:
    import torch
    from transformers import DynamicCache

    ids = item[question]
    ctx = torch.tensor([ids["context_ids"]], dtype=torch.long)
    q = torch.tensor([ids["question_ids"]], dtype=torch.long)
    n_ctx = int(ctx.shape[1])
    calls = [0]
    hook = model.register_forward_pre_hook(lambda *a, **k: calls.__setitem__(0, calls[0] + 1))
    try:
        with torch.no_grad():
            for layer in model.model.layers:  # no head-wise mask left over from the previous press
                layer.self_attn.masked_key_indices = None
            cache = DynamicCache()
            t0 = time.perf_counter()
            with press(model) if press is not None else contextlib.nullcontext():
                model.model(input_ids=ctx, past_key_values=cache)  # the pipeline's prefill (no LM head)
            prefill_s = time.perf_counter() - t0
            stats = _cache_stats(model, cache, n_ctx)
            calls[0] = 0
            t0 = time.perf_counter()
            text = pipe.generate_answer(question_ids=q, cache=cache, context_length=n_ctx, max_new_tokens=item["max_new"])
            decode_s = time.perf_counter() - t0
    finally:
        hook.remove()
    return {
        "text": text,
        "prefill_s": prefill_s,
        "decode_s": decode_s,
        "n_new": calls[0],
        "context_tokens": n_ctx,
        "question_tokens": int(q.shape[1]),
        **stats,
    }


def _pipeline_answer(pipe, press, item: dict, question: str) -> str:
    """The same item through the pipeline's public call (text in, text out): the staged run must agree."""
    import torch

    with torch.no_grad():
        if question == "inside":
            res = pipe(
                item["context"] + item["question"],
                answer_prefix=item["answer_prefix"],
                press=press,
                max_new_tokens=item["max_new"],
                max_context_length=10**9,
            )
        else:
            res = pipe(
                item["context"],
                question=item["question"],
                answer_prefix=item["answer_prefix"],
                press=press,
                max_new_tokens=item["max_new"],
                max_context_length=10**9,
            )
    return res["answer"]


def main(spec_path: str) -> int:
    spec = _read_json(spec_path)
    import importlib.metadata as md

    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    import kvpress  # noqa: F401  # pyright: ignore[reportMissingImports]  (patches attention for head-wise masks)
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    items = _read_json(spec["items"])
    skip = {tuple(x) for x in spec.get("skip", [])}
    with open(spec["result"], "a", encoding="utf-8") as out:
        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(spec["folder"], dtype=torch.float32, attn_implementation="sdpa").eval()
        tok = AutoTokenizer.from_pretrained(spec["folder"])
        pipe = pipeline("kv-press-text-generation", model=model, tokenizer=tok, device="cpu")  # pyright: ignore
        versions = {n: md.version(n) for n in ("torch", "transformers", "kvpress")}
        _record(out, {"type": "env", "versions": versions, "python": sys.executable, "load_s": time.perf_counter() - t0})
        for cfg in spec["configs"]:
            label, question = cfg["label"], cfg["question"]
            try:
                press = _press(
                    cfg["press"], float(cfg.get("fraction") or 1.0), spec.get("adapter"), cfg, int(spec.get("length") or 0)
                )
            except Exception as exc:  # noqa: BLE001 -- reported, the other presses still run
                _record(out, {"type": "error", "label": label, "error": f"{type(exc).__name__}: {exc}"})
                continue
            checked = 0
            for item in items:
                if (label, item["key"]) in skip or cfg.get("dataset") not in (None, item["dataset"]):
                    continue
                if cfg.get("tasks") and item["task"] not in cfg["tasks"]:
                    continue
                try:
                    rec = _run_item(model, pipe, press, item, question)
                    if checked < int(spec.get("parity_items", 1)):
                        rec["pipeline_text"] = _pipeline_answer(pipe, press, item, question)
                        rec["pipeline_parity"] = rec["pipeline_text"] == rec["text"]
                        checked += 1
                except Exception as exc:  # noqa: BLE001
                    _record(
                        out,
                        {
                            "type": "error",
                            "label": label,
                            "key": item["key"],
                            "error": f"{type(exc).__name__}: {exc}",
                            "traceback": traceback.format_exc()[-2000:],
                        },
                    )
                    break
                rec.update(
                    type="item",
                    label=label,
                    key=item["key"],
                    press=cfg["press"],
                    fraction=cfg.get("fraction"),
                    question=question,
                    peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                )
                _record(out, rec)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
