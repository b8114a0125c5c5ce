"""Attention vs attribution: rollout, attention x gradient, Captum saliency, agreement metrics, the driver
and the CLI's input checks (tiny random Llama; one SmolLM2 item under ``-m model``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

from headlab.measure.agreement import agreement, top_k
from headlab.measure.attn_grad import attention_grad, attn_grad_saliency, target_logprob
from headlab.measure.attribution import Prompt, attribute, prompts, summarize
from headlab.measure.attribution_report import write
from headlab.measure.rollout import residual_maps, rollout_last, rollout_reference
from headlab.measure.saliency import logprob_fn, token_saliency


def _causal_maps(L: int, T: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(L, T, T, generator=g).masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return s.softmax(-1)


def _ids(T: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 100, (1, T), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ rollout
@pytest.mark.parametrize(("L", "T"), [(1, 2), (5, 63), (30, 17)])
def test_rollout_fast_matches_full_product(L, T):
    maps = _causal_maps(L, T, seed=L + T)
    full = rollout_reference(maps)
    torch.testing.assert_close(rollout_last(maps), full[-1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(full.sum(-1), torch.ones(T, dtype=full.dtype))  # rows stay distributions
    assert torch.all(full.triu(1) == 0)  # causal maps roll out causally


def test_rollout_one_layer_is_half_attention_plus_identity():
    maps = _causal_maps(1, 9)
    want = 0.5 * maps[0, -1].double()
    want[-1] += 0.5
    torch.testing.assert_close(rollout_last(maps), want)


def test_rollout_renormalises_rows_that_do_not_sum_to_one():
    maps = _causal_maps(3, 11) * 0.7  # e.g. weights with a learned sink share
    r = residual_maps(maps)
    torch.testing.assert_close(r.sum(-1), torch.ones(3, 11, dtype=r.dtype))


def test_rollout_bad_shape():
    with pytest.raises(ValueError, match=r"\(layers, T, T\)"):
        rollout_last(torch.ones(2, 3, 4))


# ------------------------------------------------------------------ attention x gradient
def test_attention_tap_records_the_eager_maps_and_keeps_the_output(tiny_llama):
    ids = _ids(23)
    ag = attention_grad(tiny_llama, ids, 7)
    with torch.no_grad():
        tiny_llama.set_attn_implementation("eager")
        try:
            out = tiny_llama(input_ids=ids, output_attentions=True, use_cache=False)
        finally:
            tiny_llama.set_attn_implementation("sdpa")
    eager = torch.stack([a[0] for a in out.attentions])  # (L, H, T, T)
    torch.testing.assert_close(ag.maps, eager.mean(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ag.last, eager[:, :, -1], rtol=1e-4, atol=1e-5)
    assert ag.target == pytest.approx(float(target_logprob(out.logits, 7)), abs=1e-4)
    assert ag.last.shape == ag.grad.shape == (2, 3, 23)


def test_attention_gradient_matches_finite_differences(tiny_llama):
    ids = _ids(19, seed=1)
    ag = attention_grad(tiny_llama, ids, 11)
    L, H, T = ag.grad.shape
    eps = 1e-2
    for layer, h, j in [(0, 0, 0), (0, 2, 18), (1, 1, 5), (1, 2, 17)]:
        bump = torch.zeros(H, T)
        bump[h, j] = eps
        up = attention_grad(tiny_llama, ids, 11, bump={layer: bump}).target
        down = attention_grad(tiny_llama, ids, 11, bump={layer: -bump}).target
        fd = (up - down) / (2 * eps)
        assert fd == pytest.approx(float(ag.grad[layer, h, j]), rel=2e-2, abs=2e-3), (layer, h, j)


def test_attn_grad_saliency_is_mean_positive_part(tiny_llama):
    ag = attention_grad(tiny_llama, _ids(13), lambda logits: int(logits.argmax()))
    want = torch.zeros(13)
    for layer in range(2):
        for h in range(3):
            want += torch.clamp(ag.last[layer, h] * ag.grad[layer, h], min=0)
    torch.testing.assert_close(attn_grad_saliency(ag), want / 6)
    assert ag.target_id == int(ag.logits.argmax())


def test_attention_grad_bad_input(tiny_llama):
    with pytest.raises(ValueError, match="one prompt"):
        attention_grad(tiny_llama, _ids(5).repeat(2, 1), 3)
    with pytest.raises(ValueError, match="out of range"):
        attention_grad(tiny_llama, _ids(5), 1000)
    with pytest.raises(ValueError, match="bump for layer 0"):
        attention_grad(tiny_llama, _ids(5), 3, bump={0: torch.zeros(2, 5)})


# ------------------------------------------------------------------ Captum saliency
@pytest.mark.parametrize("baseline_id", [None, 100])
def test_integrated_gradients_completeness(tiny_llama, baseline_id):
    ids = _ids(21, seed=2)
    s = token_saliency(tiny_llama, ids, 9, "ig", n_steps=16, reduce="sum", baseline_id=baseline_id)
    f = logprob_fn(tiny_llama, 9)
    with torch.no_grad():
        emb = tiny_llama.get_input_embeddings()(ids)
        base = torch.zeros_like(emb) if baseline_id is None else tiny_llama.get_input_embeddings()(torch.full_like(ids, 100))
        span = float(f(emb)[0] - f(base)[0])  # y(x) - y(x')
    total = float(s.raw.sum())
    assert s.span == pytest.approx(span, abs=1e-4)
    assert s.delta == pytest.approx(total - span, abs=1e-4)
    torch.testing.assert_close(s.scores, s.raw.sum(-1))
    if baseline_id is not None:  # completeness; from x' = 0 an RMSNorm model changes only near alpha = 0
        assert total == pytest.approx(span, rel=0.01)


def test_gradient_x_input_matches_autograd(tiny_llama):
    ids = _ids(17, seed=3)
    s = token_saliency(tiny_llama, ids, 4, "gxi")
    emb = tiny_llama.get_input_embeddings()(ids).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(logprob_fn(tiny_llama, 4)(emb).sum(), emb)
    ref = (emb.detach() * g)[0]
    torch.testing.assert_close(s.raw, ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(s.scores, ref.norm(dim=-1), rtol=1e-4, atol=1e-6)
    assert math.isnan(s.delta)


def test_saliency_bad_input(tiny_llama):
    with pytest.raises(ValueError, match="saliency method"):
        token_saliency(tiny_llama, _ids(5), 1, "lrp")
    with pytest.raises(ValueError, match="reduce"):
        token_saliency(tiny_llama, _ids(5), 1, "gxi", reduce="max")
    with pytest.raises(ValueError, match="n_steps"):
        token_saliency(tiny_llama, _ids(5), 1, "ig", n_steps=1)
    with pytest.raises(ValueError, match="out of range"):
        token_saliency(tiny_llama, _ids(5), 101, "gxi")
    with pytest.raises(ValueError, match="baseline token id"):
        token_saliency(tiny_llama, _ids(5), 1, "ig", baseline_id=-1)


# ------------------------------------------------------------------ agreement
def test_agreement_hand_made_vectors():
    a = np.arange(10, 0, -1, dtype=float)  # ranks tokens 0, 1, 2, ...
    same = agreement(a, a)
    assert same["spearman"] == pytest.approx(1) and same["coverage"] == 1 and same["mass"] == pytest.approx(1)
    assert same["k"] == 2 and same["chance"] == pytest.approx(0.2)
    rev = agreement(a, a[::-1].copy())
    assert rev["spearman"] == pytest.approx(-1) and rev["coverage"] == 0
    s = np.array([0, 9, 8, 0, 0, 0, 0, 0, 0, 1], dtype=float)  # saliency top-2 = {1, 2}; attention top-2 = {0, 1}
    x = agreement(a, s)
    assert x["coverage"] == 0.5
    assert x["mass"] == pytest.approx((0 + 9) / (9 + 8))
    assert x["pearson"] == pytest.approx(float(np.corrcoef(a, s)[0, 1]))
    assert x["spearman"] == pytest.approx(float(stats.spearmanr(a, s)[0]))  # with ties (the zeros of s)


def test_agreement_top_fraction_and_ties():
    assert top_k(0.2, 63) == 13 and top_k(0.2, 2) == 1 and top_k(1.0, 7) == 7
    a = np.ones(6)
    x = agreement(a, np.array([3.0, 2, 1, 0, 0, 0]), frac=0.5)
    assert math.isnan(x["spearman"]) and math.isnan(x["pearson"])  # constant attention has no rank order
    assert x["coverage"] == 1.0  # ties break by position: tokens 0, 1, 2


def test_agreement_bad_input():
    with pytest.raises(ValueError, match="must match"):
        agreement(np.ones(4), np.ones(5))
    with pytest.raises(ValueError, match="non-negative"):
        agreement(np.arange(4.0), -np.arange(4.0))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        agreement(np.arange(4.0), np.arange(4.0), frac=0)
    with pytest.raises(ValueError, match=">= 2 tokens"):
        agreement(np.ones(1), np.ones(1))


# ------------------------------------------------------------------ driver, files, CLI
def test_attribute_and_summarize_tiny(tiny_llama, tmp_path):
    recs = [
        attribute(tiny_llama, Prompt(_ids(T, seed=T), lambda logits: int(logits.argmax()), {"item": i}), ig_steps=4)
        for i, T in enumerate((9, 16, 31))
    ]
    r = recs[1]
    assert r["tokens"] == 16 and r["k"] == 3
    assert set(r["aggregated"]) == {"mean", "rollout"} and set(r["aggregated"]["mean"]) == {"gxi", "ig", "attn_grad"}
    assert len(r["per_head"]["ig"]["spearman"]) == 2 and len(r["per_head"]["ig"]["spearman"][0]) == 3
    s = summarize(recs)
    cov = s["aggregated"]["rollout"]["ig"]["coverage"]
    assert cov["n"] == 3 and 0 <= cov["ci"][0] <= cov["value"] <= cov["ci"][1] <= 1
    assert s["best_head"]["ig"]["site"].startswith("L")
    paths = write(tmp_path / "run", {"model": "tiny", "task": "x"}, recs, s, "headlab circuits attribution")
    raw = json.loads(paths["raw"].read_text())
    assert len(raw["items"]) == 3 and paths["plot"].stat().st_size > 1000
    assert len(paths["records"].read_text().splitlines()) == 3
    with pytest.raises(ValueError, match="no items"):
        summarize([])


def test_claim_collects_and_judges_two_task_folders(tiny_llama, tmp_path):
    from headlab_repro.claims import get
    from headlab_repro.runner import check_size

    claim = get("attention-vs-saliency")
    size = claim.smoke_size
    for task in ("sst2", "squad"):
        recs = [
            attribute(tiny_llama, Prompt(_ids(10 + i, seed=i), 5, {"item": i}), ig_steps=2, baseline_id=0)
            for i in range(size[f"{task}_items"] + 1)
        ]
        cfg = {"model": "smollm2-135m", "task": task, "items": size[f"{task}_items"], "ig_steps": 2, "top": 0.2, "max_chars": 300}
        write(tmp_path / task, cfg, recs, summarize(recs), "headlab circuits attribution")
    raw, records, files = claim.collect(tmp_path)
    check_size(claim, raw, smoke=True)
    with pytest.raises(RuntimeError, match="registered size"):
        check_size(claim, raw, smoke=False)
    nums = claim.summarize(raw)
    verdict = claim.judge(nums)
    assert len(verdict["conditions"]) == 4 and {r["task"] for r in records} == {"sst2", "squad"}
    best = nums["sst2_best_ig_coverage"]
    assert best["value"] == max(nums["sst2_mean_ig_coverage"]["value"], nums["sst2_rollout_ig_coverage"]["value"])
    assert all((tmp_path / f).exists() for f in files["plot"])


def test_prompts_bad_input():
    with pytest.raises(ValueError, match="unknown task"):
        prompts(None, "mmlu", 3)
    with pytest.raises(ValueError, match="positive"):
        prompts(None, "sst2", 0)


def test_cli_bad_input():
    from headlab.cli import app

    r = CliRunner().invoke(app, ["circuits", "attribution", "--task", "sst2", "--items", "0", "--out", "x"])
    assert r.exit_code == 2 and "--items" in r.output
    r = CliRunner().invoke(app, ["circuits", "attribution", "--task", "imdb", "--items", "3", "--out", "x"])
    assert r.exit_code == 2 and "imdb" in r.output


@pytest.mark.model
def test_smollm2_one_sst2_item(smollm2):
    model, tok = smollm2
    p = prompts(tok, "sst2", 1)[0]
    r = attribute(model, p, ig_steps=4, tokenizer=tok)
    assert r["target"] in (" negative", " positive") and r["target_is_top1"] in (True, False)
    with torch.no_grad():
        plain = float(logprob_fn(model, r["target_id"])(model.get_input_embeddings()(p.ids))[0])
    assert plain == pytest.approx(r["target_logprob"], abs=1e-3)  # engine pass == plain SDPA pass
    for v in ("mean", "rollout"):
        for s in ("gxi", "ig", "attn_grad"):
            a = r["aggregated"][v][s]
            assert 0 <= a["coverage"] <= 1 and -1 <= a["spearman"] <= 1
    assert len(r["per_head"]["ig"]["coverage"]) == 30 and len(r["per_head"]["ig"]["coverage"][0]) == 9
