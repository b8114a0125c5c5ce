"""Activation / path patching: exactness on tiny random Llama (GQA) and SmolLM2, batching, bad input."""

from __future__ import annotations

import pytest
import torch
from conftest import _tiny_llama

from headlab import attach
from headlab.edits import ablate, patch, scale_heads
from headlab.edits.patch import Recording
from headlab.measure import patching


@pytest.fixture(scope="module")
def gqa():
    return _tiny_llama(heads=6, kv=2, d=8, layers=3, vocab=97)  # GQA group 3, awkward sizes


def _pair(T=11, B=3, seed=0, vocab=97):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, vocab, (B, T), generator=g)
    corrupt = clean.clone()
    corrupt[:, 1 : T - 1] = torch.randint(0, vocab, (B, T - 2), generator=g)  # same final token
    return clean, corrupt


def _logits(model, ids, edits=(), mask=None):
    with torch.no_grad(), attach(model, edits=list(edits)):
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, -1]


def _plain(model, ids, mask=None):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, -1]


@pytest.mark.parametrize("what", ["output", "weights", "scores"])
def test_patch_every_site_reproduces_clean(gqa, what):
    clean, corrupt = _pair()
    src = patching.record(gqa, clean, what)
    assert torch.allclose(src.logits, _plain(gqa, clean), atol=1e-5)
    if what == "output":  # every head's output, at every position -> the clean final-position logits
        got = _logits(gqa, corrupt, [patch(src, "all")])
        assert torch.allclose(got, _plain(gqa, clean), atol=1e-4)
    # patching a run with its own recording changes nothing
    own = patching.record(gqa, corrupt, what)
    assert torch.allclose(_logits(gqa, corrupt, [patch(own, "all")]), _plain(gqa, corrupt), atol=1e-5)
    # and patching something does change the corrupted run
    assert not torch.allclose(_logits(gqa, corrupt, [patch(src, "L0-1")]), _plain(gqa, corrupt), atol=1e-4)


def test_patch_final_position_only(gqa):
    """In the last layer only the final position's output reaches the final logits, so patching it at
    every position equals patching it at -1; and a negative position counts from the end (8 == -1 at T=9)."""
    clean, corrupt = _pair(T=9)
    src = patching.record(gqa, clean)
    full = _logits(gqa, corrupt, [patch(src, "L2", positions=None)])
    last = _logits(gqa, corrupt, [patch(src, "L2", positions=[-1])])
    assert torch.allclose(full, last, atol=1e-5)  # last layer: only its final-position output reaches the logits
    early = _logits(gqa, corrupt, [patch(src, "L0", positions=[8])])
    assert torch.allclose(early, _logits(gqa, corrupt, [patch(src, "L0", positions=[-1])]), atol=1e-6)


def test_patch_composes_with_other_edits(gqa):
    clean, corrupt = _pair()
    src = patching.record(gqa, clean)
    a = _logits(gqa, corrupt, [patch(src, "L1H2"), ablate("L1H2", mode="zero")])
    b = _logits(gqa, corrupt, [ablate("L1H2", mode="zero")])
    assert torch.allclose(a, b, atol=1e-6)  # the later edit wins
    c = _logits(gqa, corrupt, [scale_heads({(1, 2): 3.0}), patch(src, "L1H2")])
    d = _logits(gqa, corrupt, [patch(src, "L1H2")])
    assert torch.allclose(c, d, atol=1e-5)


def _metric(tok):
    return lambda lg: (lg[:, tok[0]] - lg[:, tok[1]]).mean()


def test_batched_effects_equal_one_at_a_time(gqa):
    clean, corrupt = _pair(T=10, B=2)
    m = _metric((5, 7))
    eff = patching.head_effects(gqa, clean, corrupt, m, batch_heads=4)
    one = patching.head_effects(gqa, clean, corrupt, m, batch_heads=1, skip_layers=False)
    assert eff.shape == (3, 6)
    # by hand, one head; normalised effects are compared as raw metric changes (well conditioned whatever the
    # clean-corrupt gap of this random model)
    src = patching.record(gqa, clean)
    mc, mk = float(m(_plain(gqa, clean))), float(m(_plain(gqa, corrupt)))
    tol = 1e-5 * max(1.0, abs(mc), abs(mk))
    assert torch.allclose(eff * (mc - mk), one * (mc - mk), atol=tol, rtol=0)
    v = float(m(_logits(gqa, corrupt, [patch(src, "L1H4")])))
    assert abs((v - mk) - float(eff[1, 4]) * (mc - mk)) < tol


def test_effects_with_left_padding(gqa):
    clean, corrupt = _pair(T=8, B=2)
    mask = torch.ones_like(clean)
    mask[0, :3] = 0
    m = _metric((3, 4))
    eff = patching.head_effects(gqa, clean, corrupt, m, clean_mask=mask, corrupt_mask=mask, batch_heads=5)
    one = patching.head_effects(gqa, clean, corrupt, m, clean_mask=mask, corrupt_mask=mask, batch_heads=1, skip_layers=False)
    assert torch.allclose(eff, one, atol=1e-4)
    full = patching.head_effects(gqa, clean, corrupt, m, clean_mask=mask, corrupt_mask=mask, sites="L2", full=True)
    assert torch.isnan(full.effects[0]).all() and not torch.isnan(full.effects[2]).any()


def test_path_patching_query(gqa):
    clean, corrupt = _pair(T=9, B=2)
    m = _metric((1, 2))
    pp = patching.path_patch(gqa, clean, corrupt, m, senders="L0", receivers="L2H1", component="q")
    assert pp.shape == (3, 6) and not torch.isnan(pp[0]).any() and torch.isnan(pp[1:]).all()
    # by hand for sender L0H3: run 1 frozen-corrupt + sender clean, keep L2 q_proj; run 2 replace head 1's slice
    clean_r, corrupt_r = patching.record(gqa, clean), patching.record(gqa, corrupt)
    q = gqa.model.layers[2].self_attn.q_proj
    kept = {}
    h1 = q.register_forward_hook(lambda mod, a, out: kept.__setitem__("q", out.clone()))
    _logits(gqa, corrupt, [patch(corrupt_r, "all"), patch(clean_r, "L0H3")])
    h1.remove()

    def put(mod, a, out):
        out = out.clone()
        out[..., 8:16] = kept["q"][..., 8:16]
        return out

    v = float(m(_logits_with_hook(gqa, corrupt, q, put)))
    mc, mk = float(m(_plain(gqa, clean))), float(m(_plain(gqa, corrupt)))
    # compare raw metric changes, not the normalised effect: on a random tiny model the clean-corrupt gap can be
    # ~1e-4, and dividing fp32 noise by it decides the verdict (seen flaky); the raw change is well conditioned
    assert abs((v - mk) - float(pp[0, 3]) * (mc - mk)) < 1e-5 * max(1.0, abs(mc), abs(mk))
    # all senders of layer 0-1 into every receiver's query of layer 2 along with keys and values: together
    # they are every path into layer 2 except the residual's own embedding, so k and v give numbers too
    for comp in ("k", "v"):
        tot = patching.path_patch(gqa, clean, corrupt, m, senders="L0-1", receivers="L2", component=comp, per_sender=False)
        assert isinstance(tot, float)


def _logits_with_hook(model, ids, mod, fn):
    h = mod.register_forward_hook(fn)
    try:
        return _plain(model, ids)
    finally:
        h.remove()


def test_direct_effects_equal_patching_when_last_mlp_is_off():
    """With the last layer's MLP switched off, a last-layer head reaches the logits only directly, so
    its direct effect equals its (full) patching effect."""
    model = _tiny_llama(heads=6, kv=2, d=8, layers=3, vocab=97)
    model.model.layers[2].mlp.down_proj.weight.data.zero_()
    clean, corrupt = _pair(T=9, B=2)
    m = _metric((1, 2))
    res = patching.head_effects(model, clean, corrupt, m, full=True)
    de = patching.direct_effects(model, res.clean_recording, res.corrupt_recording, corrupt, m, res.clean, res.corrupt)
    assert de.shape == (3, 6) and torch.isfinite(de).all()
    assert torch.allclose(de[2], res.effects[2], atol=1e-4)
    assert not torch.allclose(de[0], res.effects[0], atol=1e-3)  # earlier heads also act through later layers


# -- bad input ----------------------------------------------------------------------------------
def test_bad_lengths(gqa):
    clean, _ = _pair(T=9)
    corrupt, _ = _pair(T=10)
    with pytest.raises(ValueError, match="clean prompts have 9 tokens but corrupt prompts have 10"):
        patching.head_effects(gqa, clean, corrupt, _metric((1, 2)))
    src = patching.record(gqa, clean)
    with pytest.raises(ValueError, match="T=9 tokens but this run has T=10"):
        _logits(gqa, corrupt, [patch(src, "L0H0")])
    mask = torch.ones_like(clean)
    mask[0, 0] = 0
    with pytest.raises(ValueError, match="prompt 0: clean has 8 tokens but corrupt has 9"):
        patching.head_effects(gqa, clean, clean, _metric((1, 2)), clean_mask=mask, corrupt_mask=torch.ones_like(clean))


def test_bad_metric(gqa):
    clean, corrupt = _pair()
    with pytest.raises(ValueError, match="does not depend on the model's logits"):
        patching.head_effects(gqa, clean, corrupt, lambda lg: 3.0)
    with pytest.raises(ValueError, match="must return a scalar"):
        patching.head_effects(gqa, clean, corrupt, lambda lg: lg[:, 0])


def test_bad_patch_args(gqa):
    clean, _ = _pair()
    src = patching.record(gqa, clean)
    with pytest.raises(ValueError, match="Recording"):
        patch({"L0H0": 1}, "all")
    with pytest.raises(ValueError, match="src_rows"):
        patch(src, "all", src_rows=[0, 9])
    with pytest.raises(ValueError, match="layers x"):
        patch(src, "all").bind(5, 6)
    with pytest.raises(ValueError, match="not below the lowest receiver layer"):
        patching.path_patch(gqa, clean, _pair()[1], _metric((1, 2)), senders="L2H0", receivers="L1H0")
    assert isinstance(src, Recording) and src.length == 11 and src.lengths() == [11, 11, 11]


@pytest.mark.model
def test_smollm2_patching_exact(smollm2):
    model, tok = smollm2
    clean = tok(["When Mary and John went to the store, John gave a drink to"], return_tensors="pt").input_ids
    corrupt = tok(["When Alice and Bob went to the store, Carl gave a drink to"], return_tensors="pt").input_ids
    assert clean.shape == corrupt.shape
    src = patching.record(model, clean)
    assert torch.allclose(_logits(model, corrupt, [patch(src, "all")]), _plain(model, clean), atol=1e-3)
    own = patching.record(model, corrupt)
    assert torch.allclose(_logits(model, corrupt, [patch(own, "all")]), _plain(model, corrupt), atol=1e-3)
    io, s = tok(" Mary").input_ids[0], tok(" John").input_ids[0]
    m = _metric((io, s))
    a = patching.head_effects(model, clean, corrupt, m, sites="L20-21", batch_heads=18)
    b = patching.head_effects(model, clean, corrupt, m, sites="L20-21", batch_heads=1, skip_layers=False)
    assert torch.allclose(a[20:22], b[20:22], atol=1e-3)
