"""Reference tests for headlab.modules: every mechanism against a direct formula or loop, at awkward
sizes (T = 63, head width 40, 3 heads)."""

from __future__ import annotations

import math

import pytest
import torch

from headlab.modules import (
    MECHANISMS,
    AttSets,
    EfficientProbing,
    GatedAttention,
    LinearAttention,
    MoHAttention,
    MultiHeadAttention,
    MultiLayerTrainablePooling,
    PointerHead,
    PoNetMixer,
    RandomFeatureAttention,
    SigmoidAttention,
    hebbian_read,
    hebbian_write,
    last_token_states,
    linear_attention_parallel,
    linear_attention_recurrent,
    make_mechanism,
    sigmoid_attention,
)

torch.set_num_threads(1)
B, T, H, D_HEAD = 2, 63, 3, 40
D_MODEL = H * D_HEAD


def _x(t=T, d=D_MODEL, seed=0):
    return torch.randn(B, t, d, generator=torch.Generator().manual_seed(seed))


def _qkv(seed=0, t=T, d=D_HEAD):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, t, d, generator=g) for _ in range(3)]


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_registry_shapes_at_odd_sizes(name):
    torch.manual_seed(0)
    m = make_mechanism(name, D_MODEL, H)
    x = _x()
    y = m(x)
    y2, a = m(x, return_weights=True)
    assert y.shape == (B, T, D_MODEL) and a.shape == (B, H, T, T)
    torch.testing.assert_close(y, y2, atol=1e-5, rtol=1e-5)
    assert torch.all(a.triu(1) == 0), "weights must be causal"
    # causality of the output: changing the future does not change the past
    x2 = x.clone()
    x2[:, 40:] += 1.0
    torch.testing.assert_close(m(x2)[:, :40], y[:, :40], atol=1e-5, rtol=1e-5)


def test_registry_rejects_bad_names_and_sizes():
    with pytest.raises(ValueError, match="valid"):
        make_mechanism("nope", 40, 2)
    with pytest.raises(ValueError, match="multiple of n_heads"):
        MultiHeadAttention(40, 3)
    with pytest.raises(ValueError, match="expected x of shape"):
        MultiHeadAttention(40, 2)(torch.randn(2, 5, 41))


def test_softmax_weights_path_matches_sdpa_and_direct_loop():
    torch.manual_seed(0)
    m = MultiHeadAttention(D_MODEL, H)
    x = _x(t=9)
    y, a = m(x, return_weights=True)
    torch.testing.assert_close(m(x), y, atol=1e-5, rtol=1e-5)
    q, k, _ = m.heads(x)
    for i in range(9):
        s = (q[:, :, i : i + 1] @ k[:, :, : i + 1].transpose(-1, -2)).squeeze(2) / math.sqrt(D_HEAD)
        torch.testing.assert_close(a[:, :, i, : i + 1], s.softmax(-1), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("gate", ["elementwise", "headwise"])
def test_gated_with_gate_one_equals_plain_attention(gate):
    torch.manual_seed(0)
    g = GatedAttention(D_MODEL, H, gate=gate)
    plain = MultiHeadAttention(D_MODEL, H)
    plain.load_state_dict({k: v for k, v in g.state_dict().items() if not k.startswith("gate.")})
    x = _x()
    assert not torch.allclose(g(x), plain(x), atol=1e-3)  # the gate does act by default (σ ≈ 0.5)
    with torch.no_grad():
        g.gate.weight.zero_()
        g.gate.bias.fill_(50.0)  # σ(50) == 1 in float32
    torch.testing.assert_close(g(x), plain(x), atol=1e-6, rtol=1e-6)
    assert g.last_gate.shape == (B, H, T, D_HEAD if gate == "elementwise" else 1)


def test_gated_rejects_unknown_gate():
    with pytest.raises(ValueError, match="valid gates"):
        GatedAttention(40, 2, gate="additive")


@pytest.mark.parametrize("normalize", ["none", "sum"])
def test_sigmoid_attention_matches_direct_formula(normalize):
    q, k, v = _qkv(t=11)
    out = sigmoid_attention(q, k, v, causal=True, normalize=normalize)
    for i in range(11):
        w = torch.sigmoid((q[:, :, i : i + 1] @ k[:, :, : i + 1].transpose(-1, -2)) / math.sqrt(D_HEAD))  # (B,H,1,i+1)
        if normalize == "sum":
            w = w / (w.sum(-1, keepdim=True) + 1e-8)
        torch.testing.assert_close(out[:, :, i], (w @ v[:, :, : i + 1]).squeeze(2), atol=1e-5, rtol=1e-5)


def test_sigmoid_module_unnormalised_rows_do_not_sum_to_one():
    torch.manual_seed(0)
    _, w = SigmoidAttention(D_MODEL, H)(_x(), return_weights=True)
    sums = w.sum(-1)
    assert sums[..., -1].mean() > 5  # ~T/2 for σ ≈ 0.5
    _, wn = SigmoidAttention(D_MODEL, H, normalize="sum")(_x(), return_weights=True)
    torch.testing.assert_close(wn.sum(-1), torch.ones_like(wn.sum(-1)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("feature_map,normalize", [("identity", "none"), ("elu1", "none"), ("elu1", "sum")])
def test_linear_attention_parallel_equals_recurrent(feature_map, normalize):
    q, k, v = _qkv(seed=1)
    v = v[..., :17]  # d_v != d_k
    par = linear_attention_parallel(q, k, v, feature_map, normalize)
    rec = linear_attention_recurrent(q, k, v, feature_map, normalize)
    assert par.shape == (B, H, T, 17)
    torch.testing.assert_close(par, rec, atol=1e-4, rtol=1e-4)


def test_hebbian_memory_is_linear_attention_state():
    g = torch.Generator().manual_seed(3)
    keys, vals, qs = torch.randn(63, 40, generator=g), torch.randn(63, 17, generator=g), torch.randn(5, 40, generator=g)
    mem = hebbian_write(keys, vals)
    assert mem.shape == (17, 40)
    direct = torch.stack([sum(vals[j] * (keys[j] @ q) for j in range(63)) for q in qs])
    torch.testing.assert_close(hebbian_read(mem, qs), direct, atol=1e-3, rtol=1e-4)
    # the last step of recurrent linear attention with φ = identity reads the same memory
    q = torch.cat([keys[None, None, :-1], qs[None, None, :1]], 2)
    out = linear_attention_recurrent(q, keys[None, None], vals[None, None], "identity", "none")
    torch.testing.assert_close(out[0, 0, -1], hebbian_read(mem, qs[:1])[0], atol=1e-3, rtol=1e-4)
    with pytest.raises(ValueError, match="share N"):
        hebbian_write(keys, vals[:5])


def test_linear_module_uses_parallel_form():
    torch.manual_seed(0)
    m = LinearAttention(D_MODEL, H)
    x = _x()
    q, k, v = m.heads(x)
    from headlab.modules._heads import merge_heads

    torch.testing.assert_close(m(x), m.out(merge_heads(linear_attention_recurrent(q, k, v))), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("router", ["trainable", "query_norm"])
def test_moh_all_heads_equal_weights_equals_mha(router):
    torch.manual_seed(0)
    n_heads = 5
    moh = MoHAttention(40 * n_heads // 2, n_heads, n_shared=2, top_k=3, router=router)
    mha = MultiHeadAttention(40 * n_heads // 2, n_heads)
    mha.load_state_dict({k: v for k, v in moh.state_dict().items() if k.split(".")[0] in ("qkv", "out")})
    if router == "trainable":
        with torch.no_grad():
            for lin in (moh.w_shared, moh.w_routed, moh.w_balance):
                lin.weight.zero_()
    x = _x(d=100)
    torch.testing.assert_close(moh(x), mha(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(moh.last_gates, torch.ones(B, T, n_heads))


def test_moh_routes_top_k_and_balance_loss():
    torch.manual_seed(0)
    moh = MoHAttention(D_MODEL * 2, 6, n_shared=2, top_k=1, router="trainable")
    x = _x(d=D_MODEL * 2)
    moh(x)
    g = moh.last_gates
    assert g.shape == (B, T, 6)
    assert torch.all((g[..., 2:] > 0).sum(-1) == 1), "exactly top_k routed heads are on"
    assert moh.aux_loss.item() >= 1.0 - 1e-5  # E·Σ f P >= 1 with equality only when balanced
    assert moh.active_fraction == pytest.approx(0.5)
    qn = MoHAttention(D_MODEL * 2, 6, n_shared=2, top_k=2, router="query_norm")
    qn(x)
    assert set(qn.last_gates.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(qn.last_gates.sum(-1) == 4)
    with pytest.raises(ValueError, match="top_k"):
        MoHAttention(40, 4, n_shared=2, top_k=3)
    with pytest.raises(ValueError, match="valid routers"):
        MoHAttention(40, 4, n_shared=2, top_k=1, router="bogus")


def test_ponet_matches_direct_loops():
    torch.manual_seed(0)
    m = PoNetMixer(D_MODEL, H, segment_size=10, window=3)
    x = _x(t=23)
    mask = torch.ones(B, 23, dtype=torch.bool)
    mask[1, 19:] = False
    y = m(x, mask)
    q, k, o, loc, seg = m.proj(x).chunk(5, -1)
    for b in range(B):
        n = int(mask[b].sum())
        ref = torch.zeros(n, D_MODEL)
        vg = torch.zeros(D_MODEL)
        for h in range(H):
            sl = slice(h * D_HEAD, (h + 1) * D_HEAD)
            g = q[b, :n, sl].mean(0)
            a = torch.softmax(torch.stack([g @ k[b, t, sl] for t in range(n)]) / math.sqrt(D_HEAD), 0)
            vg[sl] = sum(a[t] * k[b, t, sl] for t in range(n))
        for t in range(n):
            s0 = (t // 10) * 10
            smp = seg[b, s0 : min(s0 + 10, n)].amax(0)
            lmp = loc[b, max(0, t - 1) : min(n, t + 2)].amax(0)
            ref[t] = (vg + smp) * o[b, t] + lmp
        torch.testing.assert_close(y[b, :n], m.out(ref), atol=1e-5, rtol=1e-5)


def test_efficient_probing_matches_loop():
    torch.manual_seed(0)
    ep = EfficientProbing(D_MODEL, n_classes=7, n_queries=4, d_out=2)  # C=120, C/d_out=60, chunk 15
    x = _x(t=13)
    mask = torch.ones(B, 13, dtype=torch.bool)
    mask[0, 10:] = False
    feat, attn = ep.pool(x, mask)
    assert feat.shape == (B, 60) and attn.shape == (B, 4, 13)
    v = ep.value(x)
    for b in range(B):
        n = int(mask[b].sum())
        parts = []
        for m in range(4):
            a = torch.softmax(torch.stack([ep.queries[m] @ x[b, t] for t in range(n)]) / math.sqrt(D_MODEL), 0)
            parts.append(sum(a[t] * v[b, t, m * 15 : (m + 1) * 15] for t in range(n)))
        torch.testing.assert_close(feat[b], torch.cat(parts), atol=1e-5, rtol=1e-5)
    assert ep(x, mask).shape == (B, 7)
    with pytest.raises(ValueError, match="divisible"):
        EfficientProbing(40, 2, n_queries=3)


def test_attsets_matches_loop_and_is_permutation_invariant():
    torch.manual_seed(0)
    m = AttSets(40)
    x = _x(t=9, d=40)
    y = m(x)
    c = m.score(x)
    for b in range(B):
        for d in range(0, 40, 7):
            w = torch.softmax(c[b, :, d], 0)
            torch.testing.assert_close(y[b, d], (w * x[b, :, d]).sum(), atol=1e-6, rtol=1e-5)
    perm = torch.randperm(9)
    torch.testing.assert_close(m(x[:, perm]), y, atol=1e-6, rtol=1e-5)
    mask = torch.ones(B, 9, dtype=torch.bool)
    mask[:, 6:] = False
    torch.testing.assert_close(m(x, mask), m(x[:, :6]), atol=1e-6, rtol=1e-5)


def test_pointer_head_matches_additive_attention_loop():
    torch.manual_seed(0)
    p = PointerHead(40, 24, d_attn=16)
    enc, dec = _x(t=7, d=40), _x(t=3, d=24, seed=1)
    mask = torch.ones(B, 7, dtype=torch.bool)
    mask[:, 2] = False
    out = p(enc, dec, mask)
    assert out.shape == (B, 3, 7)
    for b in range(B):
        for i in range(3):
            u = torch.stack([p.v.weight[0] @ torch.tanh(p.w1.weight @ enc[b, j] + p.w2.weight @ dec[b, i]) for j in range(7)])
            u[2] = float("-inf")
            torch.testing.assert_close(out[b, i], u.log_softmax(0), atol=1e-5, rtol=1e-5)
    assert torch.all(out[..., 2] == float("-inf"))


def test_mltp_cross_attention_matches_loop_and_outputs_unit_vectors():
    torch.manual_seed(0)
    m = MultiLayerTrainablePooling(n_layers=5, d_model=40, n_latents=3, n_heads=3, d_head=8)
    lat, ctx = torch.randn(B, 3, 40), torch.randn(B, 5, 40)
    out = m.cross_attention(lat, ctx)
    q = m.to_q(lat)
    k, v = m.to_kv(ctx).chunk(2, -1)
    for b in range(B):
        for r in range(3):
            heads = []
            for h in range(3):
                sl = slice(h * 8, (h + 1) * 8)
                a = torch.softmax(torch.stack([q[b, r, sl] @ k[b, j, sl] for j in range(5)]) / math.sqrt(8), 0)
                heads.append(sum(a[j] * v[b, j, sl] for j in range(5)))
            torch.testing.assert_close(out[b, r], m.to_out(torch.cat(heads)), atol=1e-5, rtol=1e-5)
    emb = m(ctx)
    assert emb.shape == (B, 40)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(B))
    hs = tuple(torch.randn(B, 6, 40) for _ in range(5))
    st = last_token_states(hs, torch.tensor([[1] * 6, [1] * 4 + [0] * 2]))
    torch.testing.assert_close(st[1, 2], hs[2][1, 3])
    torch.testing.assert_close(st[0, 4], hs[4][0, 5])


def test_random_feature_attention_freezes_qk():
    m = RandomFeatureAttention(D_MODEL, H, seed=3)
    names = {n for n, _ in m.named_parameters()}
    assert not any("w_q" in n or "w_k" in n for n in names)
    torch.testing.assert_close(RandomFeatureAttention(D_MODEL, H, seed=3).w_q, m.w_q)
    x = _x()
    y = m(x)
    y.sum().backward()
    assert m.value.weight.grad is not None


def _loop_attention(q_all, k_all, v_all, n_heads, causal=True):
    """Direct per-position, per-head softmax attention on (B, T, D) projections; returns (B, T, D) head outputs."""
    b, t, dm = q_all.shape
    d = dm // n_heads
    out = torch.zeros(b, t, dm)
    for h in range(n_heads):
        sl = slice(h * d, (h + 1) * d)
        for i in range(t):
            j = i + 1 if causal else t
            s = torch.einsum("bd,bjd->bj", q_all[:, i, sl], k_all[:, :j, sl])
            out[:, i, sl] = torch.einsum("bj,bjd->bd", (s / math.sqrt(d)).softmax(-1), v_all[:, :j, sl])
    return out


@pytest.mark.parametrize("gate", ["elementwise", "headwise"])
def test_gated_attention_matches_g1_formula_with_random_gate(gate):
    """Y' = W_O · concat_h(softmax(q_h k_hᵀ/√d) v_h ⊙ σ(x W_θ + b_θ)_h), with a non-trivial random gate."""
    torch.manual_seed(4)
    m = GatedAttention(D_MODEL, H, gate=gate)
    with torch.no_grad():
        m.gate.weight.normal_(0, 0.3)
        m.gate.bias.uniform_(-2, 2)
    x = _x(t=13, seed=5)
    q, k, v = (x @ w.T + bb for w, bb in zip(m.qkv.weight.chunk(3), m.qkv.bias.chunk(3)))
    o = _loop_attention(q, k, v, H)  # (B, T, D)
    g = torch.sigmoid(x @ m.gate.weight.T + m.gate.bias).detach()  # (B, T, H·d) or (B, T, H)
    if gate == "headwise":
        g = g.repeat_interleave(D_HEAD, dim=-1)
    want = (o * g) @ m.out.weight.T + m.out.bias
    y, a = m(x, return_weights=True)
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(m(x), want, atol=1e-5, rtol=1e-4)  # SDPA path too
    assert float(g.std()) > 0.1 and float(g.mean()) < 0.9  # the gate really varies


def test_random_feature_attention_matches_formula():
    """y = W_out · concat_h(softmax((x W_q)_h (x W_k)_hᵀ/√d) (x W_v + b)_h) + b_out with the frozen random W_q, W_k."""
    m = RandomFeatureAttention(D_MODEL, H, seed=7)
    with torch.no_grad():
        m.value.bias.uniform_(-1, 1)
        m.out.bias.uniform_(-1, 1)
    x = _x(t=17, seed=2)
    o = _loop_attention(x @ m.w_q, x @ m.w_k, x @ m.value.weight.T + m.value.bias, H)
    want = o @ m.out.weight.T + m.out.bias
    y, a = m(x, return_weights=True)
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(m(x), want, atol=1e-5, rtol=1e-4)
    assert torch.allclose(a.sum(-1), torch.ones(B, H, 17)) and float(a[0, 0, 0, 1:].abs().sum()) == 0.0
    g = torch.Generator().manual_seed(7)
    torch.testing.assert_close(m.w_q, torch.randn(D_MODEL, D_MODEL, generator=g) / D_MODEL**0.5)  # N(0, 1/D)
