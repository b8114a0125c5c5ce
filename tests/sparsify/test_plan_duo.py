"""DuoAttention-style gate training (arXiv 2410.10819): mixture, data, training, cache, plan."""

from __future__ import annotations

import math
import re
import zlib

import pytest
import torch
from conftest import _tiny_llama
from transformers import AttentionInterface

from headlab.engine.reference import reference_attention
from headlab.patterns import sink_window
from headlab.sparsify.plans.budget import split_budget
from headlab.sparsify.plans.duo import planner as profile_duo
from headlab.sparsify.plans.duo import train as duo_train
from headlab.sparsify.plans.duo.data import make_sample
from headlab.sparsify.plans.duo.mix import gated_attention, mixed_attention, streaming_mask
from headlab.sparsify.plans.duo.train import DuoSettings, train_gates


class WordTokenizer:
    """A deterministic word-level tokenizer for 101-token random models: '.' is id 0, words hash to 1..100."""

    def __init__(self) -> None:
        self.words: dict[int, str] = {0: "."}

    def _tok(self, text: str) -> list[int]:
        out = []
        for w in re.findall(r"\w+|[^\w\s]", text):
            i = 0 if w == "." else 1 + zlib.crc32(w.encode()) % 100
            self.words.setdefault(i, w)
            out.append(i)
        return out

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": self._tok(text)}

    def convert_ids_to_tokens(self, ids):
        return ["." if i == 0 else "w" for i in ids]

    def decode(self, ids):
        return " ".join(self.words.get(int(i), "x") for i in ids)


def _model():
    return _tiny_llama(heads=6, kv=2, d=40, layers=2)


def _qkv(B=2, H=6, Hkv=2, T=63, S=63, d=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T, d, generator=g), torch.randn(B, Hkv, S, d, generator=g), torch.randn(B, Hkv, S, d, generator=g))


# ---------------------------------------------------------------------------------------------- mixture
@pytest.mark.parametrize("T,S,sink,win", [(63, 63, 4, 9), (7, 50, 3, 11), (1, 37, 0, 5), (40, 40, 50, 3)])
def test_streaming_mask_is_sink_window(T, S, sink, win):
    assert torch.equal(streaming_mask(T, S, sink, win), sink_window(sink, win).mask(T, S)[0])


def _explicit(q, k, v, allowed, scale):
    """softmax over allowed keys, written out: (B, H, T, d)."""
    rep = q.shape[1] // k.shape[1]
    ke, ve = k.repeat_interleave(rep, 1).double(), v.repeat_interleave(rep, 1).double()
    s = torch.einsum("bhtd,bhsd->bhts", q.double(), ke) * scale
    s = s.masked_fill(~allowed, float("-inf"))
    return torch.einsum("bhts,bhsd->bhtd", torch.softmax(s, -1), ve)


@pytest.mark.parametrize("T,S", [(63, 63), (7, 50)])
def test_mixed_attention_equals_gated_sum_of_references(T, S):
    q, k, v = _qkv(T=T, S=S)
    gate = torch.tensor([0.3, 0.85])
    sink, win = 5, 13
    out = mixed_attention(q, k, v, gate, sink=sink, window=win)
    full = reference_attention(q, k, v)
    stream = reference_attention(q, k, v, pattern=sink_window(sink, win))
    g = gate.repeat_interleave(3).view(1, 6, 1, 1).double()
    want = g * full.double() + (1 - g) * stream.double()
    assert torch.allclose(out.double(), want, atol=1e-5)
    # and against an explicit masked softmax, independent of headlab's reference
    i = torch.arange(S - T, S).view(-1, 1)
    j = torch.arange(S).view(1, -1)
    causal = j <= i
    sw = causal & ((i - j < win) | (j < sink))
    scale = 1 / math.sqrt(q.shape[-1])
    want2 = g * _explicit(q, k, v, causal, scale) + (1 - g) * _explicit(q, k, v, sw, scale)
    assert torch.allclose(out.double(), want2, atol=1e-5)


def test_gates_at_one_reproduce_the_dense_model_exactly():
    model = _model()
    ids = torch.randint(0, 101, (2, 63), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        dense = model(ids).logits
        with gated_attention(model, torch.ones(2, 2), sink=3, window=7):
            gated = model(ids).logits
    assert torch.equal(dense, gated)


def test_gates_at_zero_match_headlab_sink_window_pattern():
    from headlab import attach

    model = _model()
    ids = torch.randint(0, 101, (1, 45), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        with attach(model, pattern=sink_window(3, 7)):
            want = model(ids).logits
        with gated_attention(model, torch.zeros(2, 2), sink=3, window=7):
            got = model(ids).logits
        mixed = torch.tensor([[0.0, 1.0], [0.5, 0.25]])
        with gated_attention(model, mixed, sink=3, window=7):
            between = model(ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(between, want, atol=1e-4)


def test_implementation_restored_also_after_an_exception():
    model = _model()
    before = model.config._attn_implementation
    names = set(AttentionInterface._global_mapping)
    with pytest.raises(RuntimeError, match="boom"), gated_attention(model, torch.ones(2, 2), sink=2, window=4):
        assert model.config._attn_implementation != before
        raise RuntimeError("boom")
    assert model.config._attn_implementation == before
    assert set(AttentionInterface._global_mapping) == names


def test_gate_shape_is_checked():
    with pytest.raises(ValueError, match=r"\(2, 2\)"), gated_attention(_model(), torch.ones(3, 2), sink=2, window=4):
        pass


# ---------------------------------------------------------------------------------------------- data
def test_samples_have_exact_length_and_are_deterministic():
    tok = WordTokenizer()
    a = make_sample(tok, 160, seed=3, n_facts=2)
    b = make_sample(tok, 160, seed=3, n_facts=2)
    c = make_sample(tok, 160, seed=4, n_facts=2)
    assert a.input_ids.shape == (160,) and a.target.shape == (160,)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.target, b.target)
    assert not torch.equal(a.input_ids, c.input_ids)
    # the target is one block at the end, and every answer is hidden earlier in the text as well
    n = int(a.target.sum())
    assert n > 0 and a.target[-n:].all()
    ids = a.input_ids.tolist()
    for ans in a.answers:
        want = tok(ans)["input_ids"]
        hits = [p for p in range(len(ids) - len(want)) if ids[p : p + len(want)] == want]
        assert any(p < 160 - n for p in hits), ans
    with pytest.raises(ValueError, match="too short"):
        make_sample(tok, 40, seed=0, n_facts=4)


# ---------------------------------------------------------------------------------------------- training
def _random_samples(length, s):
    g = torch.Generator().manual_seed(s)
    ids = torch.randint(0, 101, (length,), generator=g)
    target = torch.zeros(length, dtype=torch.bool)
    target[-10:] = True
    return type("S", (), {"input_ids": ids, "target": target})()


def test_loss_decreases_and_weights_stay_frozen():
    model = _model()
    flags = [p.requires_grad for p in model.parameters()]
    impl = model.config._attn_implementation
    st = DuoSettings(steps=6, items=1, lengths=(48,), sink=2, window=4, lr=0.1, reg=0.0, init=0.3)
    prof = train_gates(model, None, st, sample_fn=_random_samples)
    d = [x[0] for x in prof.losses]
    assert d[-1] < 0.5 * d[0], d
    assert all(all(0.0 <= g <= 1.0 for g in row) for row in prof.gates)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert model.config._attn_implementation == impl


def test_training_restores_the_model_after_an_exception():
    model = _model()
    model.train()
    impl = model.config._attn_implementation
    calls = []

    def broken(length, s):
        calls.append(s)
        if len(calls) > 1:
            raise RuntimeError("data failed")
        return _random_samples(length, s)

    with pytest.raises(RuntimeError, match="data failed"):
        train_gates(model, None, DuoSettings(steps=2, items=2, lengths=(32,), sink=2, window=4), sample_fn=broken)
    assert all(p.requires_grad for p in model.parameters())
    assert model.training and model.config._attn_implementation == impl


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="steps"):
        DuoSettings(steps=0).check()
    with pytest.raises(ValueError, match="init"):
        DuoSettings(init=1.5).check()


# ---------------------------------------------------------------------------------------------- plans
_OPTS = dict(steps=3, items=2, train_lengths=(150,), train_sink=2, train_window=8, n_facts=2, sink=4, min_window=8)


def test_same_seed_same_gates_and_plan(tmp_path):
    model, tok = _model(), WordTokenizer()
    a = profile_duo.make_plan(
        model, tok, budget=0.6, length=256, seed=1, cache_dir=tmp_path / "a", progress=lambda *a: None, **_OPTS
    )
    b = profile_duo.make_plan(
        model, tok, budget=0.6, length=256, seed=1, cache_dir=tmp_path / "b", progress=lambda *a: None, **_OPTS
    )
    assert a.meta["scores"] == b.meta["scores"]
    assert a.entries == b.entries
    assert a.meta["calibration"]["from_cache"] is False and b.meta["calibration"]["from_cache"] is False


def test_second_budget_reuses_the_cached_gates(tmp_path, monkeypatch):
    model, tok = _model(), WordTokenizer()
    calls = []
    real = duo_train.train_gates

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(profile_duo, "train_gates", counting)
    p1 = profile_duo.make_plan(model, tok, budget=0.6, length=256, cache_dir=tmp_path, progress=lambda *a: None, **_OPTS)
    p2 = profile_duo.make_plan(model, tok, budget=0.9, length=256, cache_dir=tmp_path, progress=lambda *a: None, **_OPTS)
    assert len(calls) == 1
    assert p2.meta["calibration"]["from_cache"] is True
    assert p1.meta["scores"] == p2.meta["scores"]
    # other settings are another cache entry
    profile_duo.make_plan(
        model, tok, budget=0.6, length=256, cache_dir=tmp_path, progress=lambda *a: None, **{**_OPTS, "steps": 2}
    )
    assert len(calls) == 2


@pytest.mark.parametrize("budget", [0.55, 0.7, 1.0])
def test_plan_meets_the_budget_and_keeps_the_top_gates(tmp_path, budget):
    model, tok = _model(), WordTokenizer()
    plan = profile_duo.make_plan(model, tok, budget=budget, length=256, cache_dir=tmp_path, progress=lambda *a: None, **_OPTS)
    assert plan.meta["method"] == "duo" and plan.meta["budget"] == budget
    assert plan.kv_fraction() <= budget + 1e-12 and plan.meta["kv_fraction"] <= budget + 1e-12
    k, w = split_budget(4, budget, 256, full_share=0.6, sink=4, min_window=8)
    full = [(li, h) for li, row in enumerate(plan.entries) for h, e in enumerate(row) if e["pattern"] == "causal"]
    assert len(full) == k
    gates = plan.meta["scores"]
    rest = [gates[li][h] for li in range(2) for h in range(2) if (li, h) not in full]
    assert not full or not rest or min(gates[li][h] for li, h in full) >= max(rest)
    for row in plan.entries:
        for e in row:
            assert e["pattern"] == "causal" or e == {"pattern": "sink_window", "args": {"sink": 4, "size": w}}


@pytest.mark.parametrize("budget", [0, -0.2, 1.5, float("nan")])
def test_budget_outside_unit_interval_is_refused(budget):
    with pytest.raises(ValueError, match=re.escape(repr(budget)) + "|" + re.escape(str(budget))):
        profile_duo.make_plan(_model(), WordTokenizer(), budget=budget, length=256, **_OPTS)


def test_bad_length_and_unknown_option_are_refused(tmp_path):
    with pytest.raises(ValueError, match="9999"):
        profile_duo.make_plan(_model(), WordTokenizer(), budget=0.6, length=9999, **_OPTS)
    with pytest.raises(ValueError, match="bogus"):
        profile_duo.make_plan(_model(), WordTokenizer(), budget=0.6, length=256, cache_dir=tmp_path, bogus=1, **_OPTS)


def test_rank_breaks_ties_by_pull():
    gates = [[1.0, 0.2], [1.0, 0.0]]
    pull = [[0.1, 0.0], [0.5, 0.0]]
    assert profile_duo.rank_kv_heads(gates, pull)[:3] == [(1, 0), (0, 0), (0, 1)]


def test_plot_is_written(tmp_path):
    out = tmp_path / "gates.png"
    plan = profile_duo.make_plan(
        _model(), WordTokenizer(), budget=0.7, length=256, cache_dir=tmp_path, progress=lambda *a: None, plot=out, **_OPTS
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plan.meta["method"] == "duo"
    from headlab.sparsify.plans.duo.plot import plot_gates

    with pytest.raises(ValueError, match="shape"):
        plot_gates(tmp_path / "x.png", [], [])


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"budget": 0}, r"KV budget must be in \(0, 1\], got 0"),
        ({"sink": -2}, r"sink must be an integer >= 0, got -2"),
        ({"full_share": -0.1}, r"full_share must be in \[0, 1\], got -0.1"),
        ({"steps": 0}, r"steps must be >= 1, got 0"),
        ({"init": 1.5}, r"init must be in \[0, 1\], got 1.5"),
        ({"train_lengths": 16}, r"training lengths must be >= 32 tokens each, got \(16,\)"),
        ({"bogus": 1}, r"unknown duo option\(s\) \['bogus'\]"),
    ],
)
def test_duo_request_refuses_bad_values(kw, msg):
    from headlab.sparsify.plans.duo.planner import DuoRequest

    with pytest.raises(ValueError, match=msg):
        DuoRequest.from_options(**{"budget": 0.5, "length": 256, **kw})


def test_duo_request_maps_training_options():
    from headlab.sparsify.plans.duo.planner import DuoRequest

    r = DuoRequest.from_options(budget=0.5, length=256, seed=2, plot=None, **_OPTS)
    assert r.train == DuoSettings(steps=3, items=2, lengths=(150,), sink=2, window=8, n_facts=2)
    assert (r.budget, r.length, r.seed, r.sink, r.min_window, r.full_share) == (0.5, 256, 2, 4, 8, 0.6)
    assert DuoRequest(budget=0.5, length=256).train == DuoSettings()
