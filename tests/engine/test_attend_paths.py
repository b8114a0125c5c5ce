"""Engine paths (SDPA, lse statistics, chunked eager) against the dense reference."""

import sys

import pytest
import torch

import headlab
from headlab.engine.attend import make_context
from headlab.engine.masks import causal_mask
from headlab.probes import make_probe

ENGINE = sys.modules["headlab.engine.attend"]
METRICS = ["sink", "sink_rate", "entropy", "prev_token", "distance"]


def qkv(B=2, H=3, Hkv=1, T=63, S=63, d=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, d, generator=g)
    k = torch.randn(B, Hkv, S, d, generator=g)
    v = torch.randn(B, Hkv, S, d, generator=g)
    return q, k, v


def left_pad_mask(B, T, S, pads):
    m = torch.ones(B, 1, T, S, dtype=torch.bool) & causal_mask(T, S)
    for b, p in enumerate(pads):
        m[b, :, :, :p] = False
        m[b, :, : max(0, p - (S - T))] = False  # pad queries see nothing
    return m


def direct_metrics(a, key_pos, query_pos, causal=True):
    """Formulas applied to full weights a (B,H,T,S): pooled means over valid queries."""
    B, H, T, S = a.shape
    out = {}
    valid = query_pos >= 0
    first = (key_pos == 0).float().argmax(-1)
    sink = torch.stack([a[b, :, :, first[b]] for b in range(B)])
    ent = -(torch.special.xlogy(a, a)).sum(-1)
    qabs = torch.arange(S - T, S)
    prev = a[:, :, torch.arange(T), (qabs - 1).clamp(min=0)]
    if causal:
        dist = query_pos[:, None, :].double() - torch.einsum("bhts,bs->bht", a.double(), key_pos.clamp(min=0).double())
    else:
        rel = (query_pos[:, :, None] - key_pos.clamp(min=0)[:, None, :]).abs().double()  # (B, T, S)
        dist = torch.einsum("bhts,bts->bht", a.double(), rel)

    def pooled(x, mask):
        w = mask[:, None, :].double()
        return (x.double() * w).sum((0, 2)) / w.sum((0, 2))

    out["sink"] = pooled(sink, valid)
    out["entropy"] = pooled(ent, valid)
    out["prev_token"] = pooled(prev, query_pos >= 1)
    out["distance"] = pooled(dist, valid)
    alpha = (sink.double() * valid[:, None]).sum(-1) / valid.sum(-1)[:, None]
    out["sink_rate"] = (alpha > 0.3).double().mean(0)
    return out


def make_case(case, seed=0):
    """q, k, v, mask, causal for B=2, 3 query heads over 1 KV head, S=63, d=40."""
    B, H, Hkv, d, S = 2, 3, 1, 40, 63
    T = 1 if case == "decode" else S
    q, k, v = qkv(B, H, Hkv, T, S, d, seed=seed)
    mask = left_pad_mask(B, T, S, [5, 0]) if case == "padded" else None
    return q, k, v, mask, case != "bidirectional"


@pytest.mark.parametrize("path", ["sdpa", "stats", "eager"])
@pytest.mark.parametrize("case", ["prefill", "padded", "decode", "bidirectional"])
def test_paths_match_reference(path, case):
    q, k, v, mask, causal = make_case(case)
    B, H, T, _ = q.shape
    ref = headlab.reference_attention(q, k, v, causal=causal, attn_mask=mask)
    probes = [make_probe(m) for m in METRICS if causal or m != "distance"] if path == "stats" else []
    out = headlab.attend(q, k, v, causal=causal, attn_mask=mask, probes=probes, path=path, chunk=7)
    valid = torch.ones(B, T, dtype=torch.bool) if mask is None else mask[:, 0].any(-1)
    assert torch.allclose(out[valid.unsqueeze(1).expand(B, H, T)], ref[valid.unsqueeze(1).expand(B, H, T)], atol=1e-5)


@pytest.mark.parametrize("path", ["stats", "eager"])
@pytest.mark.parametrize("case", ["prefill", "padded", "decode", "bidirectional"])
def test_probe_metrics_match_formulas(path, case):
    q, k, v, mask, causal = make_case(case, seed=1)
    q = q * 3  # sharper attention
    _, a = headlab.reference_attention(q, k, v, causal=causal, attn_mask=mask, return_weights=True)
    ctx = make_context(q, k, causal, mask)
    want = direct_metrics(a, ctx.key_pos, ctx.query_pos, causal)
    metrics = METRICS
    if path == "stats" and not causal:  # |i - j| has no closed form next to SDPA
        with pytest.raises(ValueError, match="closed form"):
            headlab.attend(q, k, v, causal=False, probes=["distance"], path="stats")
        metrics = [m for m in METRICS if m != "distance"]
    probes = [make_probe(m) for m in metrics]
    headlab.attend(q, k, v, causal=causal, attn_mask=mask, probes=probes, path=path, chunk=10, ctx=ctx)
    for p in probes:
        got = p.result()[0].double()
        assert torch.allclose(got, want[p.name], atol=1e-4, equal_nan=True), (p.name, got, want[p.name])


def test_chunk_size_does_not_change_result():
    q, k, v = qkv()
    a = headlab.attend(q, k, v, path="eager", chunk=5)
    b = headlab.attend(q, k, v, path="eager", chunk=63)
    assert torch.allclose(a, b, atol=1e-6)


def test_private_flash_op_returns_logsumexp():
    """The stats path relies on this private op; if torch changes it this test says so."""
    q, k, v = qkv(1, 3, 3, 63, 63, 40)
    o, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True, scale=0.2)
    s = (q @ k.transpose(-1, -2) * 0.2).masked_fill(~causal_mask(63, 63), float("-inf"))
    assert torch.allclose(lse, s.logsumexp(-1), atol=1e-4)
    assert torch.allclose(o, s.softmax(-1) @ v, atol=1e-5)


def test_path_selection():
    probes = [make_probe("sink")]
    q = torch.zeros(1, 1, 1, 1)
    assert ENGINE.select_path(q, [], [], None, None) == "sdpa"
    assert ENGINE.select_path(q, [], probes, None, None) == "stats"

    from headlab.probes import Probe

    class SlowProbe(Probe):
        fast_needs = None

    assert ENGINE.select_path(q, [], [SlowProbe()], None, None) == "eager"


@pytest.mark.parametrize(
    "bad",
    [
        (torch.zeros(2, 3, 5), torch.zeros(2, 1, 5, 4), torch.zeros(2, 1, 5, 4)),
        (torch.zeros(1, 3, 9, 4), torch.zeros(1, 1, 5, 4), torch.zeros(1, 1, 5, 4)),
        (torch.zeros(1, 3, 5, 4), torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4)),
        (torch.zeros(1, 3, 5, 4), torch.zeros(1, 1, 5, 8), torch.zeros(1, 1, 5, 8)),
    ],
)
def test_bad_shapes_name_the_shapes(bad):
    with pytest.raises(ValueError, match=r"\("):
        headlab.attend(*bad)


def test_bad_arguments_name_the_value():
    q, k, v = qkv(1, 3, 1, 6, 6, 8)
    with pytest.raises(ValueError, match=r"chunk must be a positive number of queries \(1\.\.6\), got 0"):
        headlab.attend(q, k, v, path="eager", chunk=0)
    with pytest.raises(ValueError, match=r"must broadcast to \(B, 1\|H, T, S\) = \(1, 1\|3, 6, 6\)"):
        headlab.attend(q, k, v, attn_mask=torch.ones(6, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="cannot run edits or probes"):
        headlab.attend(q, k, v, probes=["sink"], path="sdpa")
    # a key-padding mask (B, 1, 1, S) broadcasts over queries
    m = torch.ones(1, 1, 1, 6, dtype=torch.bool)
    m[..., 0] = False
    ref = headlab.reference_attention(q, k, v, attn_mask=m.expand(1, 1, 6, 6))
    assert torch.allclose(headlab.attend(q, k, v, attn_mask=m, path="eager")[:, :, 1:], ref[:, :, 1:], atol=1e-5)
    # probe names are accepted like in attach
    assert headlab.attend(q, k, v, probes=["sink"]).shape == q.shape


def test_unknown_path():
    q, k, v = qkv(1, 1, 1, 4, 4, 8)
    with pytest.raises(ValueError, match="unknown path"):
        headlab.attend(q, k, v, path="warp")
