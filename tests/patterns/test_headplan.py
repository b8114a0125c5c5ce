"""Per-head plans (headlab.patterns.headplan): format, validation, masks, budget, attach; planners."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from conftest import _tiny_llama, llama

import headlab
from headlab import patterns as P
from headlab.patterns import headplan as HP

FULL = {"pattern": "causal", "args": {}}


def sw(sink, size):
    return {"pattern": "sink_window", "args": {"sink": sink, "size": size}}


def moa1(alpha, beta, sink):
    return {"pattern": "moa", "args": {"spans": [[alpha, beta]], "sink": sink}}


def _entries():
    """2 layers x 3 KV heads: every kind of head, and layer 1 partly full."""
    return [[sw(2, 5), {"pattern": "window", "args": {"size": 7}}, moa1(3.0, 0.125, 1)], [FULL, sw(0, 9), FULL]]


@pytest.fixture
def gqa():
    return _tiny_llama(heads=6, kv=3, d=20)  # GQA group 2


@pytest.fixture
def plan(gqa):
    return HP.plan_from_entries(_entries(), gqa, length=40, method="hand", budget=0.9, seed=0)


def _brute(entry, i, j, n):
    """The per-(i, j) definition of one head's rule at n keys."""
    if j > i:
        return False
    name, a = entry["pattern"], entry["args"]
    if name == "causal":
        return True
    if name == "sink_window":
        return i - j < a["size"] or j < a["sink"]
    if name == "window":
        return i - j < a["size"]
    if name == "moa":
        ((alpha, beta),) = a["spans"]
        return i - j < round(alpha + beta * n) or j < a["sink"]
    raise AssertionError(name)


# ---------------------------------------------------------------------------------------- format
def test_load_plan_reproduces_the_factories(plan, gqa, tmp_path):
    path = HP.save_plan(plan, tmp_path / "p.json")
    loaded = HP.load_plan(path, model=gqa)
    assert loaded.entries == _entries()
    for li, row in enumerate(_entries()):
        lp = loaded.layer_pattern(li)
        assert lp.kv_per_head and lp.n_heads == 3
        for h, e in enumerate(row):
            want = P.make(e["pattern"], **e["args"])
            got = lp.patterns[h]  # type: ignore[attr-defined]  (a PerHead)
            assert type(got) is type(want) and got.describe() == want.describe()
            assert torch.equal(got.mask(17, 63), want.mask(17, 63))


@pytest.mark.parametrize("q_len,kv_len", [(63, 63), (1, 63), (5, 40)])
def test_masks_equal_brute_force(plan, q_len, kv_len):
    H, Hkv = 6, 3
    for li, row in enumerate(_entries()):
        m = plan.layer_pattern(li).for_heads(H, Hkv).mask(q_len, kv_len)
        assert m.shape == (H, q_len, kv_len)
        want = torch.zeros(H, q_len, kv_len, dtype=torch.bool)
        for h in range(H):
            for t in range(q_len):
                i = kv_len - q_len + t
                for j in range(kv_len):
                    want[h, t, j] = _brute(row[h // (H // Hkv)], i, j, kv_len)
        assert torch.equal(m, want), f"layer {li}"


def test_mapping_omits_all_causal_layers(gqa):
    p = HP.plan_from_entries([[FULL] * 3, [FULL, sw(1, 4), FULL]], gqa, length=32)
    assert list(p) == [1] and len(p) == 1 and 0 not in p
    with pytest.raises(KeyError):
        p[0]
    assert p.full_heads() == [[0, 1, 2], [0, 2]]


def test_json_round_trip(plan, tmp_path):
    a = HP.save_plan(plan, tmp_path / "a.json")
    loaded = HP.load_plan(a)
    assert loaded.to_dict() == plan.to_dict()
    b = HP.save_plan(loaded.to_dict(), tmp_path / "b.json")
    assert a.read_bytes() == b.read_bytes()
    d = json.loads(a.read_text())
    assert d["format"] == "headlab-plan/1" and d["granularity"] == "kv_head"
    assert d["model"]["n_layers"] == 2 and d["model"]["n_kv_heads"] == 3 and d["model"]["max_positions"] == 256
    assert d["headlab_version"] == headlab.__version__ and d["method"] == "hand" and d["budget"] == 0.9
    assert plan.meta == {k: v for k, v in d.items() if k != "layers"}


@pytest.mark.parametrize("n", [40, 63, 7])
def test_achieved_budget_equals_reported_and_brute_force(plan, n):
    H, Hkv, g = 6, 3, 2
    kept, dens = [], []
    for li in range(2):
        m = plan.layer_pattern(li).for_heads(H, Hkv)
        last = m.mask(1, n)[:, 0]  # (H, n): keys the newest query still needs
        for kv in range(Hkv):
            kept.append(int(last[kv * g : (kv + 1) * g].any(0).sum()))
        dens += [P.make(**{"name": e["pattern"], **e["args"]}).density(n, n) for e in plan.entries[li] for _ in range(g)]
    assert plan.kv_fraction(n) == pytest.approx(sum(kept) / (n * 2 * Hkv), abs=1e-12)
    assert plan.density(n) == pytest.approx(sum(dens) / len(dens), abs=1e-9)
    if n == 40:
        assert plan.meta["kv_fraction"] == pytest.approx(plan.kv_fraction(), abs=1e-6)
        assert plan.meta["density"] == pytest.approx(plan.density(), abs=1e-6)


def test_query_head_granularity_keeps_the_union(gqa):
    rows = [[sw(2, 5), sw(4, 3), FULL, FULL, sw(1, 2), sw(1, 2)]] * 2
    p = HP.plan_from_entries(rows, gqa, length=30, granularity="query_head")
    assert not p.layer_pattern(0).kv_per_head and p.layer_pattern(0).n_heads == 6
    assert p.kept_keys(30) == [[4 + 5, 30, 3]] * 2  # largest sink + largest window; any full -> all
    assert p.kv_fraction(30) == pytest.approx((9 + 30 + 3) / 90)


def test_kv_span():
    assert HP.kv_span(FULL, 100) is None
    assert HP.kv_span(sw(64, 256), 8192) == (64, 256)
    assert HP.kv_span(P.window(5), 10) == (0, 5)
    assert HP.kv_span(moa1(10.0, 0.25, 4), 100) == (4, 35)
    assert HP.kv_span(P.moa([[10, 0.25]], sink=4), 101) == (4, round(10 + 25.25))
    for bad in (P.power(block=4), {"pattern": "strided", "args": {}}, P.moa([5, 6])):
        with pytest.raises(ValueError, match="no \\(sink, window\\) span"):
            HP.kv_span(bad, 64)
    with pytest.raises(ValueError, match="unknown pattern 'nope'"):
        HP.kv_span({"pattern": "nope", "args": {}}, 64)


def test_fingerprint(gqa):
    fp = HP.model_fingerprint(gqa)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert HP.model_fingerprint(gqa.config) == fp == HP.model_fingerprint(_tiny_llama(heads=6, kv=3, d=20))
    assert HP.model_fingerprint(_tiny_llama(heads=6, kv=2, d=20)) != fp
    assert HP.model_fingerprint(_tiny_llama(heads=6, kv=3, d=20, vocab=103)) != fp


def test_load_by_name(plan, tmp_path, monkeypatch):
    monkeypatch.setattr(HP, "PLANS_DIR", tmp_path)
    HP.save_plan(plan.with_meta(name="tiny-40"), tmp_path / "tiny-40.json")
    assert HP.available_plans() == ["tiny-40"]
    assert HP.load_plan("tiny-40").name == "tiny-40"
    with pytest.raises(ValueError, match="shipped plans: tiny-40"):
        HP.load_plan("tiny-41")
    with pytest.raises(ValueError, match="does not exist"):
        HP.load_plan(tmp_path / "missing.json")


# ---------------------------------------------------------------------------------------- attach
def _plan_reference(model, masks):
    """Eager softmax attention with explicit per-layer (H, T, T) masks, through transformers' interface."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def fn(module, q, k, v, attention_mask, scaling=None, dropout=0.0, **kw):
        H = q.shape[1]
        k = k.repeat_interleave(H // k.shape[1], 1)
        v = v.repeat_interleave(H // v.shape[1], 1)
        s = (q.double() @ k.double().transpose(-1, -2)) * scaling
        s = s.masked_fill(~masks[module.layer_idx], float("-inf"))
        return (torch.softmax(s, -1) @ v.double()).to(q.dtype).transpose(1, 2).contiguous(), None

    AttentionInterface.register("plan_ref", fn)
    AttentionMaskInterface.register("plan_ref", sdpa_mask)
    return "plan_ref"


def test_attach_plan_equals_eager_reference(gqa, plan):
    T = 40
    ids = torch.randint(0, 101, (1, T), generator=torch.Generator().manual_seed(1))
    masks = {}
    for li, row in enumerate(plan.entries):
        masks[li] = torch.tensor([[[_brute(row[h // 2], i, j, T) for j in range(T)] for i in range(T)] for h in range(6)])
    with torch.no_grad():
        dense = gqa(ids).logits
        with headlab.attach(gqa, pattern=plan):
            got = gqa(ids).logits
        gqa.set_attn_implementation(_plan_reference(gqa, masks))
        try:
            want = gqa(ids).logits
        finally:
            gqa.set_attn_implementation("sdpa")
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert not torch.allclose(got, dense, atol=1e-3)  # the plan changes the model


def test_plan_for_another_model_is_refused(plan, tmp_path):
    path = HP.save_plan(plan, tmp_path / "p.json")
    other_shape = _tiny_llama(heads=6, kv=2, d=20)
    other_vocab = _tiny_llama(heads=6, kv=3, d=20, vocab=103)
    for other, what in ((other_shape, r"\(2, 6, 3\).*\(2, 6, 2\)"), (other_vocab, plan.meta["model"]["fingerprint"])):
        with pytest.raises(ValueError, match=what):
            HP.load_plan(path, model=other)
        with pytest.raises(ValueError, match="make a plan for it"), headlab.attach(other, pattern=plan):
            pass
    assert other_vocab.config._attn_implementation == "sdpa"  # attach restored nothing it had not set


# ---------------------------------------------------------------------------------------- bad input
def _bad(plan, **changes):
    d = plan.to_dict()
    for key, value in changes.items():
        d[key] = value
    return d


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(length=300), "length 300 is beyond the model's context: valid lengths are 1..256"),
        (dict(budget=0), r"budget must be in \(0, 1\], got 0"),
        (dict(budget=1.5), r"budget must be in \(0, 1\], got 1.5"),
        (dict(format="headlab-plan/9"), "format must be 'headlab-plan/1', got 'headlab-plan/9'"),
        (dict(granularity="layer"), "granularity must be one of"),
        (dict(kv_fraction=0.5), "reports kv_fraction 0.5 but its heads give"),
        (dict(layers=[[FULL] * 3]), "must be a list of n_layers=2 lists, got 1"),
        (dict(layers=[[FULL] * 3, [FULL] * 6]), r"layer 1 must list 3 heads \(one per kv head\), got 6"),
        (
            dict(layers=[[FULL] * 3, [FULL, {"pattern": "nope", "args": {}}, FULL]]),
            r"layer 1 head 1 .*unknown pattern 'nope'; valid names are \[.*'sink_window'",
        ),
        (dict(layers=[[FULL] * 3, [FULL, sw(2, 0), FULL]]), r"layer 1 head 1 .*window size must be >= 1, got 0"),
        (dict(layers=[[FULL] * 3, [FULL, {"pattern": "sink_window", "args": {"sink": 1}}, FULL]]), "layer 1 head 1"),
        (dict(layers=[[FULL] * 3, [FULL, {"pattern": "topk_blocks", "args": {}}, FULL]]), "layer 1: .*dynamic"),
        (dict(scores=[[1.0]]), "'scores' must be null or 2 lists of 3 numbers"),
    ],
)
def test_bad_plans_are_refused_and_nothing_is_written(plan, tmp_path, change, match):
    d = _bad(plan, **change)
    with pytest.raises(ValueError, match=match):
        HP.HeadPlan(d)
    out = tmp_path / "x.json"
    with pytest.raises(ValueError, match=match):
        HP.save_plan(d, out)
    assert list(tmp_path.iterdir()) == []
    # the same hand-edited file on disk: the error names the file and the value
    out.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=match) as err:
        HP.load_plan(out)
    assert str(out) in str(err.value)


def test_corrupt_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"format": "headlab-plan/1", "layers": [')
    with pytest.raises(ValueError, match=f"plan file '{bad}' is not valid JSON"):
        HP.load_plan(bad)


def test_plan_from_entries_refuses_length_beyond_context(gqa):
    with pytest.raises(ValueError, match="length 257 is beyond the model's context: valid lengths are 1..256"):
        HP.plan_from_entries(_entries(), gqa, length=257)
    with pytest.raises(ValueError, match="cannot store pattern"):
        HP.plan_from_entries([[P.power(block=4)] * 3] * 2, gqa, length=32)


def test_nan_scores_become_null(gqa):
    s = [[0.5, float("nan"), 0.0], [1.0, 2.0, float("nan")]]
    p = HP.plan_from_entries(_entries(), gqa, length=40, scores=torch.tensor(s))
    assert p.meta["scores"] == [[0.5, None, 0.0], [1.0, 2.0, None]]


# ---------------------------------------------------------------------------------------- planners
from headlab.sparsify import plans as PL  # noqa: E402
from headlab.sparsify.plans import budget as B  # noqa: E402
from headlab.sparsify.plans import retrieval as PR  # noqa: E402


def _byte_tokenizer():
    """A byte-level tokenizer (256 bytes + <eos>, no merges): one token per ASCII character."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>")
    return tok


def _tiny_lm(layers=3, heads=6, kv=3, d=16):
    return llama(
        vocab_size=260,
        hidden_size=heads * d,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=1024,
        eos_token_id=256,
        bos_token_id=256,
    )


@pytest.mark.parametrize("N", [1, 3, 90])
@pytest.mark.parametrize("n", [100, 8192])
@pytest.mark.parametrize("share", [0.0, 0.6, 1.0])
def test_split_budget_stays_within_and_close_to_the_budget(N, n, share):
    sink, minw = 8, 8
    for b in (0.17, 0.25, 0.35, 0.5, 0.999, 1.0):
        k, w = B.split_budget(N, b, n, full_share=share, sink=sink, min_window=minw)
        assert 0 <= k <= math.floor(share * b * N + 1e-9) and w >= minw
        frac = B.kv_fraction_of(N, k, w, n, sink)
        assert frac <= b + 1e-12
        if k < N and sink + w < n:  # one more key per streaming head would break the budget
            assert B.kv_fraction_of(N, k, w + 1, n, sink) > b


def test_split_budget_errors():
    with pytest.raises(ValueError, match=r"budget 0.01 is below .* valid budgets are \[0.0156, 1\]"):
        B.split_budget(90, 0.01, 8192)
    for bad in (0, 1.5, -0.2, float("nan")):
        with pytest.raises(ValueError, match=r"must be (a number )?in \(0, 1\]"):
            B.split_budget(90, bad, 8192)
    with pytest.raises(ValueError, match="full_share must be in"):
        B.split_budget(90, 0.3, 8192, full_share=1.2)


def test_uniform_and_random_hit_the_budget_and_random_is_seeded(gqa):
    n = 200
    u = PL.make_plan("uniform", gqa, None, budget=0.5, length=n, sink=8, min_window=8)
    assert u.full_heads() == [[], []] and len(u) == 2
    assert u.kv_fraction() <= 0.5 and 0.5 - u.kv_fraction() < 1 / n
    assert u.meta["kv_fraction"] == round(u.kv_fraction(), 6) and u.meta["method"] == "uniform"
    r1 = PL.make_plan("random", gqa, None, budget=0.6, length=n, seed=3, sink=8, min_window=8)
    r2 = PL.make_plan("random", gqa, None, budget=0.6, length=n, seed=3, sink=8, min_window=8)
    assert r1.entries == r2.entries and r1.meta["seed"] == 3
    k, w = B.split_budget(6, 0.6, n, full_share=0.6, sink=8, min_window=8)
    assert sum(map(len, r1.full_heads())) == k == 2
    assert r1.kv_fraction() == pytest.approx(B.kv_fraction_of(6, k, w, n, 8)) and r1.kv_fraction() <= 0.6
    others = {
        json.dumps(PL.make_plan("random", gqa, None, budget=0.6, length=n, seed=s, sink=8, min_window=8).full_heads())
        for s in range(6)
    }
    assert len(others) > 1  # the seed really chooses


def test_make_plan_rejects_bad_input(gqa):
    with pytest.raises(ValueError, match=r"unknown plan method 'magic'; choose one of \['duo', 'moa', 'retrieval'"):
        PL.make_plan("magic", gqa, None, budget=0.3, length=100)
    with pytest.raises(ValueError, match=r"length 257 is beyond the model's context: valid lengths are 1..256"):
        PL.make_plan("uniform", gqa, None, budget=0.3, length=257)
    for b in (0, 1.5):
        with pytest.raises(ValueError, match=rf"KV budget must be in \(0, 1\], got {b}"):
            PL.make_plan("uniform", gqa, None, budget=b, length=100)


def test_missing_profiler_module_is_a_clear_error(gqa, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "headlab.sparsify.plans.moa.planner", None)  # import fails with that name
    with pytest.raises((RuntimeError, ImportError), match="plans.moa.planner"):
        PL.make_plan("moa", gqa, None, budget=0.3, length=100)


class _Case:
    def __init__(self, scores, recall):
        self.scores, self.recall = scores, recall


def test_retrieval_ranks_kv_heads_by_their_query_heads(gqa, tmp_path, monkeypatch):
    # query-head scores (2 layers x 6 heads, KV group 2); one failed case that must be ignored
    s = torch.tensor([[0.0, 0.9, 0.2, 0.2, 0.0, 0.0], [0.5, 0.5, 0.0, 0.3, 0.0, 0.1]])
    calls = []

    def fake_case(model, tok, n, d, k, max_new=24, seed=0):
        calls.append((n, d, k))
        return _Case(s if k == 0 else torch.full_like(s, 5.0), 1.0 if k == 0 else 0.0)

    monkeypatch.setattr(PR, "_retrieval_case_fn", lambda: fake_case)
    kw: dict[str, Any] = dict(length=200, sink=8, min_window=8, cache_dir=tmp_path, lengths=(30,), depths=(0.5,), needles=(0, 1))
    # budget 0.7 with full_share 0.6 -> 2 full KV heads of 6
    p = PL.make_plan("retrieval", gqa, None, budget=0.7, **kw)
    assert p.full_heads() == [[0], [0]]  # max: L0K0 = 0.9, L1K0 = 0.5 beat L0K1 = L1K1 = 0.3 ... ties by order
    assert sum(p.meta["scores"], []) == pytest.approx([0.9, 0.2, 0.0, 0.5, 0.3, 0.1])
    assert p.meta["calibration"]["items"] == 2 and p.meta["calibration"]["successful"] == 1
    assert "pydoc" in p.meta["calibration"]["data"]
    m = PL.make_plan("retrieval", gqa, None, budget=0.7, reduce="mean", **kw)
    assert m.full_heads() == [[0], [0]] and m.meta["scores"][0] == pytest.approx([0.45, 0.2, 0.0])
    assert len(calls) == 2  # the second budget / reduction reused the cached scores
    q = PL.make_plan("retrieval", gqa, None, budget=0.95, **kw)  # 3 full: next is L0K1 (0.2) vs L1K1 (0.3)
    assert q.full_heads() == [[0], [0, 1]]


def test_retrieval_planner_runs_on_a_tiny_model_and_is_deterministic(tmp_path):
    model, tok = _tiny_lm(), _byte_tokenizer()
    kw: dict[str, Any] = dict(
        budget=0.6, length=300, sink=8, min_window=8, lengths=(40,), depths=(0.5,), needles=(0, 2), max_new=4
    )
    ticks = []
    a = PL.make_plan("retrieval", model, tok, cache_dir=tmp_path / "a", progress=lambda *x: ticks.append(x), **kw)
    b = PL.make_plan("retrieval", model, tok, cache_dir=tmp_path / "b", **kw)
    assert a.entries == b.entries and a.meta["scores"] == b.meta["scores"]
    assert ticks[-1][:2] == (2, 2)
    assert a.kv_fraction() <= 0.6 and sum(map(len, a.full_heads())) == B.split_budget(9, 0.6, 300, 0.6, 8, 8)[0]
    assert len(list((tmp_path / "a").glob("retrieval-*.json"))) == 1
    with headlab.attach(model, pattern=a), torch.no_grad():
        model(torch.randint(0, 256, (1, 50)))


@pytest.mark.parametrize(
    "cls, kw, msg",
    [
        (PL.UniformRequest, {"budget": 1.5}, r"KV budget must be in \(0, 1\], got 1.5"),
        (PL.UniformRequest, {"budget": float("nan")}, r"KV budget must be a number in \(0, 1\], got nan"),
        (PL.UniformRequest, {"length": 0}, r"length must be an integer >= 1, got 0"),
        (PL.UniformRequest, {"length": 2.5}, r"length must be an integer >= 1, got 2.5"),
        (PL.UniformRequest, {"seed": "x"}, r"seed must be an integer, got 'x'"),
        (PL.RandomRequest, {"sink": -1}, r"sink must be an integer >= 0, got -1"),
        (PL.RandomRequest, {"min_window": 0}, r"min_window must be an integer >= 1, got 0"),
        (PL.RandomRequest, {"full_share": 1.2}, r"full_share must be in \[0, 1\], got 1.2"),
        (PL.RetrievalRequest, {"reduce": "median"}, r"reduce must be 'max' or 'mean', got 'median'"),
        (PL.RetrievalRequest, {"lengths": (500, 0)}, r"lengths must be integers >= 1, got 0"),
        (PL.RetrievalRequest, {"lengths": ()}, r"lengths must hold at least one integer >= 1"),
        (PL.RetrievalRequest, {"depths": (0.5, 1.5)}, r"depths must be numbers in \[0, 1\], got 1.5"),
        (PL.RetrievalRequest, {"needles": (-1,)}, r"needles must be integers >= 0, got -1"),
        (PL.RetrievalRequest, {"max_new": 0}, r"max_new must be an integer >= 1, got 0"),
    ],
)
def test_planner_requests_refuse_bad_values_naming_value_and_range(cls, kw, msg):
    with pytest.raises(ValueError, match=msg):
        cls(**{"budget": 0.3, "length": 100, **kw})


def test_planner_requests_defaults_and_normalisation():
    import dataclasses

    u = PL.UniformRequest(budget=1, length=100)
    assert (u.budget, u.sink, u.min_window, u.full_share, u.seed) == (1.0, 64, 64, 0.0, 0)
    assert PL.RandomRequest(budget=0.5, length=10).full_share == 0.6
    r = PL.RetrievalRequest(budget=0.5, length=10, lengths=[300], depths=0.5, needles=[0, 1])
    assert (r.lengths, r.depths, r.needles, r.reduce) == ((300,), (0.5,), (0, 1), "max")
    with pytest.raises(dataclasses.FrozenInstanceError):  # a plan's settings do not change under it
        r.budget = 0.9  # type: ignore[misc]


def test_planner_request_drives_the_planner(gqa):
    from headlab.sparsify.plans import uniform

    req = PL.UniformRequest(budget=0.5, length=200, sink=8, min_window=8)
    assert (
        uniform.plan(gqa, None, req).entries
        == PL.make_plan("uniform", gqa, None, budget=0.5, length=200, sink=8, min_window=8).entries
    )
    with pytest.raises(ValueError, match=r"length 257 is beyond the model's context: valid lengths are 1..256"):
        uniform.plan(gqa, None, PL.UniformRequest(budget=0.5, length=257))


# ---------------------------------------------------------------------------------------- CLI
@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "tiny"
    m = _tiny_lm()
    m.config.architectures = ["LlamaForCausalLM"]
    m.save_pretrained(folder)
    _byte_tokenizer().save_pretrained(folder)
    return folder


def test_cli_plan(model_dir, tmp_path):
    from typer.testing import CliRunner

    from headlab.cli.sparsify import app

    out = tmp_path / "plans" / "u.json"
    args = ["plan", "--model", str(model_dir), "--length", "300", "--sink", "8", "--threads", "1"]
    res = CliRunner().invoke(app, args + ["--method", "random", "--kv-budget", "0.5", "--out", str(out), "--name", "tiny-r"])
    assert res.exit_code == 0, res.output
    plan = HP.load_plan(out)
    assert plan.name == "tiny-r" and plan.meta["model"]["name"] == str(model_dir) and plan.meta["method"] == "random"
    assert f"kv_fraction {plan.kv_fraction():.4f}" in res.output and "full KV heads per layer: L0:" in res.output
    bad = tmp_path / "bad.json"
    for extra, msg in (
        (["--method", "magic", "--kv-budget", "0.5"], "magic"),
        (["--method", "uniform", "--kv-budget", "1.5"], "1.5"),
        (["--method", "uniform", "--kv-budget", "0"], "got 0"),
        (["--method", "uniform", "--kv-budget", "0.001"], "valid budgets are"),
        (["--method", "uniform", "--kv-budget", "0.5", "--length", "5000"], "1..1024"),
    ):
        a = list(args)
        if "--length" in extra:
            a[a.index("--length") + 1] = extra[-1]
            extra = extra[:-2]
        res = CliRunner().invoke(app, a + extra + ["--out", str(bad)])
        assert res.exit_code == 2, res.output
        assert msg in res.output
        assert not bad.exists()


def test_shipped_plans_load_by_name():
    """The plans behind the README's sparsity numbers ship inside the package and load by name."""
    from headlab.patterns.headplan import available_plans, load_plan

    assert {"smollm2-135m-4k", "smollm2-135m-8k"} <= set(available_plans())
    for name, n in (("smollm2-135m-4k", 4096), ("smollm2-135m-8k", 8192)):
        plan = load_plan(name)
        assert plan.meta["name"] == name and plan.meta["method"] == "duo" and plan.meta["length"] == n
        assert plan.kv_fraction(n) == pytest.approx(plan.meta["kv_fraction"]) and plan.kv_fraction(n) <= 0.35
        assert len(plan.entries) == 30 and all(len(row) == 3 for row in plan.entries)
