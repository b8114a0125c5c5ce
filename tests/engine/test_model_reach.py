"""Model reach: sliding-window layers (Mistral, Gemma 2/3), logit soft-capping (Gemma 2) and learned
sink logits (gpt-oss) on every engine path, against the dense reference and against the models' own
eager attention (tiny random models from their configs, no download)."""

from __future__ import annotations

import pytest
import torch

import headlab  # noqa: F401  (registers probes, edits, patterns)
from headlab.engine import attend as attend_mod
from headlab.engine.attend import attend
from headlab.engine.hf import attach
from headlab.engine.lse import BACKENDS, attention_lse
from headlab.engine.reference import reference_attention
from headlab.probes import HeadMapProbe, make_probe

PROBES = ("sink", "entropy", "prev_token", "distance")
T_LONG = 23  # longer than every window below


# ---------------------------------------------------------------- formulas on explicit weights


def formulas(a: torch.Tensor, key_pos: torch.Tensor, query_pos: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each probe's formula on weights ``a (B, H, T, S)`` (queries = last T keys): (H,) means over
    valid queries. key_pos (B, S), query_pos (B, T): positions from each row's first real token, -1 pads."""
    a = a.double()
    B, H, T, S = a.shape
    valid = query_pos >= 0  # (B, T)
    first = (key_pos == 0).double().argmax(-1)  # (B,)
    sink = a[torch.arange(B), :, :, first] * (key_pos == 0).any(-1).double()[:, None, None]  # (B, H, T); 0 if gone
    prev_idx = torch.arange(S - T, S) - 1
    prev = a[:, :, torch.arange(T), prev_idx.clamp(min=0)]
    ent = -torch.special.xlogy(a, a).sum(-1)
    dist = (a * (query_pos[:, None, :, None] - key_pos[:, None, None, :]).double()).sum(-1)

    def mean(x, ok):
        w = ok[:, None, :].double()
        return (torch.where(w > 0, x, 0.0) * w).sum((0, 2)) / w.sum((0, 2))

    return {
        "sink": mean(sink, valid),
        "prev_token": mean(prev, valid & (query_pos >= 1)),
        "entropy": mean(ent, valid),
        "distance": mean(dist, valid),
    }


def _positions(mask: torch.Tensor, T: int, S: int):
    from headlab.engine.masks import positions_from_mask

    return positions_from_mask(mask, mask.shape[0] if mask is not None else 1, T, S)


# ---------------------------------------------------------------- engine against the reference

VARIANTS = [
    {"window": 5},
    {"softcap": 1.5},
    {"sinks": "rand"},
    {"window": 4, "sinks": "rand"},
    {"window": 7, "softcap": 2.0, "sinks": "rand"},
]


def _qkv(B=2, H=3, Hkv=1, T=63, S=70, d=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, d, generator=g)
    k = torch.randn(B, Hkv, S, d, generator=g) * 1.5
    v = torch.randn(B, Hkv, S, d, generator=g)
    return q, k, v


def _pad_mask(B, T, S, pads=(0, 9)):
    """(B, 1, T, S) bool: row b has pads[b] left pad keys (and queries), causal elsewhere."""
    from headlab.engine.masks import causal_mask

    m = causal_mask(T, S)[None, None].repeat(B, 1, 1, 1)
    for b, p in enumerate(pads):
        m[b, :, :, :p] = False
        m[b, :, : max(0, p - (S - T)), :] = False
    return m


def _variant(spec, H):
    out = dict(spec)
    if out.get("sinks") == "rand":
        out["sinks"] = torch.linspace(-1.0, 2.5, H)
    return out


@pytest.mark.parametrize("spec", VARIANTS, ids=lambda s: "+".join(s))
@pytest.mark.parametrize("padded", [False, True])
def test_paths_match_reference_and_probe_formulas(spec, padded):
    q, k, v = _qkv()
    B, H, T, _ = q.shape
    S = k.shape[2]
    kw = _variant(spec, H)
    mask = _pad_mask(B, T, S) if padded else None
    ref, a = reference_attention(q, k, v, attn_mask=mask, return_weights=True, **kw)
    if "sinks" in kw:  # the sink logit takes mass: the kept weights sum to < 1
        assert float(a[0, :, -1].sum(-1).max()) < 0.999
    kp, qp = _positions(mask, T, S) if padded else _positions(None, T, S)
    want = formulas(a, kp.expand(B, S), qp.expand(B, T))
    valid = (qp.expand(B, T) >= 0)[:, None, :, None]
    # nothing attached
    out = attend(q, k, v, attn_mask=mask, **kw)
    torch.testing.assert_close(torch.where(valid, out, 0.0), torch.where(valid, ref, 0.0), atol=2e-5, rtol=1e-4)
    # probes: the statistics path (each LSE backend) where it applies, and the chunked eager path
    paths = [("eager", None)] + ([("stats", b) for b in BACKENDS] if "softcap" not in kw else [])
    for path, backend in paths:
        probes = [make_probe(n) for n in PROBES]
        for p in probes:
            p.reset(1, H)
        out = attend(q, k, v, attn_mask=mask, probes=probes, path=path, lse_backend=backend, chunk=16, **kw)
        torch.testing.assert_close(torch.where(valid, out, 0.0), torch.where(valid, ref, 0.0), atol=2e-5, rtol=1e-4)
        for p in probes:
            torch.testing.assert_close(
                p.result()[0].double(),
                want[p.name],
                atol=5e-5,
                rtol=1e-4,
                msg=lambda m, p=p, path=path, backend=backend: f"{p.name} on {path}/{backend}: {m}",
            )


def test_window_includes_the_diagonal_and_w_keys():
    q, k, v = _qkv(B=1, T=12, S=12)
    _, a = reference_attention(q, k, v, window=3, return_weights=True)
    seen = (a[0, 0] > 0).sum(-1)
    assert seen.tolist() == [1, 2] + [3] * 10  # query p sees p-2, p-1, p


@pytest.mark.parametrize("backend", BACKENDS)
def test_lse_backends_match_logsumexp(backend):
    q, k, v = _qkv(B=2, H=3, Hkv=3, T=17, S=29, d=24)
    mask = _pad_mask(2, 17, 29, pads=(0, 15))
    mask[1, :, 3] = False  # a row with no visible key
    from headlab.engine.masks import causal_mask

    allowed = mask & causal_mask(17, 29) & (torch.arange(29)[None, :] > torch.arange(12, 29)[:, None] - 6)
    s = (q @ k.transpose(-1, -2) * 0.3).masked_fill(~allowed, float("-inf"))
    o, lse = attention_lse(q, k, v, 0.3, causal=True, window=6, bmask=mask, backend=backend)
    want_lse = torch.logsumexp(s, -1)
    live = allowed.any(-1).expand_as(want_lse)
    torch.testing.assert_close(lse[live], want_lse[live], atol=1e-5, rtol=1e-5)
    assert bool(torch.isneginf(lse[~live]).all()) and float(o[~live.unsqueeze(-1).expand_as(o)].abs().max()) == 0
    want_o = torch.nan_to_num(torch.softmax(s, -1)) @ v
    torch.testing.assert_close(o, want_o, atol=1e-5, rtol=1e-5)


def test_bad_variants_and_backend_are_named():
    q, k, v = _qkv(B=1, T=8, S=8)
    with pytest.raises(ValueError, match="window must be a positive"):
        attend(q, k, v, window=0)
    with pytest.raises(ValueError, match="causal attention only"):
        attend(q, k, v, window=3, causal=False)
    with pytest.raises(ValueError, match="softcap must be a finite number > 0, got -1"):
        attend(q, k, v, softcap=-1)
    with pytest.raises(ValueError, match=r"shape \(3,\); got \(2,\)"):
        attend(q, k, v, sinks=torch.zeros(2))
    with pytest.raises(ValueError, match="lse_backend 'tpu'"):
        attend(q, k, v, probes=["sink"], lse_backend="tpu")
    with pytest.raises(ValueError, match="no softcap"):
        attend(q, k, v, probes=["sink"], softcap=2.0, path="stats")


# ---------------------------------------------------------------- tiny models from their configs


def _tiny(kind: str):
    import transformers as tf

    torch.manual_seed(0)
    common = dict(
        vocab_size=101,
        hidden_size=48,
        intermediate_size=64,
        num_attention_heads=3,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=128,
    )
    if kind == "gemma2":  # alternating sliding / full layers, soft-capped logits
        m = tf.Gemma2ForCausalLM(
            tf.Gemma2Config(num_hidden_layers=2, sliding_window=5, attn_logit_softcapping=2.0, query_pre_attn_scalar=16, **common)
        )
    elif kind == "gemma3":  # sliding, full, sliding
        m = tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(num_hidden_layers=3, sliding_window=5, sliding_window_pattern=2, **common))
    elif kind == "mistral":  # every layer windowed
        m = tf.MistralForCausalLM(tf.MistralConfig(num_hidden_layers=2, sliding_window=5, **common))
    elif kind == "gptoss":  # learned sink logits + alternating sliding / full
        common.update(num_attention_heads=4, num_key_value_heads=2, intermediate_size=32)
        m = tf.GptOssForCausalLM(
            tf.GptOssConfig(num_hidden_layers=2, sliding_window=5, num_local_experts=4, num_experts_per_tok=2, **common)
        )
        with torch.no_grad():
            for layer in m.model.layers:
                layer.self_attn.sinks.copy_(torch.linspace(-1.0, 3.0, 4))  # big enough to matter
    else:  # pragma: no cover
        raise ValueError(kind)
    return m.eval()


MODELS = ("gemma2", "gemma3", "mistral", "gptoss")


def _inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 101, (2, T_LONG), generator=g)
    am = torch.ones(2, T_LONG, dtype=torch.long)
    am[1, :4] = 0  # left padding in row 1
    return ids, am


def _eager_maps(model, ids, am):
    impl = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=am, output_attentions=True, use_cache=False)
    finally:
        model.set_attn_implementation(impl)
    return out.logits, out.attentions


@pytest.mark.parametrize("kind", MODELS)
def test_probes_equal_formulas_on_the_models_own_eager_maps(kind, monkeypatch):
    model = _tiny(kind)
    ids, am = _inputs()
    _, maps = _eager_maps(model, ids, am)
    kp = torch.where(am.bool(), am.cumsum(-1) - 1, -1)
    windowed = [i for i, t in enumerate(getattr(model.config, "layer_types", None) or ["sliding"] * len(maps)) if "sliding" in t]
    assert windowed and float(maps[windowed[0]][0, 0, -1, : T_LONG - 5].abs().max()) == 0  # the window matters
    want = torch.stack([torch.stack([formulas(a, kp, kp)[n] for n in PROBES]) for a in maps])  # (L, P, H)
    runs = {"auto": None, "flex": "flex", "eager": "eager"}
    for label, how in runs.items():
        probes = [make_probe(n) for n in PROBES]
        extra = [HeadMapProbe("L0H0", px=8)] if how == "eager" else []  # a map-reading probe forces the eager path
        if how == "flex":
            monkeypatch.setattr(attend_mod, "default_backend", lambda device: "flex")
        with attach(model, probes=probes + extra) as run, torch.no_grad():
            model(input_ids=ids, attention_mask=am, use_cache=False)
        monkeypatch.undo()
        got = run.stats()
        for i, n in enumerate(PROBES):
            torch.testing.assert_close(
                got[n].double(), want[:, i], atol=1e-4, rtol=1e-4, msg=lambda m, n=n, label=label: f"{kind} {n} ({label}): {m}"
            )


@pytest.mark.parametrize("kind", MODELS)
def test_nothing_attached_keeps_the_logits_and_edits_and_patterns_run(kind):
    from headlab.edits import REGISTRY as EDITS
    from headlab.patterns import REGISTRY as PATTERNS

    model = _tiny(kind)
    ids, am = _inputs()
    with torch.no_grad():
        own = model(input_ids=ids, attention_mask=am, use_cache=False).logits
    eager_logits, _ = _eager_maps(model, ids, am)
    real = am.bool()
    with attach(model), torch.no_grad():
        got = model(input_ids=ids, attention_mask=am, use_cache=False).logits
    torch.testing.assert_close(got[real], own[real], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got[real], eager_logits[real], atol=1e-5, rtol=1e-4)
    # a pattern that keeps every causal key, and an edit that scales by 1: the model's own logits
    with attach(model, pattern=PATTERNS.get("causal")(), edits=[EDITS.get("scale_heads")({(0, 0): 1.0})]), torch.no_grad():
        same = model(input_ids=ids, attention_mask=am, use_cache=False).logits
    torch.testing.assert_close(same[real], own[real], atol=1e-5, rtol=1e-4)
    # a real pattern and a real edit change them, and run with probes
    with (
        attach(
            model,
            probes=["sink"],
            pattern=PATTERNS.get("sink_window")(sink=1, size=3),
            edits=[EDITS.get("scale_heads")({(0, 0): 0.0})],
        ) as run,
        torch.no_grad(),
    ):
        other = model(input_ids=ids, attention_mask=am, use_cache=False).logits
    assert float((other - own)[real].abs().max()) > 1e-4
    assert torch.isfinite(run.stats()["sink"]).all()


def test_generate_with_sliding_cache_matches_the_model():
    model = _tiny("gemma3")
    ids = torch.randint(0, 101, (1, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        own = model.generate(ids, max_new_tokens=6, do_sample=False)
        with attach(model, probes=["sink", "entropy"]):
            got = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert got.tolist() == own.tolist()


def test_position_bias_is_refused_with_a_clear_message(tiny_llama):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    q = torch.randn(1, 3, 6, 40)
    k = v = torch.randn(1, 1, 6, 40)
    with attach(tiny_llama, probes=["entropy"]):
        fn = ALL_ATTENTION_FUNCTIONS[tiny_llama.config._attn_implementation]
        with pytest.raises(NotImplementedError, match="position_bias"):
            fn(tiny_llama.model.layers[0].self_attn, q, k, v, None, position_bias=torch.zeros(1, 3, 6, 6))


@pytest.mark.parametrize("kind", ["gemma3", "mistral"])
def test_decode_step_past_the_window_keeps_absolute_positions(kind):
    """A decode step whose sliding cache has dropped the first tokens: probes equal their formulas on
    the model's own eager maps, with key positions counted from the first token (sink = 0 there)."""
    from transformers import DynamicCache

    model = _tiny(kind)
    ids = torch.randint(0, 101, (1, 14), generator=torch.Generator().manual_seed(5))
    P = ids.shape[1] - 1  # position of the decode query

    def prefill():
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            model(input_ids=ids[:, :-1], cache=cache, use_cache=True)
        return cache

    impl = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            maps = model(input_ids=ids[:, -1:], cache=prefill(), use_cache=True, output_attentions=True).attentions
    finally:
        model.set_attn_implementation(impl)
    assert min(a.shape[-1] for a in maps) < P + 1  # some layer's cache dropped tokens
    want = []
    for a in maps:  # (1, H, 1, S): keys are positions P - S + 1 .. P
        S = a.shape[-1]
        kp = torch.arange(P - S + 1, P + 1)[None]
        want.append(torch.stack([formulas(a, kp, torch.tensor([[P]]))[n] for n in PROBES]))
    want = torch.stack(want)  # (L, P, H)
    probes = [make_probe(n) for n in PROBES]
    cache = prefill()
    with attach(model, probes=probes) as run, torch.no_grad():
        model(input_ids=ids[:, -1:], cache=cache, use_cache=True)
    got = run.stats()
    for i, n in enumerate(PROBES):
        torch.testing.assert_close(got[n].double(), want[:, i], atol=1e-5, rtol=1e-4, msg=lambda m, n=n: f"{kind} {n}: {m}")
