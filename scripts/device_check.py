"""Device check: headlab on an accelerator, in one short run that writes one JSON.

On a CUDA machine:

1. ``head_stats`` of SmolLM2-135M at its full 8192-token context in float32 and in bfloat16, the
   metrics compared against a stated tolerance (``BF16_TOL``), peak GPU memory and seconds of each;
2. ``attach`` + ``generate``: greedy tokens with probes attached equal the tokens without, and the
   probes saw the decode steps;
3. the sliding-window pattern (``window(W)``) at 32768 tokens on random q/k/v: FlexAttention (the
   kernels' ``flex`` backend) against dense SDPA with the full boolean mask (``dense``), max |diff|,
   seconds and peak memory of each.

Without CUDA (or with ``--cpu``) the same three checks run at tiny sizes on a tiny random Llama
(from its config, no download) and uncompiled FlexAttention, so that CI exercises the script.

    python scripts/device_check.py --out device_check.json          # CUDA when present
    python scripts/device_check.py --cpu --out /tmp/device_check.json

Exit status 1 when a check fails (the JSON says which).
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import sys
import time
from pathlib import Path

import torch

import headlab
from headlab.engine.hf import attach
from headlab.io import atomic_write_json
from headlab.measure.stats import head_stats
from headlab.models import DEFAULT_MODEL

METRICS = ("sink", "entropy", "prev_token", "distance")
#: bf16 vs fp32 tolerance (docs/devices.md; tests/test_devices.py uses the same): sink and prev_token
#: within 0.02 absolute, entropy within 2 % of fp32 per head, distance within 2 % of its fp32 mean
BF16_TOL = {"sink": 0.02, "prev_token": 0.02, "entropy_rel": 0.02, "distance_of_mean": 0.02}
#: FlexAttention vs dense SDPA, max |diff| of the outputs (random unit-variance inputs)
ATTN_TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak_reset(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def _peak_mib(dev: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if dev.type == "cuda" else None


def _timed(fn, dev: torch.device):
    _peak_reset(dev)
    _sync(dev)
    t0 = time.perf_counter()
    out = fn()
    _sync(dev)
    return out, round(time.perf_counter() - t0, 3), _peak_mib(dev)


def compare_stats(f32: dict, b16: dict) -> dict:
    """Per metric: max |diff|, the tolerance, and whether it holds (``BF16_TOL``)."""
    out = {}
    for m in METRICS:
        a, b = f32[m].double(), b16[m].double()
        diff = float((b - a).abs().max())
        if m == "entropy":
            value, tol = float(((b - a) / a).abs().max()), BF16_TOL["entropy_rel"]
            kind = "max relative"
        elif m == "distance":
            value, tol = diff / float(a.mean()), BF16_TOL["distance_of_mean"]
            kind = "max |diff| / fp32 mean"
        else:
            value, tol = diff, BF16_TOL[m]
            kind = "max |diff|"
        out[m] = {
            "max_abs_diff": diff,
            "fp32_mean": float(a.mean()),
            kind: value,
            "tolerance": tol,
            "ok": bool(value < tol) and math.isfinite(value),
        }
    return out


def check_head_stats(model32, ids: torch.Tensor, dev: torch.device) -> dict:
    """head_stats in float32 and bfloat16 (the same weights cast), compared."""
    res: dict = {"tokens": int(ids.shape[1])}
    st = {}
    for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        m = model32 if dt == torch.float32 else copy.deepcopy(model32).to(dt)
        st[name], sec, peak = _timed(lambda m=m: head_stats(m, ids.to(dev), METRICS), dev)
        res[name] = {"seconds": sec, "peak_gpu_mib": peak}
        if m is not model32:
            del m
    res["compare"] = compare_stats(st["float32"], st["bfloat16"])
    res["ok"] = all(c["ok"] for c in res["compare"].values())
    return res


def check_generate(model, prompt: torch.Tensor, dev: torch.device, new_tokens: int) -> dict:
    """Greedy generation with probes attached equals generation without."""
    kw = {"max_new_tokens": new_tokens, "do_sample": False, "min_new_tokens": new_tokens}
    prompt = prompt.to(dev)
    with torch.no_grad():
        plain, sec_plain, _ = _timed(lambda: model.generate(prompt, attention_mask=torch.ones_like(prompt), **kw), dev)
        with attach(model, probes=["sink", "entropy"]) as run:
            probed, sec_probed, peak = _timed(lambda: model.generate(prompt, attention_mask=torch.ones_like(prompt), **kw), dev)
    stats = run.stats()
    same = bool(torch.equal(plain.cpu(), probed.cpu()))
    finite = all(bool(torch.isfinite(v).all()) for v in stats.values())
    return {
        "prompt_tokens": int(prompt.shape[1]),
        "new_tokens": new_tokens,
        "same_tokens": same,
        "attention_calls": run.calls,
        "stats_finite": finite,
        "seconds_plain": sec_plain,
        "seconds_attached": sec_probed,
        "peak_gpu_mib": peak,
        "ok": same and finite and run.calls > 0,
    }


def _flex_uncompiled(q, k, v, pattern, scale):
    """torch's FlexAttention without torch.compile (CPU fallback: compiling takes tens of seconds)."""
    from torch.nn.attention.flex_attention import flex_attention

    from headlab.kernels.flex import block_mask

    bm = block_mask(pattern, q.shape[2], k.shape[2], q.shape[1], k.shape[1], True, device=q.device)
    return flex_attention(q, k, v, block_mask=bm, scale=scale, enable_gqa=k.shape[1] != q.shape[1])


def check_window(T: int, H: int, Hkv: int, d: int, W: int, dev: torch.device, dtype: torch.dtype) -> dict:
    """window(W) on random q/k/v (1, H, T, d): FlexAttention vs dense SDPA with the full mask."""
    from headlab.kernels import sparse_attend
    from headlab.patterns import window

    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(1, h, T, d, generator=g).to(dev, dtype) for h in (H, Hkv, Hkv))
    scale = 1.0 / math.sqrt(d)
    res: dict = {"tokens": T, "heads": H, "kv_heads": Hkv, "head_dim": d, "window": W, "dtype": str(dtype)}
    if dev.type == "cuda":
        sparse_attend(q, k, v, window(W), scale=scale, backend="flex")  # compile once, not timed
        flex, sec_f, peak_f = _timed(lambda: sparse_attend(q, k, v, window(W), scale=scale, backend="flex"), dev)
        res["flex_backend"] = "torch.compile(flex_attention)"
    else:
        flex, sec_f, peak_f = _timed(lambda: _flex_uncompiled(q, k, v, window(W), scale), dev)
        res["flex_backend"] = "flex_attention (uncompiled)"
    dense, sec_d, peak_d = _timed(lambda: sparse_attend(q, k, v, window(W), scale=scale, backend="dense"), dev)
    diff = float((flex.float() - dense.float()).abs().max())
    res.update(
        {
            "flex": {"seconds": sec_f, "peak_gpu_mib": peak_f},
            "dense_sdpa": {"seconds": sec_d, "peak_gpu_mib": peak_d},
            "max_abs_diff": diff,
            "tolerance": ATTN_TOL[dtype],
            "ok": diff < ATTN_TOL[dtype],
        }
    )
    return res


def tiny_llama():
    """A tiny random Llama (2 layers, 3 query heads on 1 KV head, head dim 40) and no tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=101,
        hidden_size=120,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=3,
        num_key_value_heads=1,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(cfg).eval()


def run(cpu: bool, length: int | None, window_tokens: int | None) -> dict:
    cuda = torch.cuda.is_available() and not cpu
    dev = torch.device("cuda" if cuda else "cpu")
    out: dict = {
        "mode": "cuda" if cuda else "cpu-fallback",
        "headlab": headlab.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(dev) if cuda else platform.processor() or "cpu",
    }
    t0 = time.perf_counter()
    if cuda:
        model, tok = headlab.load(DEFAULT_MODEL, device="cuda", dtype="float32")
        from headlab.data import prose

        n = length or int(model.config.max_position_embeddings)
        ids = tok(prose.haystack(tok, n + 64), return_tensors="pt")["input_ids"][:, :n]
        if ids.shape[1] < n:  # repeat the text up to the full context
            ids = ids.repeat(1, math.ceil(n / ids.shape[1]))[:, :n]
        out["model"] = DEFAULT_MODEL
        out["head_stats"] = check_head_stats(model, ids, dev)
        out["generate"] = check_generate(model, ids[:, :256], dev, new_tokens=32)
        out["window"] = check_window(window_tokens or 32768, 9, 3, 64, 1024, dev, torch.bfloat16)
    else:
        model = tiny_llama()
        n = length or 96
        ids = torch.randint(0, 101, (1, n), generator=torch.Generator().manual_seed(0))
        out["model"] = "tiny random Llama (2 layers, 3 heads, 1 KV head, head dim 40)"
        out["head_stats"] = check_head_stats(model, ids, dev)
        out["generate"] = check_generate(model, ids[:, :16], dev, new_tokens=8)
        out["window"] = check_window(window_tokens or 256, 3, 1, 40, 32, dev, torch.float32)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["ok"] = all(out[k]["ok"] for k in ("head_stats", "generate", "window"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("device_check.json"), help="the JSON to write")
    ap.add_argument("--cpu", action="store_true", help="run the tiny CPU fallback even where CUDA is present")
    ap.add_argument("--length", type=int, default=None, help="head_stats tokens (default: 8192 on CUDA, 96 on CPU)")
    ap.add_argument("--window-tokens", type=int, default=None, help="window check tokens (default: 32768 on CUDA, 256 on CPU)")
    args = ap.parse_args(argv)
    for name, val in (("--length", args.length), ("--window-tokens", args.window_tokens)):
        if val is not None and val < 16:
            ap.error(f"{name} must be >= 16, got {val}")
    res = run(args.cpu, args.length, args.window_tokens)
    atomic_write_json(args.out, res)
    hs = res["head_stats"]["compare"]
    print(
        f"{res['mode']}: head_stats bf16 vs fp32 at {res['head_stats']['tokens']} tokens: "
        + ", ".join(f"{m} {'ok' if c['ok'] else 'FAIL'} ({c['max_abs_diff']:.3g})" for m, c in hs.items())
    )
    print(
        f"generate with probes attached: {'same tokens' if res['generate']['same_tokens'] else 'DIFFERENT tokens'}; "
        f"window({res['window']['window']}) at {res['window']['tokens']} tokens: flex vs dense max |diff| "
        f"{res['window']['max_abs_diff']:.3g} ({'ok' if res['window']['ok'] else 'FAIL'})"
    )
    print(f"wrote {args.out} ({res['seconds']} s); all ok: {res['ok']}")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
