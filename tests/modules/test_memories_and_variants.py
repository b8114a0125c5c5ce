"""Miras memories, the selective SSM (DSF) and the Deconstructing-Attention variants against their direct
formulas / recurrences at awkward sizes."""

import math

import pytest
import torch

from headlab.modules.deconstruct import (
    EmbeddingTap,
    FixedSeqAttention,
    FormAttention,
    NoMixing,
    RandomEmbAttention,
    StaticEmbAttention,
    layer_stack,
    relu_len_weights,
    taylor_weights,
    variant_factory,
)
from headlab.modules.linear import linear_attention_parallel
from headlab.modules.miras import VARIANTS, MirasMemory, miras_chunked, miras_recurrent, write_read_weights
from headlab.modules.softmax import softmax_weights
from headlab.modules.ssm import SelectiveSSM, ssm_chunked, ssm_parallel, ssm_recurrent, ssm_weights, to_dsf

B, H, T, DK, DV = 2, 3, 23, 5, 7


def _miras_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(B, H, T, DK, generator=g), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(B, H, T, DK, generator=g), dim=-1)
    v = torch.randn(B, H, T, DV, generator=g)
    alpha = 0.5 + 0.5 * torch.rand(B, H, T, generator=g)
    eta = 0.1 + 0.9 * torch.rand(B, H, T, generator=g)
    return q, k, v, alpha, eta


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_miras_chunk1_equals_recurrence(variant):
    bias, ret = VARIANTS[variant]
    args = _miras_inputs()
    torch.testing.assert_close(miras_chunked(*args, bias, ret, chunk=1), miras_recurrent(*args, bias, ret), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 4, 7, 23, 64])
def test_miras_dot_bias_is_decayed_linear_attention_for_any_chunk(chunk):
    q, k, v, alpha, eta = _miras_inputs(1)
    rec = miras_recurrent(q, k, v, alpha, eta, "dot", "l2")
    torch.testing.assert_close(miras_chunked(q, k, v, alpha, eta, "dot", "l2", chunk), rec, atol=1e-5, rtol=1e-5)
    # direct formula: y_t = sum_{s<=t} (prod_{r=s+1..t} alpha_r) eta_s (q_t.k_s) v_s
    direct = torch.zeros_like(rec)
    for t in range(T):
        for s in range(t + 1):
            w = alpha[:, :, s + 1 : t + 1].prod(-1) * eta[:, :, s] * (q[:, :, t] * k[:, :, s]).sum(-1)
            direct[:, :, t] += w[..., None] * v[:, :, s]
    torch.testing.assert_close(rec, direct, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(write_read_weights(q, k, alpha, eta) @ v, rec, atol=1e-5, rtol=1e-5)
    ones = torch.ones(B, H, T)
    lin = linear_attention_parallel(q, k, v, feature_map="identity", normalize="none")
    torch.testing.assert_close(miras_recurrent(q, k, v, ones, ones, "dot", "l2"), lin, atol=1e-5, rtol=1e-5)


def test_miras_one_step_by_hand():
    """Two tokens, written out: W_1 = -eta_1 psi(-v_1) k_1^T; W_2 = alpha_2 W_1 - eta_2 psi(W_1 k_2 - v_2) k_2^T."""
    q, k, v, alpha, eta = (x[:, :, :2] for x in _miras_inputs(2))
    psis = {"l2": lambda e: e, "lp": lambda e: 3 * e.sign() * e.abs() ** 2, "huber": lambda e: e.clamp(-1, 1)}
    for bias, psi in psis.items():
        k1, k2, v1, v2 = k[:, :, 0], k[:, :, 1], v[:, :, 0], v[:, :, 1]
        w1 = -eta[:, :, 0, None, None] * psi(-v1)[..., None] * k1[..., None, :]
        e2 = (w1 @ k2[..., None]).squeeze(-1) - v2
        w2 = alpha[:, :, 1, None, None] * w1 - eta[:, :, 1, None, None] * psi(e2)[..., None] * k2[..., None, :]
        want = torch.stack([(w1 @ q[:, :, 0, :, None]).squeeze(-1), (w2 @ q[:, :, 1, :, None]).squeeze(-1)], 2)
        torch.testing.assert_close(miras_recurrent(q, k, v, alpha, eta, bias, "l2"), want, atol=1e-5, rtol=1e-5)


def test_memora_memory_stays_on_the_simplex_and_moneta_is_bounded():
    q, k, v, alpha, eta = _miras_inputs(3)
    # with q = a basis vector the read is one column of W; summing the reads over the basis gives row sums
    eye = torch.eye(DK)
    rows = 0
    for i in range(DK):
        qi = eye[i].expand(B, H, T, DK)
        rows = rows + miras_recurrent(qi, k, v, alpha, eta, "l2", "kl")
    torch.testing.assert_close(rows, torch.ones_like(rows), atol=1e-5, rtol=1e-5)
    big = miras_recurrent(q, k, 50 * v, alpha, eta, "lp", "lq")
    assert torch.isfinite(big).all()


def test_miras_module_shapes_causality_and_errors():
    torch.manual_seed(0)
    for variant in VARIANTS:
        m = MirasMemory(42, 3, variant, chunk=5)
        x = torch.randn(2, 19, 42)
        y, w = m(x, return_weights=True)
        assert y.shape == x.shape and w.shape == (2, 3, 19, 19) and torch.all(w.triu(1) == 0)
        x2 = x.clone()
        x2[:, 11:] += 1
        torch.testing.assert_close(m(x2)[:, :11], y[:, :11], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="variant"):
        MirasMemory(42, 3, "titans")
    with pytest.raises(ValueError, match="alpha and eta"):
        q, k, v, a, e = _miras_inputs()
        miras_recurrent(q, k, v, a[:, :, :-1], e)
    with pytest.raises(ValueError, match="bias"):
        miras_chunked(*_miras_inputs(), bias="cosine")


def _ssm_inputs(seed=0, n=6, zero_a=False, unit_delta=False):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(B, H, T, DV, generator=g)
    delta = torch.ones(B, H, T, DV) if unit_delta else torch.nn.functional.softplus(torch.randn(B, H, T, DV, generator=g))
    b, c = torch.randn(B, H, T, n, generator=g), torch.randn(B, H, T, n, generator=g)
    a = torch.zeros(H, DV, n) if zero_a else -torch.rand(H, DV, n, generator=g) * 2
    return u, delta, b, c, a


@pytest.mark.parametrize("chunk", [1, 5, 16, 40])
def test_ssm_recurrent_parallel_chunked_agree(chunk):
    args = _ssm_inputs()
    rec = ssm_recurrent(*args)
    torch.testing.assert_close(ssm_parallel(*args), rec, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ssm_chunked(*args, chunk=chunk), rec, atol=1e-4, rtol=1e-4)


def test_ssm_equals_linear_attention_exactly_when_lambda_is_one_and_step_is_one():
    """DSF: with A = 0 (Λ_t = 1) and Δ = 1 the selective SSM is unnormalised linear attention with keys B and
    queries C; with a forgetting A < 0 (or a varying step) it is not."""
    u, delta, b, c, a = _ssm_inputs(1, zero_a=True, unit_delta=True)
    lin = linear_attention_parallel(c, b, u, feature_map="identity", normalize="none")
    torch.testing.assert_close(ssm_recurrent(u, delta, b, c, a), lin, atol=1e-4, rtol=1e-4)
    u2, d2, b2, c2, a2 = _ssm_inputs(1, zero_a=False, unit_delta=True)
    assert not torch.allclose(ssm_recurrent(u, delta, b, c, a2), lin, atol=1e-2)
    _, d3, _, _, _ = _ssm_inputs(1, zero_a=True, unit_delta=False)
    assert not torch.allclose(ssm_recurrent(u, d3, b, c, a), lin, atol=1e-2)
    lam, bb, cc = to_dsf(d2, b2, c2, a2)
    assert lam.shape == (B, H, T, DV, 6) and bool((lam > 0).all() and (lam <= 1).all())
    assert torch.equal(to_dsf(delta, b, c, a)[0], torch.ones_like(lam))


def test_ssm_weights_are_the_attention_matrix_for_one_channel():
    g = torch.Generator().manual_seed(4)
    u = torch.randn(B, H, T, 1, generator=g)
    delta = torch.rand(B, H, T, 1, generator=g) + 0.1
    b, c = torch.randn(B, H, T, 4, generator=g), torch.randn(B, H, T, 4, generator=g)
    a = -torch.rand(H, 1, 4, generator=g)
    w = ssm_weights(delta, b, c, a)
    assert torch.all(w.triu(1) == 0)
    torch.testing.assert_close(w @ u, ssm_recurrent(u, delta, b, c, a), atol=1e-4, rtol=1e-4)


def test_ssm_module_and_errors():
    torch.manual_seed(0)
    m = SelectiveSSM(42, 3, d_state=5, chunk=7)
    x = torch.randn(2, 19, 42)
    y, w = m(x, return_weights=True)
    m.chunk = 0
    torch.testing.assert_close(m(x), y, atol=1e-5, rtol=1e-5)  # scan == chunk-parallel in the module
    assert y.shape == x.shape and w.shape == (2, 3, 19, 19)
    with pytest.raises(ValueError, match=r"a must be \(H, d_v, n\)"):
        u, d, b, c, a = _ssm_inputs()
        ssm_recurrent(u, d, b, c, a[:, :-1])
    with pytest.raises(ValueError, match="chunk"):
        ssm_chunked(*_ssm_inputs(), chunk=0)


def _qk(seed=0, t=T, d=DK):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, t, d, generator=g), torch.randn(B, H, t, d, generator=g)


def test_taylor_and_relu_forms_by_formula():
    q, k = _qk()
    s = q @ k.transpose(-1, -2) / math.sqrt(DK)
    mask = torch.ones(T, T).tril()
    raw = (1 + s + s * s / 2) * mask
    torch.testing.assert_close(taylor_weights(q, k), raw / raw.sum(-1, keepdim=True))
    rl = torch.relu(s) * mask / torch.arange(1, T + 1)[:, None]
    torch.testing.assert_close(relu_len_weights(q, k), rl)
    torch.testing.assert_close(relu_len_weights(q, k, causal=False), torch.relu(s) / T)
    # Taylor approximates softmax when scores are small, relu-len does not
    qs, ks = q * 0.05, k * 0.05
    sm = softmax_weights(qs, ks)
    assert (taylor_weights(qs, ks) - sm).abs().max() < 1e-4
    assert (relu_len_weights(qs, ks) - sm).abs().max() > 0.1


def test_variants_relax_what_they_say():
    torch.manual_seed(0)
    x = torch.randn(2, 17, 42)
    x2 = x.clone()
    x2[:, :8] += 3.0
    # no mixing: output at i depends on x_i only
    nm = NoMixing(42, 3)
    torch.testing.assert_close(nm(x2)[:, 8:], nm(x)[:, 8:])
    assert torch.equal(nm(x, return_weights=True)[1][0, 0], torch.eye(17))
    # fixed-seq: the weights do not depend on the input
    fs = FixedSeqAttention(42, 3)
    torch.testing.assert_close(fs(x, return_weights=True)[1], fs(x2, return_weights=True)[1])
    fa = FormAttention(42, 3, "taylor")
    y, a = fa(x, return_weights=True)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 3, 17))
    # static-emb: weights come from the tapped embeddings, not from x
    tap = EmbeddingTap()
    emb = torch.nn.Embedding(257, 42)
    tap.attach(emb)
    ids = torch.randint(0, 257, (2, 17))
    emb(ids)
    se = StaticEmbAttention(42, 3, tap)
    torch.testing.assert_close(se(x, return_weights=True)[1], se(x2, return_weights=True)[1])
    re = RandomEmbAttention(42, 3, tap)
    assert not any(p is re.code for p in re.parameters())
    torch.testing.assert_close(re(x, return_weights=True)[1], re(x2, return_weights=True)[1])
    with pytest.raises(ValueError, match="tap holds"):
        se(torch.randn(2, 5, 42))
    with pytest.raises(ValueError, match="empty"):
        StaticEmbAttention(42, 3, EmbeddingTap())(x)
    with pytest.raises(ValueError, match="tap="):
        variant_factory("static-emb")
    with pytest.raises(ValueError, match="valid"):
        variant_factory("nope")
    with pytest.raises(ValueError, match="form"):
        FormAttention(42, 3, "cosine")


def test_layer_stack_builds_hybrid_tiny_lm():
    from headlab.lab import tiny_lm

    tap = EmbeddingTap()
    names = ["softmax", "rnd-emb", "softmax", "static-emb"]
    lm = tiny_lm(layer_stack(names, tap), layers=4, d_model=24, heads=2, max_len=32)
    tap.attach(lm.tok)
    kinds = [type(b.mix).__name__ for b in lm.blocks]
    assert kinds == ["MultiHeadAttention", "RandomEmbAttention", "MultiHeadAttention", "StaticEmbAttention"]
    logits, ws = lm(torch.randint(0, 257, (2, 31)), return_weights=True)
    assert logits.shape == (2, 31, 257) and all(w.shape == (2, 2, 31, 31) for w in ws)
    with pytest.raises(ValueError, match="one more"):
        tiny_lm(layer_stack(["softmax"]), layers=2, d_model=24, heads=2)


@pytest.mark.parametrize("chunk", [1, 6, 23, 50])
def test_linear_chunked_is_gated_linear_attention(chunk):
    """Scalar-Λ DSF case: equals Miras' dot-product memory with eta = 1 (direct recurrence) and, with Λ = 1,
    unnormalised linear attention."""
    from headlab.modules.ssm import linear_chunked

    q, k, v, alpha, _ = _miras_inputs(5)
    ones = torch.ones(B, H, T)
    want = miras_recurrent(q, k, v, alpha, ones, "dot", "l2")
    torch.testing.assert_close(linear_chunked(q, k, v, alpha.log(), chunk), want, atol=1e-5, rtol=1e-5)
    lin = linear_attention_parallel(q, k, v, feature_map="identity", normalize="none")
    torch.testing.assert_close(linear_chunked(q, k, v, None, chunk), lin, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="log_decay"):
        linear_chunked(q, k, v, alpha[:, :, :3].log())
