"""Property test: every engine path equals the dense reference at random awkward sizes."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import headlab
from headlab.probes import make_probe


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 2),
    kv=st.integers(1, 3),
    group=st.integers(1, 3),
    T=st.integers(1, 33),
    extra=st.integers(0, 9),
    d=st.sampled_from([8, 20, 40]),
    causal=st.booleans(),
    pad=st.integers(0, 4),
    chunk=st.integers(1, 16),
    seed=st.integers(0, 10_000),
)
def test_engine_equals_reference(B, kv, group, T, extra, d, causal, pad, chunk, seed):
    H, S = kv * group, T + extra
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, d, generator=g)
    k = torch.randn(B, kv, S, d, generator=g)
    v = torch.randn(B, kv, S, d, generator=g)
    mask = None
    if pad and pad < S - 1:
        mask = torch.ones(B, 1, T, S, dtype=torch.bool)
        mask[0, :, :, :pad] = False  # row 0: first `pad` keys are padding
        qpad = max(0, pad - (S - T))
        mask[0, :, :qpad, :] = False  # and its pad queries see nothing
    ref = headlab.reference_attention(q, k, v, causal=causal, attn_mask=mask)
    rows = torch.ones(B, H, T, dtype=torch.bool)
    if mask is not None:
        rows[0, :, : max(0, pad - (S - T))] = False
    for path in ("sdpa", "stats", "eager"):
        probes = [make_probe("sink"), make_probe("entropy")] + [make_probe("distance")] * causal if path == "stats" else []
        out = headlab.attend(q, k, v, causal=causal, attn_mask=mask, path=path, probes=probes, chunk=chunk)
        assert torch.allclose(out[rows], ref[rows], atol=2e-5), path
