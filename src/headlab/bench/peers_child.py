"""What one fresh process of ``headlab bench peers`` runs: one tool, one task, one length.

``python -m headlab.bench.peers_child SPEC.json`` loads the model folder named in the spec (fp32 safetensors,
the same weights for every tool), sets the tool up (untimed), makes ``warmup`` untimed calls, then one timed
call, and writes ``SPEC["result"]`` (JSON, atomically): the seconds (wall and process CPU), the peak resident
set size of the process (``VmHWM``, weights included) and of the calls alone (peak reset after the set-up where
Linux allows it), and what the call computed — per-head statistics (``capture``) or head-patching effects
(``patching``) — so that the parent checks them against headlab's before it counts the time.

Tools (``capture``): ``sdpa`` (a plain forward of the base model with transformers' SDPA attention: the
baseline), ``headlab`` (the same forward inside ``attach(model, probes=METRICS)``: streaming probes, no maps),
``eager`` (transformers' eager attention with ``output_attentions=True``), ``tl`` (TransformerLens'
``HookedTransformer`` built from the same HF model, ``run_with_cache`` of every ``hook_pattern``), ``tl-bridge``
(TransformerLens' ``TransformerBridge`` around the same HF model, the same cache) and ``nnsight`` (nnsight's
wrapper around the same HF model, every layer's attention weights ``.save()``d). Every tool stops before the
vocabulary projection (``stop_at_layer``, ``tracer.stop()`` after the final norm): the statistics need no logits.
The peers' statistics come from their maps through headlab's own probe formulas (:class:`MapStats`).

Tools (``patching``): ``headlab`` (:func:`headlab.measure.patching.head_effects`), ``tl`` / ``tl-bridge``
(TransformerLens' ``patching.get_act_patch_attn_head_out_all_pos``: one forward per head, its ``hook_z``
replaced by the clean run's) and ``nnsight`` (one trace per head, the head's slice of the input of ``o_proj``
replaced by the clean run's). Metric: the mean logit difference of the answer over the distractors at the last
token (the IOI metric of :mod:`headlab.circuits.task`).

This module runs in headlab's venv and in the peers' venv (where TransformerLens and nnsight live); it imports
them only inside the tool that needs them.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

#: the per-head statistics every tool computes (headlab's probes of the same names)
METRICS = ("sink", "entropy", "prev_token", "distance")
CAPTURE_TOOLS = ("sdpa", "headlab", "eager", "tl", "tl-bridge", "nnsight")
PATCHING_TOOLS = ("headlab", "tl", "tl-bridge", "nnsight")
#: the tools that need the peers' venv (TransformerLens, nnsight); the others run in headlab's
PEER_PACKAGES = {"tl": "transformer-lens", "tl-bridge": "transformer-lens", "nnsight": "nnsight"}


# ------------------------------------------------------------------------------------------ statistics from maps
class MapStats:
    """Per-head statistics from full attention maps, by headlab's own formulas: each layer's map goes through the
    probes' ``update`` (the chunked path of the engine, which the streaming fast path is tested against), query
    chunk by query chunk. Maps: (B, H, T, T) weights of causal self-attention over unpadded rows."""

    def __init__(self, n_layers: int, n_heads: int, n_kv_heads: int, metrics: Sequence[str] = METRICS, chunk: int = 512):
        from ..probes import REGISTRY

        if n_layers < 1 or n_heads < 1 or n_kv_heads < 1 or n_heads % n_kv_heads:
            raise ValueError(
                f"need n_layers, n_heads >= 1 and n_heads a multiple of n_kv_heads, got {n_layers, n_heads, n_kv_heads}"
            )
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.n_layers, self.n_heads, self.n_kv_heads, self.chunk = n_layers, n_heads, n_kv_heads, chunk
        self.probes = {m: REGISTRY.get(m)() for m in metrics}
        self.seen: set[int] = set()

    def add(self, layer: int, a: torch.Tensor) -> None:
        """Accumulate layer ``layer``'s map ``a`` (B, H, T, T)."""
        from ..engine.context import AttnContext

        if a.dim() != 4 or a.shape[1] != self.n_heads or a.shape[2] != a.shape[3]:
            raise ValueError(f"layer {layer}: expected a (B, {self.n_heads}, T, T) map, got {tuple(a.shape)}")
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer {layer} is outside 0..{self.n_layers - 1}")
        B, _, T, _ = a.shape
        pos = torch.arange(T, device=a.device).expand(B, T)
        for q0 in range(0, T, self.chunk):
            qi = torch.arange(q0, min(T, q0 + self.chunk), device=a.device)
            ctx = AttnContext(layer, self.n_layers, self.n_heads, self.n_kv_heads, True, pos, pos, q_index=qi)
            part = a[:, :, q0 : q0 + len(qi)]
            for p in self.probes.values():
                p.update(part, ctx)
        self.seen.add(layer)

    def result(self) -> dict[str, torch.Tensor]:
        """{metric: (layers, heads) float32}; every layer must have been added."""
        missing = sorted(set(range(self.n_layers)) - self.seen)
        if missing:
            raise RuntimeError(f"no attention map was added for layers {missing}")
        return {m: p.result() for m, p in self.probes.items()}


def map_stats(maps: Iterable[torch.Tensor], n_kv_heads: int, metrics: Sequence[str] = METRICS) -> dict[str, torch.Tensor]:
    """{metric: (layers, heads)} from one (B, H, T, T) map per layer, in layer order (:class:`MapStats`)."""
    maps = list(maps)
    if not maps:
        raise ValueError("no attention maps")
    acc = MapStats(len(maps), maps[0].shape[1], n_kv_heads, metrics)
    for layer, a in enumerate(maps):
        acc.add(layer, a)
    return acc.result()


# ------------------------------------------------------------------------------------------ process facts
def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_mb() -> tuple[float, str]:
    """(peak resident set size of this process in MiB, how it was read)."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024, "VmHWM"
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (kb / 1024 / 1024 if sys.platform == "darwin" else kb / 1024), "ru_maxrss"


def rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def package_versions(names: Iterable[str] = ("torch", "transformers", "transformer-lens", "nnsight", "headlab")) -> dict:
    import importlib.metadata as md

    out = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


# ------------------------------------------------------------------------------------------ model and tools
def load_hf(folder: str, attn: str):
    """The causal LM in ``folder`` (fp32, eval mode, attention implementation ``attn``) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation=attn, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model.eval(), tok


def _shape(model) -> tuple[int, int, int]:
    c = model.config
    return (
        int(c.num_hidden_layers),
        int(c.num_attention_heads),
        int(getattr(c, "num_key_value_heads", None) or c.num_attention_heads),
    )


def hooked_transformer(model, tok, folder: str):
    """TransformerLens' ``HookedTransformer`` with the HF model's weights, unprocessed (no LayerNorm folding, no
    centring: the same numbers as the HF model). TransformerLens accepts a local folder only among its official
    names, so the folder is added to them for this process."""
    import transformer_lens.loading_from_pretrained as loading  # pyright: ignore[reportMissingImports]
    from transformer_lens import HookedTransformer  # pyright: ignore[reportMissingImports]

    if folder not in loading.OFFICIAL_MODEL_NAMES:
        loading.OFFICIAL_MODEL_NAMES.append(folder)
    return HookedTransformer.from_pretrained_no_processing(
        folder, hf_model=model, tokenizer=tok, dtype=torch.float32, device="cpu", default_prepend_bos=False
    ).eval()


def transformer_bridge(model, tok, folder: str):
    """TransformerLens' ``TransformerBridge`` around the HF model (eager attention, raw HF weights)."""
    try:
        from transformer_lens.model_bridge import TransformerBridge  # pyright: ignore[reportMissingImports]
    except ImportError:  # TransformerLens 4 exports it at the top level too
        from transformer_lens import TransformerBridge  # type: ignore[no-redef]  # pyright: ignore[reportMissingImports]

    return TransformerBridge.boot_transformers(folder, hf_model=model, tokenizer=tok, device="cpu", dtype=torch.float32)


def nnsight_model(model, tok):
    """nnsight's wrapper around the HF model: ``TransformersModel`` (nnsight >= 0.8), else ``LanguageModel``."""
    import nnsight  # pyright: ignore[reportMissingImports]

    cls = getattr(nnsight, "TransformersModel", None)
    if cls is not None:
        return cls(model, tokenizer=tok, task="text-generation")
    return nnsight.LanguageModel(model, tokenizer=tok)


def _pattern_name(name: str) -> bool:
    return name.endswith("attn.hook_pattern")


def capture_call(tool: str, folder: str, ids: torch.Tensor) -> tuple[Callable[[], dict], dict]:
    """(call, facts): ``call()`` runs the tool once on ``ids`` (1, T) and returns ``{"forward_s", "stats_s",
    "stats"}`` (``stats``: {metric: (layers, heads)}, None for ``sdpa``)."""
    attn = "sdpa" if tool in ("sdpa", "headlab") else "eager"
    model, tok = load_hf(folder, attn)
    L, H, Hkv = _shape(model)
    base = model.model
    facts: dict[str, Any] = {"attn_implementation": attn}

    def timed_stats(forward: Callable[[], Iterable[torch.Tensor]]) -> dict:
        t0 = time.perf_counter()
        maps = forward()
        t1 = time.perf_counter()
        stats = map_stats(maps, Hkv)
        return {"forward_s": t1 - t0, "stats_s": time.perf_counter() - t1, "stats": stats}

    if tool == "sdpa":

        def call() -> dict:
            t0 = time.perf_counter()
            base(input_ids=ids, use_cache=False)
            return {"forward_s": time.perf_counter() - t0, "stats_s": 0.0, "stats": None}

    elif tool == "headlab":
        from ..engine.hf import attach

        def call() -> dict:
            t0 = time.perf_counter()
            with attach(model, probes=list(METRICS)) as run:  # the attach set-up is timed too
                base(input_ids=ids, use_cache=False)
            got = run.stats()
            stats = {m: got[m] for m in METRICS}
            return {"forward_s": time.perf_counter() - t0, "stats_s": 0.0, "stats": stats}

    elif tool == "eager":

        def call() -> dict:
            return timed_stats(lambda: base(input_ids=ids, use_cache=False, output_attentions=True).attentions)

    elif tool == "tl":
        ht = hooked_transformer(model, tok, folder)
        del model, base
        gc.collect()
        facts["class"] = "HookedTransformer (from_pretrained_no_processing)"

        def call() -> dict:
            def fwd():
                _, cache = ht.run_with_cache(ids, names_filter=_pattern_name, stop_at_layer=L)
                return [cache[f"blocks.{i}.attn.hook_pattern"] for i in range(L)]

            return timed_stats(fwd)

    elif tool == "tl-bridge":
        br = transformer_bridge(model, tok, folder)
        facts["class"] = type(br).__name__

        def call() -> dict:
            def fwd():
                _, cache = br.run_with_cache(ids, names_filter=_pattern_name, stop_at_layer=L)
                return [cache[f"blocks.{i}.attn.hook_pattern"] for i in range(L)]

            return timed_stats(fwd)

    elif tool == "nnsight":
        lm = nnsight_model(model, tok)
        facts["class"] = type(lm).__name__

        def call() -> dict:
            def fwd():
                saved = []
                with lm.trace(ids) as tracer:
                    for i in range(L):
                        saved.append(lm.model.layers[i].self_attn.output[1].save())
                    lm.model.norm.output.save()
                    tracer.stop()  # no vocabulary projection, as for every other tool
                return saved

            return timed_stats(fwd)

    else:
        raise ValueError(f"capture tool {tool!r}; valid: {', '.join(CAPTURE_TOOLS)}")
    return call, facts


# ------------------------------------------------------------------------------------------ patching
def logit_diff_metric(answer: torch.Tensor, distractors: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Mean over prompts of logit(answer) − mean logit(distractors), on (prompts, vocab) logits of the last token
    (``Task.metric`` of :mod:`headlab.circuits.task`)."""

    def metric(logits: torch.Tensor) -> torch.Tensor:
        ar = torch.arange(logits.shape[0])
        return (logits[ar, answer] - logits[ar[:, None], distractors].mean(-1)).mean()

    return metric


def patching_call(tool: str, folder: str, spec: dict) -> tuple[Callable[[], dict], Callable[[], None], dict]:
    """(call, warm-up, facts): ``call()`` patches every head and returns ``{"raw" (layers, heads) metric of each
    patched run, "clean", "corrupt"}``."""
    clean = torch.tensor(spec["clean"], dtype=torch.long)
    corrupt = torch.tensor(spec["corrupt"], dtype=torch.long)
    metric = logit_diff_metric(torch.tensor(spec["answer"]), torch.tensor(spec["distractors"]))
    attn = "sdpa" if tool == "headlab" else "eager"
    model, tok = load_hf(folder, attn)
    L, H, _ = _shape(model)
    facts: dict[str, Any] = {"attn_implementation": attn, "prompts": int(clean.shape[0]), "tokens": int(clean.shape[1])}

    if tool == "headlab":
        from ..measure.patching import Effects, head_effects

        def call() -> dict:
            e = head_effects(model, clean, corrupt, metric, full=True)
            assert isinstance(e, Effects)
            return {"raw": e.raw.float(), "clean": e.clean, "corrupt": e.corrupt}

        def warm() -> None:
            head_effects(model, clean, corrupt, metric, sites="L0")

    elif tool in ("tl", "tl-bridge"):
        from transformer_lens import patching as tl_patching  # pyright: ignore[reportMissingImports]

        if tool == "tl":
            tl = hooked_transformer(model, tok, folder)
            del model
            gc.collect()
        else:
            tl = transformer_bridge(model, tok, folder)
        facts["class"] = type(tl).__name__

        def last(logits: torch.Tensor) -> torch.Tensor:
            return metric(logits[:, -1].float())

        def call() -> dict:
            clean_logits, cache = tl.run_with_cache(clean, names_filter=lambda n: n.endswith("attn.hook_z"))
            mc = float(last(clean_logits))
            mk = float(last(tl(corrupt)))
            raw = tl_patching.get_act_patch_attn_head_out_all_pos(tl, corrupt, cache, last)
            return {"raw": raw.float(), "clean": mc, "corrupt": mk}

        def warm() -> None:
            tl.run_with_cache(clean, names_filter=lambda n: n.endswith("attn.hook_z"))
            tl(corrupt)

    elif tool == "nnsight":
        lm = nnsight_model(model, tok)
        facts["class"] = type(lm).__name__
        d = int(model.config.hidden_size) // H if getattr(model.config, "head_dim", None) is None else int(model.config.head_dim)

        def run_clean() -> tuple[list[torch.Tensor], float]:
            zs = []
            with lm.trace(clean):
                for i in range(L):
                    zs.append(lm.model.layers[i].self_attn.o_proj.input.save())
                out = lm.lm_head.output[:, -1].save()
            return zs, float(metric(out.float()))

        def call() -> dict:
            zs, mc = run_clean()
            with lm.trace(corrupt):
                out = lm.lm_head.output[:, -1].save()
            mk = float(metric(out.float()))
            raw = torch.zeros(L, H)
            for i in range(L):
                for h in range(H):
                    with lm.trace(corrupt):
                        lm.model.layers[i].self_attn.o_proj.input[:, :, h * d : (h + 1) * d] = zs[i][:, :, h * d : (h + 1) * d]
                        out = lm.lm_head.output[:, -1].save()
                    raw[i, h] = float(metric(out.float()))
            return {"raw": raw, "clean": mc, "corrupt": mk}

        def warm() -> None:
            run_clean()

    else:
        raise ValueError(f"patching tool {tool!r}; valid: {', '.join(PATCHING_TOOLS)}")
    return call, warm, facts


# ------------------------------------------------------------------------------------------ the process
def run(spec: dict) -> dict:
    """Run one configuration (the spec a parent wrote) and return its result (see the module docstring)."""
    t_start = time.perf_counter()
    threads = int(spec.get("threads") or 0)
    if threads:
        torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    tool, task, folder = spec["tool"], spec["task"], spec["folder"]
    warmup = int(spec.get("warmup", 1))
    if task == "capture":
        ids = torch.tensor(spec["ids"], dtype=torch.long)[None]
        call, facts = capture_call(tool, folder, ids)
        warm = call
    elif task == "patching":
        call, warm, facts = patching_call(tool, folder, spec)
    else:
        raise ValueError(f"task {task!r}; valid: capture, patching")
    gc.collect()
    load_s = time.perf_counter() - t_start
    after_load = rss_mb()
    reset = reset_peak()
    for _ in range(warmup):
        warm()
    c0, w0 = time.process_time(), time.perf_counter()
    out = call()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    run_peak = peak_mb()[0] if reset else None
    res: dict[str, Any] = {
        "tool": tool,
        "task": task,
        "seconds": wall,
        "cpu_seconds": cpu,
        "load_seconds": load_s,
        "after_load_mb": after_load,
        "run_peak_mb": run_peak,
        "threads": torch.get_num_threads(),
        "facts": facts,
        "versions": package_versions(),
        "python": sys.executable,
    }
    if task == "capture":
        res["forward_seconds"] = out["forward_s"]
        res["stats_seconds"] = out["stats_s"]
        res["stats"] = None if out["stats"] is None else {m: v.tolist() for m, v in out["stats"].items()}
        res["length"] = int(ids.shape[1])
    else:
        res["raw"] = out["raw"].tolist()
        res["clean"], res["corrupt"] = float(out["clean"]), float(out["corrupt"])
    del out
    gc.collect()
    res["peak_mb"], res["peak_method"] = peak_mb()  # the whole process: load, set-up, warm-up and the timed call
    return res


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m headlab.bench.peers_child SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    dest = Path(spec["result"])
    try:
        res = run(spec)
        code = 0
    except Exception as exc:  # the parent reports it; the traceback goes to stderr
        traceback.print_exc()
        res = {"tool": spec.get("tool"), "task": spec.get("task"), "error": f"{type(exc).__name__}: {exc}"[:2000]}
        code = 1
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(json.dumps(res))
    os.replace(tmp, dest)
    return code


if __name__ == "__main__":
    sys.exit(main())
