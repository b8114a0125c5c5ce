"""Plug-ins as plain functions: edits.on_scores/on_weights/on_output, probes.mean, patterns.from_mask_mod
and Pattern.mask_mod (both directions against dense masks and FlexAttention's create_mask /
create_block_mask), and plug-ins by registry name in attach."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask, create_mask

from headlab import edits, patterns, probes
from headlab.engine.attend import attend
from headlab.engine.hf import attach
from headlab.engine.plugins import EDITS

B, H, HKV, T, D = 2, 3, 1, 63, 40


def _qkv(seed=0, t=T, s=T):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, t, D, generator=g)
    k = torch.randn(B, HKV, s, D, generator=g)
    v = torch.randn(B, HKV, s, D, generator=g)
    return q, k, v


def _dense(q, k, v, score_fn=None, weight_fn=None, out_fn=None):
    """Plain dense causal attention with per-head hooks (head index -> transform)."""
    ke, ve = k.repeat_interleave(H // HKV, 1), v.repeat_interleave(H // HKV, 1)
    s = q @ ke.transpose(-1, -2) / math.sqrt(D)
    tq, sk = q.shape[2], k.shape[2]
    causal = torch.arange(sk)[None, :] <= torch.arange(sk - tq, sk)[:, None]
    s = s.masked_fill(~causal, float("-inf"))
    if score_fn:
        s = score_fn(s)
    a = torch.softmax(s, -1)
    if weight_fn:
        a = weight_fn(a)
    o = a @ ve
    return out_fn(o) if out_fn else o


def _on_head(h, fn):
    def f(x):
        x = x.clone()
        x[:, h] = fn(x[:, h])
        return x

    return f


def test_on_scores_matches_dense_reference_on_selected_head_only():
    q, k, v = _qkv()
    e = edits.on_scores(lambda s, ctx: s / 2.0, sites="L0H1").bind(1, H)
    got = attend(q, k, v, edits=[e], chunk=17)
    want = _dense(q, k, v, score_fn=_on_head(1, lambda s: s / 2.0))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    plain = _dense(q, k, v)
    assert not torch.allclose(got[:, 1], plain[:, 1], atol=1e-4)  # the edit did something on head 1
    torch.testing.assert_close(got[:, [0, 2]], plain[:, [0, 2]], atol=1e-5, rtol=1e-5)  # and nothing elsewhere


def test_on_weights_and_on_output_match_dense_reference():
    q, k, v = _qkv(1)
    sharpen = lambda a: a**2 / (a**2).sum(-1, keepdim=True)
    ew = edits.on_weights(lambda a, ctx: sharpen(a), sites={0: [0, 2]}).bind(1, H)
    eo = edits.on_output(lambda o, ctx: -o, sites=[(0, 2)]).bind(1, H)
    got = attend(q, k, v, edits=[ew, eo], chunk=10)
    want = _dense(q, k, v, weight_fn=lambda a: _on_head(2, sharpen)(_on_head(0, sharpen)(a)), out_fn=_on_head(2, lambda o: -o))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_function_edit_equals_class_edit_in_a_model(tiny_llama):
    ids = torch.randint(0, 101, (2, 29), generator=torch.Generator().manual_seed(0))
    with attach(tiny_llama, edits=[edits.scale_heads({(1, 2): 0.25})]):
        want = tiny_llama(ids).logits
    with attach(tiny_llama, edits=[edits.on_output(lambda o, ctx: o * 0.25, sites="L1H2")]) as run:
        got = tiny_llama(ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert run.calls == 2


def test_function_edit_errors():
    with pytest.raises(ValueError, match="needs a function"):
        edits.on_scores("not a function")
    q, k, v = _qkv()
    bad = edits.on_scores(lambda s, ctx: s[..., :3], sites="L0H0").bind(1, H)
    with pytest.raises(ValueError, match=r"shape \(2, 3, \d+, 63\)"):
        attend(q, k, v, edits=[bad])
    with pytest.raises(ValueError, match="only headlab.edits factories"):
        edits.to_config([edits.on_output(lambda o, ctx: o)])
    with pytest.raises(ValueError):  # site out of range names the valid range
        edits.on_output(lambda o, ctx: o, sites="L5H0").bind(2, 3)


def test_mean_probe_equals_builtin_entropy_with_padding(tiny_llama):
    ids = torch.randint(0, 101, (2, 33), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :7] = 0  # left padding in row 1
    ent = probes.mean(lambda a, ctx: -torch.special.xlogy(a, a).sum(-1), name="my_entropy")
    with attach(tiny_llama, probes=["entropy", ent]) as run:
        tiny_llama(ids, attention_mask=mask)
    st = run.stats()
    assert set(st) == {"entropy", "my_entropy"}
    assert st["my_entropy"].shape == (2, 3)
    torch.testing.assert_close(st["my_entropy"], st["entropy"], atol=1e-4, rtol=1e-4)


def test_mean_probe_checks_its_function():
    with pytest.raises(ValueError, match="needs a function"):
        probes.mean(3)
    q, k, v = _qkv()
    bad = probes.mean(lambda a, ctx: a.sum(-1).sum(-1), name="bad")
    bad.reset(1, H)
    with pytest.raises(ValueError, match=r"\(B, H, Tc\)"):
        attend(q, k, v, probes=[bad])


def _sliding(w):
    def sliding_window_causal(b, h, q_idx, kv_idx):  # attention-gym style mask_mod
        return (q_idx >= kv_idx) & (q_idx - kv_idx < w)

    return sliding_window_causal


def _per_head_band(b, h, q_idx, kv_idx):
    return (q_idx >= kv_idx) & (q_idx - kv_idx < 4 * (h + 1))


def _dense_of(fn, heads, t, s):
    out = torch.zeros(heads, t, s, dtype=torch.bool)
    for h in range(heads):
        for i in range(t):
            for j in range(s):
                out[h, i, j] = bool(fn(torch.tensor(0), torch.tensor(h), torch.tensor(s - t + i), torch.tensor(j)))
    return out


@pytest.mark.parametrize("t,s", [(63, 63), (17, 41)])
def test_from_mask_mod_matches_elementwise_mask(t, s):
    p = patterns.from_mask_mod(_sliding(7))
    torch.testing.assert_close(p.mask(t, s), _dense_of(_sliding(7), 1, t, s))
    torch.testing.assert_close(p.mask(t, s), patterns.window(7).mask(t, s))
    ph = patterns.from_mask_mod(_per_head_band, n_heads=3)
    torch.testing.assert_close(ph.mask(t, s), _dense_of(_per_head_band, 3, t, s))
    assert 0 < ph.density(t, s) < 1


def test_from_mask_mod_runs_in_a_model_like_the_builtin(tiny_llama):
    ids = torch.randint(0, 101, (1, 45), generator=torch.Generator().manual_seed(2))
    with attach(tiny_llama, pattern=patterns.sink_window(2, 9)):
        want = tiny_llama(ids).logits
    gym = lambda b, h, q, kv: (q >= kv) & ((q - kv < 9) | (kv < 2))
    with attach(tiny_llama, pattern=patterns.from_mask_mod(gym)):
        got = tiny_llama(ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with attach(tiny_llama, pattern=patterns.from_mask_mod(gym), probes=["sink"]):  # eager path too
        got2 = tiny_llama(ids).logits
    torch.testing.assert_close(got2, want, atol=1e-5, rtol=1e-5)


def test_from_mask_mod_rejects_non_bool():
    p = patterns.from_mask_mod(lambda b, h, q, kv: (q - kv).float())
    with pytest.raises(ValueError, match="bool"):
        p.mask(5, 5)


_PATTERNS = {
    "window": lambda: patterns.window(5),
    "sink_window": lambda: patterns.sink_window(3, 6),
    "moa": lambda: patterns.moa([(4, 0.1), (2, 0.3), (8, 0.0)], sink=1, kv_per_head=True),
    "power": lambda: patterns.power(block=8),
    "per_head_kv": lambda: patterns.per_head(
        [patterns.window(4), patterns.causal(), patterns.sink_window(2, 3)], kv_per_head=True
    ),
    "mask_mod": lambda: patterns.from_mask_mod(_per_head_band, n_heads=6),
}


@pytest.mark.parametrize("name", sorted(_PATTERNS))
@pytest.mark.parametrize("t,s", [(63, 63), (23, 50)])
def test_pattern_mask_mod_through_flex_create_mask(name, t, s):
    p = _PATTERNS[name]()
    nh, nkv = 6, 3
    fn = p.mask_mod(s, t, n_heads=nh, n_kv_heads=nkv)
    dense = p.for_heads(nh, nkv).mask(t, s).expand(nh, t, s)
    got = create_mask(fn, 1, nh, t, s, device="cpu")[0]
    torch.testing.assert_close(got, dense)
    block = 16
    bm = create_block_mask(fn, None, nh, t, s, device="cpu", BLOCK_SIZE=block)
    layout = p.for_heads(nh, nkv).block_layout(t, s, block).expand(nh, -1, -1)
    got_blocks = bm.to_dense()[0].bool()[:, : layout.shape[1], : layout.shape[2]]
    torch.testing.assert_close(got_blocks, layout)


def test_pattern_mask_mod_causal_and_errors():
    p = patterns.from_mask_mod(lambda b, h, q, kv: (q - kv).abs() < 3)  # bidirectional band
    fn = p.mask_mod(20, causal=True)
    torch.testing.assert_close(create_mask(fn, 1, 1, 20, 20, device="cpu")[0, 0], patterns.window(3).mask(20, 20)[0])
    with pytest.raises(ValueError, match="dynamic"):
        patterns.topk_blocks().mask_mod(32)
    with pytest.raises(ValueError, match="per KV head"):
        _PATTERNS["per_head_kv"]().mask_mod(32)
    with pytest.raises(ValueError, match="q_len"):
        patterns.window(3).mask_mod(10, 11)


def test_attach_accepts_names_for_patterns_and_edits(tiny_llama):
    ids = torch.randint(0, 101, (1, 21), generator=torch.Generator().manual_seed(3))
    plain = tiny_llama(ids).logits
    with attach(tiny_llama, pattern="causal"):
        torch.testing.assert_close(tiny_llama(ids).logits, plain, atol=1e-5, rtol=1e-5)
    with attach(tiny_llama, pattern={0: "causal", 1: ["causal"]}):
        torch.testing.assert_close(tiny_llama(ids).logits, plain, atol=1e-5, rtol=1e-5)
    with attach(tiny_llama, pattern="power"):
        by_name = tiny_llama(ids).logits
    with attach(tiny_llama, pattern=patterns.power()):
        torch.testing.assert_close(tiny_llama(ids).logits, by_name)
    EDITS.register("halve_all_outputs", _Halve)
    try:
        with attach(tiny_llama, edits=["halve_all_outputs"]):
            by_name = tiny_llama(ids).logits
    finally:
        EDITS.unregister("halve_all_outputs")
    with attach(tiny_llama, edits=[edits.on_output(lambda o, ctx: o / 2)]):
        torch.testing.assert_close(by_name, tiny_llama(ids).logits)
    assert not torch.allclose(by_name, plain)
    with pytest.raises(ValueError, match="window.*arguments"), attach(tiny_llama, pattern="window"):
        pass
    with pytest.raises(ValueError, match="valid edit names"), attach(tiny_llama, edits=["no_such_edit"]):
        pass


class _Halve(edits.Edit):
    name = "halve_all_outputs"

    def output(self, o, ctx):
        return o / 2
