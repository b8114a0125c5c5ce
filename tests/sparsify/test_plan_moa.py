"""MoA profiler and planner (arXiv 2406.14909) on tiny random GQA Llamas: influence vs brute force,
rule choice vs enumeration, budget, determinism, cache reuse, bad input."""

from __future__ import annotations

import contextlib
import itertools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import _tiny_llama
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from headlab import attach
from headlab.sparsify.plans.moa import planner as profile_moa
from headlab.sparsify.plans.moa import rules as moa_rules
from headlab.sparsify.plans.moa.influence import capture, distance_histogram, entry_influence, reference_influence
from headlab.sparsify.plans.moa.rules import FULL_RULE, candidate_rules, choose, kept_keys, rule_losses, tails

TINY = dict(lengths=(40, 72), items=2, response=6, sink=4, alphas=(0, 8, 16, 32), betas=(0.0, 0.1, 0.25, 0.5))


def _gqa(layers=2):
    return _tiny_llama(heads=4, kv=2, d=8, layers=layers)


# ------------------------------------------------------------------------------------------ influence
@pytest.mark.parametrize("T,S,H,Hkv,chunk", [(13, 13, 3, 1, 4), (9, 9, 4, 2, 9), (7, 11, 2, 2, 3)])
def test_entry_influence_matches_brute_force(T, S, H, Hkv, chunk):
    g = torch.Generator().manual_seed(T * 100 + S)
    q, dout = torch.randn(1, H, T, 5, generator=g, dtype=torch.float64), torch.randn(1, H, T, 5, generator=g, dtype=torch.float64)
    k, v = (
        torch.randn(1, Hkv, S, 5, generator=g, dtype=torch.float64),
        torch.randn(1, Hkv, S, 5, generator=g, dtype=torch.float64),
    )
    ref = reference_influence(q, k, v, dout, 0.4)
    ke, ve = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
    vis = torch.ones(T, S, dtype=torch.bool).tril(S - T)
    out = torch.softmax((q @ ke.transpose(-1, -2) * 0.4).masked_fill(~vis, float("-inf")), -1) @ ve  # (1, H, T, 5)
    for t0 in range(0, T, chunk):
        rows = torch.arange(t0, min(T, t0 + chunk))
        a, dl = entry_influence(q, k, v, dout, 0.4, rows)
        width = dl.shape[-1]
        assert width == S - T + int(rows.max()) + 1
        torch.testing.assert_close(dl, ref[:, :, rows, :width], rtol=1e-9, atol=1e-12)
        _, dl2 = entry_influence(q, k, v, dout, 0.4, rows, out=out)  # the rowdot shortcut dO . O
        torch.testing.assert_close(dl2, dl, rtol=1e-9, atol=1e-12)


def test_distance_histogram_matches_per_entry_binning():
    g = torch.Generator().manual_seed(3)
    T, H, Hkv, sink = 15, 3, 1, 2
    q, dout = torch.randn(1, H, T, 6, generator=g, dtype=torch.float64), torch.randn(1, H, T, 6, generator=g, dtype=torch.float64)
    k, v = (
        torch.randn(1, Hkv, T, 6, generator=g, dtype=torch.float64),
        torch.randn(1, Hkv, T, 6, generator=g, dtype=torch.float64),
    )
    ref = reference_influence(q, k, v, dout, 0.3).abs()
    want_h, want_s = torch.zeros(H, T, dtype=torch.float64), torch.zeros(H, dtype=torch.float64)
    for h, i, j in itertools.product(range(H), range(T), range(T)):
        if j > i:
            continue
        if j < sink:
            want_s[h] += ref[0, h, i, j]
        else:
            want_h[h, i - j] += ref[0, h, i, j]
    hist, sinks = distance_histogram(q, k, v, dout, 0.3, sink, chunk=4)
    torch.testing.assert_close(hist, want_h)
    torch.testing.assert_close(sinks, want_s)
    assert float(hist.sum() + sinks.sum()) == pytest.approx(float(ref.sum()))


_names = itertools.count()


@contextlib.contextmanager
def _explicit_attention(model, nudge=None):
    """Eager float64 attention with the map A kept (and retain_grad); ``nudge`` = (layer, head, row, delta)."""
    maps = {}

    def fn(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
        H = query.shape[1]
        ke = key.repeat_interleave(H // key.shape[1], 1)
        ve = value.repeat_interleave(H // value.shape[1], 1)
        s = query @ ke.transpose(-1, -2) * scaling
        T = s.shape[-1]
        a = torch.softmax(s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")), -1)
        if nudge is not None and nudge[0] == module.layer_idx:
            add = torch.zeros_like(a)
            add[0, nudge[1], nudge[2]] = nudge[3]
            a = a + add
        if a.requires_grad:
            a.retain_grad()
        maps[module.layer_idx] = a
        return (a @ ve).transpose(1, 2).contiguous(), None

    name = f"moa_test_explicit_{next(_names)}"  # a fresh name per use: transformers may cache by name
    AttentionInterface.register(name, fn)
    AttentionMaskInterface.register(name, sdpa_mask)
    prev = model.config._attn_implementation
    try:
        model.set_attn_implementation(name)
        yield maps
    finally:
        model.set_attn_implementation(prev)
        AttentionInterface._global_mapping.pop(name, None)
        AttentionMaskInterface._global_mapping.pop(name, None)


def _loss(model, ids, R):
    logits = model(input_ids=ids, logits_to_keep=R + 1, use_cache=False).logits
    return F.cross_entropy(logits[0, :-1], ids[0, -R:])


def test_model_influence_equals_autograd_on_explicit_map_and_finite_differences(monkeypatch):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    def rms_norm_in_input_dtype(self, x):  # the stock norm rounds through float32, too coarse for differences
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)

    monkeypatch.setattr(LlamaRMSNorm, "forward", rms_norm_in_input_dtype)
    model = _gqa().double()
    ids = torch.randint(3, 101, (1, 19), generator=torch.Generator().manual_seed(1))
    R, layer = 5, 0
    # the profiler's path: SDPA forward, dO from one backward pass, maps rebuilt afterwards
    for p in model.parameters():
        p.requires_grad_(False)
    with capture(model) as cap:
        emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=emb, logits_to_keep=R + 1, use_cache=False).logits
        F.cross_entropy(logits[0, :-1], ids[0, -R:]).backward()
        r = cap.layers[layer]
        a_fast, dl_fast = entry_influence(r["q"], r["k"], r["v"], r["out"].grad, r["scale"], torch.arange(19))
    # brute force: autograd on an explicit attention map, each entry masked and the row renormalised
    with _explicit_attention(model) as maps:
        emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=emb, logits_to_keep=R + 1, use_cache=False).logits
        F.cross_entropy(logits[0, :-1], ids[0, -R:]).backward()
        a, grad = maps[layer].detach(), maps[layer].grad
    torch.testing.assert_close(a_fast, a, rtol=1e-10, atol=1e-12)
    want = torch.zeros_like(a)
    for h, i, j in itertools.product(range(4), range(19), range(19)):
        if j <= i:
            row = a[0, h, i].clone()
            rest = 1 - row[j]
            row[j] = 0
            row = row / rest if rest > 1e-12 else row
            want[0, h, i, j] = (grad[0, h, i] * (row - a[0, h, i])).sum()
    torch.testing.assert_close(dl_fast, want, rtol=1e-8, atol=1e-12)
    # and the first-order estimate agrees with the loss change along A -> A_masked (central differences)
    h, i = 1, 12
    for j in (0, 5, 11, 12):
        row = a[0, h, i].clone()
        rest = 1 - row[j]
        row[j] = 0
        direction = row / rest - a[0, h, i]
        eps = 1e-3  # Llama's RMSNorm computes in float32: smaller steps drown in its rounding
        with torch.no_grad():
            with _explicit_attention(model, (layer, h, i, eps * direction)):
                up = float(_loss(model, ids, R))
            with _explicit_attention(model, (layer, h, i, -eps * direction)):
                down = float(_loss(model, ids, R))
        assert (up - down) / (2 * eps) == pytest.approx(float(dl_fast[0, h, i, j]), rel=1e-6, abs=1e-12)


# ------------------------------------------------------------------------------------------ rules
def test_candidate_rules_are_valid_and_end_with_full():
    rules = candidate_rules(8192, 64, (1024, 2048))
    assert rules[-1] == FULL_RULE
    keys = kept_keys(rules, 8192, 64)
    assert list(keys) == sorted(keys[:-1]) + [8192]
    for r in rules[:-1]:
        assert all(moa_rules.width(r, n) >= 1 for n in (1024, 2048, 8192))
        assert moa_rules.width(r, 2048) <= 2048  # MoA: no band wider than the longest profile
        assert 64 + moa_rules.width(r, 8192) < 8192
    assert (2048.0, 0.0) in rules and (1024.0, 0.5) in rules and (2048.0, 0.1) not in rules
    assert len(set(rules)) == len(rules)


def test_rule_losses_are_tail_mass_at_each_length():
    g = torch.Generator().manual_seed(0)
    hists = {20: torch.rand(3, 20, generator=g, dtype=torch.float64), 40: torch.rand(3, 40, generator=g, dtype=torch.float64)}
    rules = [(4.0, 0.0), (2.0, 0.25), FULL_RULE]
    loss, parts = rule_losses(hists, rules, 40)  # target profiled: no extrapolation
    for n in (20, 40):
        tot = float(hists[n].sum())
        for ri, r in enumerate(rules):
            w = n if r == FULL_RULE else round(r[0] + r[1] * n)
            torch.testing.assert_close(parts[f"L={n}"][:, ri], hists[n][:, w:].sum(-1) / tot)
    torch.testing.assert_close(loss, (parts["L=20"] + parts["L=40"]) / 2)
    torch.testing.assert_close(tails(hists[20])[:, 0], hists[20].sum(-1))
    # extrapolated target: between the absolute and the relative scaling of the longest profile
    loss80, parts80 = rule_losses(hists, rules, 80)
    t = tails(hists[40]) / float(hists[40].sum())
    lam = parts80["relative"]
    assert ((lam >= 0) & (lam <= 1)).all()
    torch.testing.assert_close(parts80["target"][:, 0], (1 - lam) * t[:, 4] + lam * t[:, 2])
    assert (parts80["target"][:, -1] == 0).all()


def test_relative_weight_prefers_the_scaling_that_fits():
    n1, n2 = 32, 64
    local = {n1: torch.zeros(1, n1, dtype=torch.float64), n2: torch.zeros(1, n2, dtype=torch.float64)}
    local[n1][0, :4] = 1.0
    local[n2][0, :4] = 1.0  # same absolute distances at both lengths
    spread = {n1: torch.ones(1, n1, dtype=torch.float64), n2: torch.ones(1, n2, dtype=torch.float64)}  # scales with n
    assert float(moa_rules.relative_weight(local)[0]) < 0.2
    assert float(moa_rules.relative_weight(spread)[0]) > 0.8


@pytest.mark.parametrize("seed", range(4))
def test_choose_is_the_exact_optimum_under_the_budget(seed):
    rng = np.random.default_rng(seed)
    K, n = 5, 100
    keys = np.array([10, 25, 40, 70, 100])  # kept keys of 5 rules at length n (last = full)
    loss = np.sort(rng.random((K, 5)), axis=1)[:, ::-1].copy()  # wider bands lose less
    loss[:, -1] = 0.0
    for budget in (0.1, 0.23, 0.37, 0.5, 0.81, 1.0):
        pick = choose(loss, keys, budget, n)
        assert keys[pick].sum() <= budget * K * n
        best = min(
            sum(loss[k, c[k]] for k in range(K))
            for c in itertools.product(range(5), repeat=K)
            if keys[list(c)].sum() <= budget * K * n
        )
        assert sum(loss[k, pick[k]] for k in range(K)) == pytest.approx(best, abs=1e-12)
    with pytest.raises(ValueError, match="0.05"):
        choose(loss, keys, 0.05, n)


def test_choose_on_hand_made_profile_gives_full_to_the_long_range_head():
    # heads: 0 local (distance < 4), 1 spread over the whole context, 2 local
    n = 64
    h = torch.zeros(3, n, dtype=torch.float64)
    h[0, :4] = 1.0
    h[1, :] = 0.2
    h[2, :3] = 1.0
    rules = candidate_rules(n, 2, (n,), alphas=(0, 4, 8, 16), betas=(0.0, 0.25))
    loss, _ = rule_losses({n: h}, rules, n)
    keys = kept_keys(rules, n, 2)
    pick = choose(loss.numpy(), keys, 0.45, n)
    assert rules[pick[1]] == FULL_RULE
    assert moa_rules.width(rules[pick[0]], n) >= 4 and moa_rules.width(rules[pick[2]], n) >= 3
    assert keys[pick].sum() <= 0.45 * 3 * n


# ------------------------------------------------------------------------------------------ make_plan
def test_make_plan_budget_determinism_and_attach(tmp_path):
    model = _gqa()
    kw = dict(TINY, length=128, seed=3, progress=lambda *a: None)
    p1 = profile_moa.make_plan(model, None, budget=0.4, cache=False, **kw)
    p2 = profile_moa.make_plan(model, None, budget=0.4, cache=False, **kw)
    assert p1.entries == p2.entries
    assert p1.meta["kv_fraction"] <= 0.4
    assert p1.kv_fraction(128) == pytest.approx(p1.meta["kv_fraction"], abs=1e-6)
    assert p1.meta["method"] == "moa" and p1.meta["granularity"] == "kv_head"
    assert len(p1.entries) == 2 and all(len(r) == 2 for r in p1.entries)
    for row in p1.entries:
        for e in row:
            assert e["pattern"] in ("causal", "moa")
            if e["pattern"] == "moa":
                assert e["args"]["sink"] == 4 and len(e["args"]["spans"]) == 1
    json.dumps(p1.to_dict())
    ids = torch.randint(3, 101, (1, 50))
    with torch.no_grad(), attach(model, pattern=p1):
        out = model(ids).logits
    assert torch.isfinite(out).all()


def test_profile_is_cached_and_reused(tmp_path, monkeypatch):
    model = _gqa()
    calls = []
    real = profile_moa._profile_sequence

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(profile_moa, "_profile_sequence", counting)
    kw = dict(TINY, length=128, seed=1, cache_dir=tmp_path, progress=lambda *a: None)
    p1 = profile_moa.make_plan(model, None, budget=0.3, **kw)
    assert len(calls) == 4  # 2 lengths x 2 items
    assert len(list(tmp_path.glob("moa-*.pt"))) == 1
    p2 = profile_moa.make_plan(model, None, budget=0.6, **kw)
    assert len(calls) == 4 and p2.meta["options"]["profile_cached"]
    assert p2.meta["kv_fraction"] <= 0.6 and p1.meta["kv_fraction"] <= 0.3
    assert p2.meta["options"]["objective"] <= p1.meta["options"]["objective"]  # more budget, less loss
    profile_moa.make_plan(model, None, budget=0.3, **{**kw, "seed": 2})  # other settings: recomputed
    assert len(calls) == 8


@pytest.mark.parametrize("budget", [0, -0.1, 1.5, float("nan")])
def test_budget_outside_unit_interval_is_refused(budget):
    with pytest.raises(ValueError, match=r"\(0, 1\]") as exc:
        profile_moa.make_plan(_gqa(1), None, budget=budget, length=128, cache=False, **{k: v for k, v in TINY.items()})
    assert str(budget) in str(exc.value)


def test_bad_lengths_and_data_are_refused():
    model = _gqa(1)
    with pytest.raises(ValueError, match="1000"):
        profile_moa.make_plan(model, None, budget=0.5, length=1000, cache=False, **TINY)  # context is 256
    with pytest.raises(ValueError, match="profile length 12"):
        profile_moa.make_plan(model, None, budget=0.5, length=128, cache=False, **{**TINY, "lengths": (12,)})
    with pytest.raises(ValueError, match="tokenizer"):
        profile_moa.make_plan(model, None, budget=0.5, length=128, cache=False, **{**TINY, "data": "prose"})
    with pytest.raises(ValueError, match="betas"):
        profile_moa.make_plan(model, None, budget=0.5, length=128, cache=False, **{**TINY, "betas": (1.0,)})
    with pytest.raises(ValueError, match="0.01"):  # below the cheapest candidate
        profile_moa.make_plan(model, None, budget=0.01, length=128, cache=False, **TINY)


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"budget": 1.5}, r"KV budget must be in \(0, 1\], got 1.5"),
        ({"items": 0}, r"items must be an integer >= 1, got 0"),
        ({"response": 0}, r"response must be an integer >= 1, got 0"),
        ({"sink": -1}, r"sink must be an integer >= 0, got -1"),
        ({"lengths": (40, 0)}, r"lengths must be integers >= 1, got 0"),
        ({"alphas": (-1,)}, r"alphas must be numbers >= 0, got -1"),
        ({"betas": (1.0,)}, r"betas must be numbers in \[0, 1\)"),
        ({"data": "web"}, r"data must be 'prose' \(CPython pydoc text\) or 'synthetic', got 'web'"),
        ({"chunk": 0}, r"chunk must be an integer >= 1, got 0"),
        ({"cache": "yes"}, r"cache must be True or False, got 'yes'"),
    ],
)
def test_moa_request_refuses_bad_values(kw, msg):
    from headlab.sparsify.plans.moa.planner import MoaRequest

    with pytest.raises(ValueError, match=msg):
        MoaRequest(**{"budget": 0.5, "length": 128, **TINY, **kw})


def test_moa_request_normalises_options():
    from headlab.sparsify.plans.moa.planner import MoaRequest

    r = MoaRequest(budget=0.5, length=128, lengths=[72, 40], alphas=[0, 8], betas=0.1, cache=0)
    assert (r.lengths, r.alphas, r.betas, r.cache) == ((72, 40), (0, 8), (0.1,), False)
    assert MoaRequest(budget=0.5, length=128).lengths == profile_moa.DEFAULT_LENGTHS
