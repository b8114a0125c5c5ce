"""Edits (headlab.edits) against direct dense computations, no-op identity, composition, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import llama

import headlab
from headlab import edits as E
from headlab.edits.base import Edit
from headlab.engine.attend import attend, make_context

torch.set_num_threads(1)
B, H, HKV, T, D = 2, 6, 2, 13, 10  # awkward sizes: GQA 3, odd T, d=10


def qkv(seed=0, pad=2):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=g) * 1.5
    k = torch.randn(B, HKV, T, D, generator=g) * 1.5
    v = torch.randn(B, HKV, T, D, generator=g)
    m = torch.ones(B, 1, T, T, dtype=torch.bool)
    m[1, :, :, :pad] = False  # row 1 left-padded with `pad` tokens
    m = m & torch.ones(T, T, dtype=torch.bool).tril()  # pad query rows see nothing
    return q, k, v, m


def run_edit(edits, layer=0, n_layers=1, state=None, chunk=4, seed=0):
    q, k, v, m = qkv(seed)
    ctx = make_context(q, k, True, m, layer=layer, n_layers=n_layers, state=state or {})
    return attend(q, k, v, attn_mask=m, edits=edits, ctx=ctx, chunk=chunk, path="eager")


def dense(fs=None, fa=None, fo=None, seed=0):
    """Hand-written dense attention in float64 with hooks on S, A, o; returns o and the context."""
    q, k, v, m = qkv(seed)
    ke = k.double().repeat_interleave(H // HKV, 1)
    ve = v.double().repeat_interleave(H // HKV, 1)
    s = q.double() @ ke.transpose(-1, -2) / math.sqrt(D)
    s = s.masked_fill(~m, float("-inf"))
    kp, qp = headlab.engine.masks.positions_from_mask(m, B, T, T)
    if fs:
        s = fs(s, kp, qp)
    a = torch.nan_to_num(torch.softmax(s, -1), nan=0.0)
    if fa:
        a = fa(a, kp, qp)
    o = a @ ve
    if fo:
        o = fo(o, kp, qp)
    return o.float(), kp, qp


def valid_rows(kp_qp=None):
    _, _, _, m = qkv()
    kp, qp = headlab.engine.masks.positions_from_mask(m, B, T, T)
    return qp >= 0  # (B, T)


def close(a, b, atol=1e-5):
    ok = valid_rows()[:, None, :, None]
    assert torch.allclose(torch.where(ok, a, 0), torch.where(ok, b, 0), atol=atol), (a - b).abs().max()


# ---------------------------------------------------------------- stage edits vs direct formulas
def test_scale_heads_and_zero_ablation():
    def fo(o, kp, qp):
        o = o.clone()
        o[:, 2] *= 3.0
        o[:, 4] = 0
        return o

    close(run_edit([E.scale_heads({(0, 2): 3.0}), E.ablate([(0, 4)], mode="zero")]), dense(fo=fo)[0])


def test_uniform_ablation_is_mean_of_visible_values():
    out = run_edit([E.ablate("L0H1", mode="uniform")])
    q, k, v, m = qkv()
    ve = v.repeat_interleave(3, 1)
    for b in range(B):
        for t in range(T):
            vis = m[b, 0, t]
            if valid_rows()[b, t]:
                assert torch.allclose(out[b, 1, t], ve[b, 1, vis].mean(0), atol=1e-5)


def test_zerotuning_matches_scaling_first_real_token_and_renormalising():
    g = {(0, 0): 2.5, (0, 5): 0.3}

    def fa(a, kp, qp):
        a = a.clone()
        for h, gam in ((0, 2.5), (5, 0.3)):
            for b in range(B):
                j = int((kp[b] == 0).nonzero()[0])
                a[b, h, :, j] *= gam
            a[:, h] = a[:, h] / a[:, h].sum(-1, keepdim=True).clamp_min(1e-300)
        return a

    close(run_edit([E.zerotuning(gamma=g)]), dense(fa=fa)[0])


def test_act_against_loop_computation():
    beta, thr = 0.4, 0.05

    def fa(a, kp, qp):
        a = a.clone()
        for b in range(B):
            for h in range(H):
                # alpha_k over queries that can see k
                alpha = torch.zeros(T, dtype=torch.float64)
                for kk in range(T):
                    rows = [i for i in range(T) if qp[b, i] >= 0 and kp[b, kk] >= 0 and kp[b, kk] <= qp[b, i]]
                    if rows:
                        alpha[kk] = a[b, h, rows, kk].mean()
                sinks = [kk for kk in range(T) if alpha[kk] > thr and kp[b, kk] > 0]
                for i in range(T):
                    row = a[b, h, i].clone()
                    sm = row[sinks].sum()
                    rest = row.clone()
                    rest[sinks] = 0
                    if sm > 0 and rest.sum() > 0:
                        new = rest + beta * (row - rest) + (1 - beta) * sm * rest / rest.sum()
                        a[b, h, i] = new
        return a

    out = run_edit([E.act("all", beta=beta, thr=thr)], chunk=3)  # needs_all_queries overrides the chunk
    close(out, dense(fa=fa)[0])


def test_act_rows_still_sum_to_one_and_sinks_keep_beta():
    q, k, v, m = qkv()
    ctx = make_context(q, k, True, m)
    a = torch.softmax(torch.randn(B, H, T, T).masked_fill(~m, float("-inf")), -1).nan_to_num(0.0)
    from headlab.edits.act import calibrate_rows, hidden_sinks

    sink = hidden_sinks(a, ctx, 0.05)
    assert not sink[:, :, 0].any() and not sink[1, :, :2].any()  # position 0 and pads never sinks
    new = calibrate_rows(a, sink, 0.25)
    rows = a.sum(-1) > 0
    assert torch.allclose(new.sum(-1)[rows], torch.ones_like(new.sum(-1)[rows]), atol=1e-5)
    mk = sink[:, :, None, :].expand_as(a)
    changed = (new != a).any(-1, keepdim=True).expand_as(a)
    assert torch.allclose(new[mk & changed], 0.25 * a[mk & changed], atol=1e-6)


def test_identity_blend():
    u = 0.7

    def fa(a, kp, qp):
        a = a.clone()
        eye = (kp[:, None, :] == qp[:, :, None]).double()
        for h in (1, 3):
            a[:, h] = (1 - u) * a[:, h] + u * eye
        return a

    close(run_edit([E.identity_blend([(0, 1), (0, 3)], u=u)]), dense(fa=fa)[0])


def test_redistribute_against_loop():
    grp, p, share = [2, 3, 4, 5], 0.5, 0.05

    def fa(a, kp, qp):
        a = a.clone()
        for b in range(B):
            for h in range(H):
                for i in range(T):
                    if qp[b, i] <= 5:
                        continue
                    g = [j for j in range(T) if int(kp[b, j]) in grp]
                    s = [j for j in range(T) if int(kp[b, j]) == 0]
                    row = a[b, h, i]
                    if row[g].sum() < share or row[s].sum() == 0 or row[g].sum() == 0:
                        continue
                    freed = (1 - p) * row[s].sum()
                    new = row.clone()
                    new[s] = p * row[s]
                    new[g] = row[g] + freed * row[g] / row[g].sum()
                    a[b, h, i] = new
        return a

    e = E.redistribute(grp, sites="all", p=p, min_share=share)
    close(run_edit([e]), dense(fa=fa)[0])


def test_redistribute_group_by_name_from_state():
    e1 = E.redistribute([2, 3], sites="all", p=0.2, min_share=0.0)
    e2 = E.redistribute("ctx", sites="all", p=0.2, min_share=0.0)
    a = run_edit([e1])
    b = run_edit([e2], state={"groups": {"ctx": [[2, 3], [2, 3]]}})
    assert torch.equal(a, b)
    assert not torch.allclose(a, run_edit([Edit("all")]))
    with pytest.raises(ValueError, match="not found in ctx.state"):
        run_edit([E.redistribute("missing", sites="all")])


def test_emphasis_last_row_only():
    alpha, grp = 0.7, [1, 2, 6]

    def fs(s, kp, qp):
        s = s.clone()
        last = qp.amax(1)
        for b in range(B):
            i = int((qp[b] == last[b]).nonzero()[0])
            for j in range(T):
                if int(kp[b, j]) in grp and torch.isfinite(s[b, :, i, j]).all():
                    s[b, :, i, j] = s[b, :, i, j] + alpha * s[b, :, i, j].abs()
        return s

    out = run_edit([E.emphasis(grp, sites="all", alpha=alpha)])
    close(out, dense(fs=fs)[0])
    base = run_edit([Edit("all")])
    assert torch.equal(out[:, :, :-1], base[:, :, :-1])  # only the last row changed


def test_span_exit_masks_group_after_layer():
    grp = [3, 4]

    def fs(s, kp, qp):
        s = s.clone()
        for b in range(B):
            for j in range(T):
                if int(kp[b, j]) in grp:
                    rows = qp[b] != kp[b, j]
                    s[b, :, rows, j] = float("-inf")
        return s

    e = E.span_exit(grp, after_layer=1)
    close(run_edit([e], layer=2, n_layers=4), dense(fs=fs)[0])
    assert torch.equal(run_edit([e], layer=1, n_layers=4), run_edit([Edit("all")], layer=1, n_layers=4))


def test_inject_only_at_last_prompt_token():
    mu = {(0, 2): torch.arange(D, dtype=torch.float32)}
    e = E.inject(mu, theta=0.0)  # alpha = 0.5

    def fo(o, kp, qp):
        o = o.clone()
        o[:, 2, -1] = 0.5 * o[:, 2, -1] + 0.5 * torch.arange(D, dtype=torch.float64)
        return o

    close(run_edit([e]), dense(fo=fo)[0])


def test_mean_ablation_uses_given_means_and_requires_them():
    mu = torch.linspace(-1, 1, D)
    out = run_edit([E.ablate([(0, 3)], mode="mean", means={(0, 3): mu})])
    assert torch.allclose(out[:, 3], mu.expand(B, T, D))
    with pytest.raises(ValueError, match="calibrate"):
        run_edit([E.ablate([(0, 3)], mode="mean")])


# ---------------------------------------------------------------- tiny model through attach
@pytest.fixture(scope="module")
def tiny():
    m = llama(
        vocab_size=61,
        hidden_size=60,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    ids = torch.randint(0, 61, (2, 17))
    am = torch.ones_like(ids)
    am[1, :4] = 0
    return m, ids, am


def logits(m, ids, am, edits, state=None):
    with torch.no_grad(), headlab.attach(m, edits=edits, state=state or {}):
        return m(input_ids=ids, attention_mask=am).logits


NOOPS = [
    lambda: E.scale_heads({(1, 2): 1.0, (0, 0): 1.0}),
    lambda: E.zerotuning(gamma={(0, 1): 1.0, (2, 5): 1.0}),
    lambda: E.zerotuning(1.0, sites="all"),
    lambda: E.act("all", beta=1.0),
    lambda: E.identity_blend("all", u=0.0),
    lambda: E.redistribute([1, 2, 3], p=1.0),
    lambda: E.emphasis([1, 2], alpha=0.0),
    lambda: E.span_exit([1, 2], after_layer=2),
    lambda: E.inject({(1, 1): torch.ones(10)}, theta=float("-inf")),
    lambda: E.reinforce([(0, 1)], alpha=1.0),
]


@pytest.mark.parametrize("make", NOOPS)
def test_noop_settings_give_identical_logits(tiny, make):
    m, ids, am = tiny
    ref = logits(m, ids, am, [Edit("all")])  # same (eager) path, no change
    assert torch.equal(logits(m, ids, am, [make()]), ref)


def test_scale_heads_equals_scaling_o_proj_columns(tiny):
    m, ids, am = tiny
    d = 10
    got = logits(m, ids, am, [E.scale_heads({(1, 4): 0.5}), E.ablate("L2", mode="zero")])
    import copy

    m2 = copy.deepcopy(m)
    with torch.no_grad():
        m2.model.layers[1].self_attn.o_proj.weight[:, 4 * d : 5 * d] *= 0.5
        m2.model.layers[2].self_attn.o_proj.weight.zero_()
        ref = m2(input_ids=ids, attention_mask=am).logits
    ok = am.bool()
    assert torch.allclose(got[ok], ref[ok], atol=1e-5)


def test_mean_ablation_calibrated_by_recorder(tiny):
    from headlab.measure.record import HeadRecorder

    m, ids, am = tiny
    rec = HeadRecorder([(1, 3)], "all")
    logits(m, ids, am, [rec])
    mu = rec.means()["L1H3"]
    # direct: mean of o over valid queries, captured by a hook on o_proj's input
    cap = {}
    h = m.model.layers[1].self_attn.o_proj.register_forward_pre_hook(lambda mod, x: cap.setdefault("x", x[0]))
    with torch.no_grad():
        m(input_ids=ids, attention_mask=am)
    h.remove()
    x = cap["x"][..., 30:40][am.bool()]  # head 3 slice, valid tokens
    assert torch.allclose(mu, x.mean(0), atol=1e-5)
    e = E.ablate([(1, 3)], mode="mean", means={"L1H3": mu})
    out = logits(m, ids, am, [e])
    assert not torch.allclose(out, logits(m, ids, am, [Edit("all")]))


class _DigitTokenizer:
    """Minimal tokenizer for the measurement helpers: text "3 14 5" -> ids [3, 14, 5]."""

    padding_side = "right"
    pad_token = "0"
    eos_token = "0"

    def __call__(
        self, texts, return_tensors=None, padding=False, truncation=False, max_length=None, return_offsets_mapping=False
    ):
        rows = [[int(w) for w in t.split()] for t in texts]
        n = max(len(r) for r in rows)
        pad = lambda r, v: [v] * (n - len(r)) + r if self.padding_side == "left" else r + [v] * (n - len(r))  # noqa: E731
        return {
            "input_ids": torch.tensor([pad(r, 0) for r in rows]),
            "attention_mask": torch.tensor([pad([1] * len(r), 0) for r in rows]),
        }


def test_measured_vectors_for_edits_come_from_the_measure_layer(tiny):
    from headlab.measure import calibrate_mean_ablation, context_sensitivity, record_head_outputs, task_embedding

    m, _, _ = tiny
    tok = _DigitTokenizer()
    texts = ["3 14 5 9 2", "7 1 8", "11 12 13 14 15 16"]
    e = calibrate_mean_ablation(E.ablate([(1, 3), (2, 0)], mode="mean"), m, tok, texts, batch_size=2)
    direct = record_head_outputs(m, tok, texts, [(1, 3), (2, 0)], where="all", batch_size=3)
    assert set(e.config()["params"]["means"]) == {"L1H3", "L2H0"}
    for k, v in direct.items():  # batching does not change the mean over real tokens
        assert torch.allclose(torch.tensor(e.config()["params"]["means"][k]), v, atol=1e-5)
    with pytest.raises(ValueError, match="needs an ablate"):
        calibrate_mean_ablation(E.ablate([(1, 3)], mode="zero"), m, tok, texts)
    mu = task_embedding(m, tok, texts, sites="L1", batch_size=2)
    assert sorted(mu) == [f"L1H{h}" for h in range(6)] and mu["L1H0"].shape == (10,)
    same = context_sensitivity(m, tok, texts, texts)
    assert same.shape == (3, 6) and float(same.abs().max()) < 1e-5
    diff = context_sensitivity(m, tok, texts, ["3 14", "7", "11 12"])
    assert float(diff.min()) > 0
    with pytest.raises(ValueError, match="same non-zero number"):
        context_sensitivity(m, tok, texts, texts[:1])


def test_composition_order_is_list_order_per_stage(tiny):
    m, ids, am = tiny
    zt, uni = E.zerotuning(gamma={(1, 2): 4.0}), E.ablate([(1, 2)], mode="uniform")
    only_uni = logits(m, ids, am, [uni])
    assert torch.equal(logits(m, ids, am, [zt, uni]), only_uni)  # later scores edit wins
    assert not torch.allclose(logits(m, ids, am, [uni, zt]), only_uni)  # ln(gamma) added after zeroing
    s1, s2 = E.scale_heads({(0, 1): 2.0}), E.ablate([(0, 1)], mode="zero")
    a, b = logits(m, ids, am, [s1, s2]), logits(m, ids, am, [s2, s1])
    assert torch.equal(a, b)
    # stages run scores -> weights -> output whatever the list order
    ib, zz = E.identity_blend([(1, 0)], u=1.0), E.ablate([(1, 0)], mode="uniform")
    assert torch.allclose(logits(m, ids, am, [ib, zz]), logits(m, ids, am, [zz, ib]))


def test_config_round_trip(tiny):
    m, ids, am = tiny
    eds = [
        E.zerotuning(gamma={(0, 1): 1.7}),
        E.act({1: [0, 2]}, beta=0.3),
        E.ablate("L2H1", mode="uniform"),
        E.redistribute([1, 2, 3], p=0.5, min_share=0.0),
        E.identity_blend([(1, 1)], u=0.4),
        E.emphasis([4, 5], alpha=0.5),
        E.span_exit([2], after_layer=1),
        E.scale_heads({(2, 3): 0.0}),
        E.inject({(1, 1): torch.ones(10)}, theta={(1, 1): 0.3}),
        E.reinforce([(0, 2), (1, 5)], alpha=2.0),
        E.ablate([(0, 4)], mode="mean", means={(0, 4): torch.ones(10)}),
    ]
    ref = logits(m, ids, am, eds)
    text = json.dumps(E.to_config(eds))
    back = E.from_config(text)
    assert [e.name for e in back] == [e.name for e in eds]
    assert torch.equal(logits(m, ids, am, back), ref)
    for e in back:
        assert e.name in e.describe()


# ---------------------------------------------------------------- selectors and errors
def test_atlas_selectors(tmp_path):
    recs = [
        {
            "layer": l,
            "head": h,
            "sink": float(l * 10 + h),
            "retrieval": float(h == 2) * 0.3 + l * 0.01,
            "roles": (["retrieval"] if h == 2 else []),
        }
        for l in range(4)
        for h in range(3)
    ]
    (tmp_path / "heads.json").write_text(json.dumps(recs))
    r = E.resolve("retrieval", 4, 3, atlas=tmp_path)
    assert r == {l: [2] for l in range(4)}
    assert E.resolve("sink:top2", 4, 3, atlas=tmp_path / "heads.json") == {3: [1, 2]}
    assert E.resolve("sink:bottom1,L1H1", 4, 3, atlas=recs) == {0: [0], 1: [1]}
    assert E.resolve("sink<2", 4, 3, atlas=recs) == {0: [0, 1]}
    rnd = E.resolve("random:5:3", 4, 3)
    assert sum(map(len, rnd.values())) == 5 and rnd == E.resolve("random:5:3", 4, 3)
    e = E.ablate("retrieval:top3", mode="zero", atlas=recs).bind(4, 3)
    assert e.sites == {1: [2], 2: [2], 3: [2]}
    with pytest.raises(ValueError, match="no such role"):
        E.resolve("inductoin", 4, 3, atlas=recs)
    with pytest.raises(ValueError, match="metric 'nope' not in the atlas"):
        E.resolve("nope:top3", 4, 3, atlas=recs)
    with pytest.raises(ValueError, match="outside this model"):
        E.resolve("retrieval", 2, 3, atlas=recs)
    with pytest.raises(ValueError, match="needs a head atlas: pass atlas="):
        E.resolve("retrieval", 4, 3)


@pytest.mark.parametrize(
    "make, msg",
    [
        (lambda: E.zerotuning(gamma={(0, 1): 0.0}), r"gamma\[\(0, 1\)\]=0.0 out of range"),
        (lambda: E.zerotuning(gamma={(0, 1): float("nan")}), "not finite"),
        (lambda: E.zerotuning(-1.0), "gamma=-1.0 out of range"),
        (lambda: E.act(beta=1.5), r"act beta=1.5 out of range; valid range \[0.0, 1.0\]"),
        (lambda: E.identity_blend(u=-0.1), "identity_blend u=-0.1 out of range"),
        (lambda: E.redistribute(p=2), "redistribute p=2 out of range"),
        (lambda: E.ablate("L1", mode="half"), "mode='half' is not one of"),
        (lambda: E.scale_heads({}), "non-empty dict"),
        (lambda: E.scale_heads({(1,): 2.0}), "bad site"),
        (lambda: E.span_exit(after_layer=-1), "after_layer=-1"),
        (lambda: E.emphasis(rows="first"), "rows='first'"),
        (lambda: E.from_config([{"edit": "frobnicate"}]), "unknown edit 'frobnicate'"),
    ],
)
def test_bad_parameters(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


def test_bad_sites_at_bind(tiny):
    m, ids, am = tiny
    with pytest.raises(ValueError, match=r"layer 7 out of range: valid layers are 0..2"):
        logits(m, ids, am, [E.scale_heads({(7, 0): 2.0})])
    with pytest.raises(ValueError, match=r"head 9 out of range: valid heads are 0..5"):
        logits(m, ids, am, [E.ablate([(1, 9)])])
    with pytest.raises(ValueError, match="after_layer=5 out of range"):
        logits(m, ids, am, [E.span_exit([1], after_layer=5)])
    with pytest.raises(ValueError, match="token positions must be >= 0"):
        logits(m, ids, am, [E.redistribute([-1, 2], p=0.5)])
