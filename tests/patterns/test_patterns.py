"""Every pattern's mask against a direct per-(i, j) definition written independently here."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from headlab import patterns as P
from headlab.patterns.reach import popcount_bound, reach

FAST = settings(max_examples=25, deadline=None)


def brute(q_len, kv_len, allowed, heads=1):
    """bool (heads, q_len, kv_len) from a Python predicate allowed(h, i, j, n)."""
    out = torch.zeros(heads, q_len, kv_len, dtype=torch.bool)
    for h in range(heads):
        for t in range(q_len):
            i = kv_len - q_len + t
            for j in range(kv_len):
                out[h, t, j] = bool(allowed(h, i, j, kv_len))
    return out


def is_pow2(x):
    return x > 0 and (x & (x - 1)) == 0


lengths = st.integers(1, 40).flatmap(lambda s: st.tuples(st.integers(1, s), st.just(s)))


@FAST
@given(lengths)
def test_causal(qs):
    q, s = qs
    assert torch.equal(P.causal().mask(q, s), brute(q, s, lambda h, i, j, n: j <= i))


@FAST
@given(lengths, st.integers(1, 12))
def test_window(qs, w):
    q, s = qs
    assert torch.equal(P.window(w).mask(q, s), brute(q, s, lambda h, i, j, n: i - w + 1 <= j <= i))


@FAST
@given(lengths, st.integers(0, 5), st.integers(1, 10))
def test_sink_window(qs, sink, w):
    q, s = qs
    ref = brute(q, s, lambda h, i, j, n: j <= i and (j >= i - w + 1 or j < sink))
    assert torch.equal(P.sink_window(sink, w).mask(q, s), ref)


@FAST
@given(lengths, st.integers(1, 8), st.integers(1, 4), st.integers(0, 3))
def test_power(qs, block, wb, sb):
    q, s = qs

    def ok(h, i, j, n):
        bq, bk = i // block, j // block
        return j <= i and bk <= bq and (bq - bk < wb or is_pow2(bq - bk) or bk < sb)

    assert torch.equal(P.power(block, wb, sb).mask(q, s), brute(q, s, ok))


@FAST
@given(lengths, st.integers(1, 6), st.integers(1, 3), st.integers(1, 7), st.integers(1, 4), st.data())
def test_strided(qs, block, local, stride, nh, data):
    q, s = qs
    dense = data.draw(st.lists(st.integers(0, nh - 1), max_size=2, unique=True))
    step = max(1, stride // nh)

    def ok(h, i, j, n):
        bq, bk = i // block, j // block
        return j <= i and (h in dense or bq - bk < local or (bk + h * step) % stride == 0)

    p = P.strided(block, local, stride, dense_heads=dense, n_heads=nh)
    assert p.kv_per_head and p.n_heads == nh
    assert torch.equal(p.mask(q, s), brute(q, s, ok, nh))


def test_strided_union_covers_every_block():
    p = P.strided(block=4, local_blocks=1, stride=3, n_heads=3)
    lay = p.block_layout(96, 96, 4, causal=True)
    assert torch.equal(lay.any(0), torch.ones(24, 24, dtype=torch.bool).tril())
    assert not lay[0].equal(torch.ones(24, 24, dtype=torch.bool).tril())  # each head alone is sparse


def na_ref(i, j, n, k, dil, causal):
    """NATTEN 1D rule written directly from the paper/code description."""
    if i % dil != j % dil:
        return False
    gi, gj = i // dil, j // dil
    if causal:
        return gj <= gi and gi - gj < k
    group = len(range(i % dil, n, dil))
    left = k // 2
    start = gi - left
    start = max(0, min(start, group - k))  # shift (not shrink) at both borders
    return start <= gj < start + k


@FAST
@given(st.integers(2, 30), st.integers(1, 6), st.integers(1, 3), st.booleans(), st.data())
def test_neighborhood(n, k, dil, causal, data):
    if k * dil > n:
        with pytest.raises(ValueError, match="dilation"):
            P.neighborhood(k, dil, causal).mask(n, n)
        return
    q = data.draw(st.integers(1, n))
    ref = brute(q, n, lambda h, i, j, nn: na_ref(i, j, nn, k, dil, causal))
    assert torch.equal(P.neighborhood(k, dil, causal).mask(q, n), ref)
    if not causal:  # every query sees exactly k keys: windows shift at the borders
        assert bool((P.neighborhood(k, dil).mask(n, n).sum(-1) == k).all())


@FAST
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 4), st.integers(1, 2), st.booleans())
def test_neighborhood2d(hgt, wid, k, dil, causal):
    if k * dil > min(hgt, wid):
        with pytest.raises(ValueError):
            P.neighborhood2d(hgt, wid, k, dil, causal)
        return
    n = hgt * wid

    def ok(h, i, j, nn):
        return na_ref(i // wid, j // wid, hgt, k, dil, causal) and na_ref(i % wid, j % wid, wid, k, dil, causal)

    assert torch.equal(P.neighborhood2d(hgt, wid, k, dil, causal).mask(n, n), brute(n, n, ok))


@FAST
@given(lengths, st.integers(1, 8), st.integers(0, 5), st.booleans())
def test_halo(qs, block, halo, causal):
    q, s = qs

    def ok(h, i, j, n):
        b = i // block
        return b * block - halo <= j < (b + 1) * block + halo and (j <= i or not causal)

    assert torch.equal(P.halo(block, halo, causal).mask(q, s), brute(q, s, ok))


@FAST
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(0, 3))
def test_halo2d(bh, bw, block, halo):
    hgt, wid = bh * block, bw * block
    n = hgt * wid

    def ok(h, i, j, nn):
        yi, xi, yj, xj = i // wid, i % wid, j // wid, j % wid
        by, bx = yi // block, xi // block
        return by * block - halo <= yj < (by + 1) * block + halo and bx * block - halo <= xj < (bx + 1) * block + halo

    assert torch.equal(P.halo2d(hgt, wid, block, halo).mask(n, n), brute(n, n, ok))


@FAST
@given(
    lengths, st.lists(st.tuples(st.integers(1, 6), st.sampled_from([0.0, 0.25, 0.5])), min_size=1, max_size=4), st.integers(0, 4)
)
def test_moa(qs, spans, sink):
    q, s = qs

    def ok(h, i, j, n):
        a, b = spans[h]
        width = round(a + b * n)
        return j <= i and (i - j < width or j < sink)

    p = P.moa(spans, sink=sink)
    assert p.n_heads == len(spans)
    assert torch.equal(p.mask(q, s), brute(q, s, ok, len(spans)))


@FAST
@given(st.lists(st.integers(0, 3), min_size=1, max_size=30), st.data())
def test_isolate(groups, data):
    s = len(groups)
    q = data.draw(st.integers(1, s))
    ref = brute(q, s, lambda h, i, j, n: groups[i] == groups[j])
    assert torch.equal(P.isolate(groups).mask(q, s), ref)
    ref2 = brute(q, s, lambda h, i, j, n: groups[i] == groups[j] or 0 in (groups[i], groups[j]))
    assert torch.equal(P.isolate(groups, shared=[0]).mask(q, s), ref2)


@FAST
@given(lengths, st.integers(1, 6), st.integers(1, 6))
def test_union_intersection(qs, w, blk):
    q, s = qs
    a, b = P.window(w), P.power(blk, 1, 0)
    assert torch.equal((a | b).mask(q, s), a.mask(q, s) | b.mask(q, s))
    assert torch.equal((a & b).mask(q, s), a.mask(q, s) & b.mask(q, s))


def test_per_head_and_gqa():
    ps = [P.window(2), P.causal(), P.sink_window(1, 1)]
    p = P.per_head(ps)
    m = p.mask(7, 9)
    for h, sub in enumerate(ps):
        assert torch.equal(m[h], sub.mask(7, 9)[0])
    kv = P.per_head(ps, kv_per_head=True)
    full = kv.for_heads(6, 3).mask(7, 9)  # query head h reads KV head h // 2
    for h in range(6):
        assert torch.equal(full[h], ps[h // 2].mask(7, 9)[0])
    with pytest.raises(ValueError, match="KV heads"):
        kv.for_heads(6, 2)
    with pytest.raises(ValueError, match="query heads"):
        p.for_heads(6, 3)


@FAST
@given(lengths, st.integers(1, 9), st.booleans())
def test_block_layout_and_density(qs, block, causal):
    q, s = qs
    p = P.sink_window(1, 3) | P.power(4, 1, 0)
    m = p.mask(q, s)
    if causal:
        m = m & brute(q, s, lambda h, i, j, n: j <= i)
    lay = p.block_layout(q, s, block, causal=causal)
    nq, nk = math.ceil(q / block), math.ceil(s / block)
    ref = torch.zeros(1, nq, nk, dtype=torch.bool)
    for t in range(q):
        for j in range(s):
            if m[0, t, j]:
                ref[0, t // block, j // block] = True
    assert torch.equal(lay, ref)
    n_causal = sum(1 for t in range(q) for j in range(s) if j <= s - q + t)
    assert p.density(q, s) == pytest.approx(
        float(m.sum()) / n_causal if causal else float((p.mask(q, s) & brute(q, s, lambda h, i, j, n: j <= i)).sum()) / n_causal
    )


@FAST
@given(st.integers(1, 6), st.integers(1, 40), st.integers(0, 5), st.booleans())
def test_block_rule_fast_path_matches_generic(block, s, qblocks, causal):
    q = min(s, max(1, s - qblocks * block))
    if (s - q) % block:
        q = s
    for p in (P.power(block, 2, 1), P.strided(block, 1, 3, n_heads=3, dense_heads=(2,))):
        assert torch.equal(p.block_layout(q, s, block, causal=causal), p._block_layout_generic(q, s, block, causal))


def test_decode_rows_match_prefill():
    for p in [P.window(5), P.power(4, 2, 1), P.neighborhood(5, 2), P.moa([(2, 0.25)]), P.halo(4, 2)]:
        full = p.mask(40, 40)
        assert torch.equal(p.mask(1, 40)[:, 0], full[:, -1])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: P.window(0), "window size"),
        (lambda: P.window(-3), "window size"),
        (lambda: P.sink_window(-1, 4), "sink"),
        (lambda: P.power(0, 4, 1), "block"),
        (lambda: P.power(64, 0, 1), "window_blocks"),
        (lambda: P.strided(64, 2, 3, dense_heads=(5,), n_heads=3), "dense head"),
        (lambda: P.halo2d(10, 8, 4, 1), "divide"),
        (lambda: P.neighborhood(4, 3).mask(11, 11), "dilation too large"),
        (lambda: P.neighborhood2d(4, 4, 3, 2), "dilation too large"),
        (lambda: P.moa([(-50, 0.0)]).mask(8, 8), "band width"),
        (lambda: P.moa([(5, 1.5)]), "beta"),
        (lambda: P.isolate([0, 1]).mask(3, 3), "kv_len"),
        (lambda: P.per_head([]), "empty"),
        (lambda: P.dhsa(chunks="magic"), "chunks"),
        (lambda: P.make("nope"), "unknown pattern"),
        (lambda: P.window(4).mask(5, 3), "q_len"),
        (lambda: P.window(2.5), "integer"),
    ],
)
def test_bad_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_dynamic_reproducible_and_causal():
    g = torch.Generator().manual_seed(7)
    q = torch.randn(2, 6, 50, 8, generator=g)
    k = torch.randn(2, 3, 50, 8, generator=g)
    qp, kp = torch.arange(50), torch.arange(50)
    for p in [
        P.topk_blocks(8, 2),
        P.topk_blocks(8, 1, shared_kv=False),
        P.dhsa(block=8, topk_tokens=16, local_tokens=4, global_tokens=2, chunk_size=6, instruction_tokens=0),
        P.dhsa(block=8, topk_tokens=16, local_tokens=4, global_tokens=2, chunk_size=6, chunks="heuristic"),
    ]:
        a, b = p.select(q, k, qp, kp), p.select(q.clone(), k.clone(), qp, kp)
        assert a.shape[0] == 2 and a.shape[1] in (1, 6) and a.shape[2:] == (50, 50) and torch.equal(a, b)
        assert not bool((a & ~torch.ones(50, 50, dtype=torch.bool).tril()).any())
        assert bool(a.diagonal(dim1=-2, dim2=-1).all())  # every query keeps itself
        assert not bool(a.all())  # really sparse
    with pytest.raises(ValueError, match="dynamic"):
        P.topk_blocks(8, 2).density(16, 16)


def test_topk_blocks_definition():
    """Block choice = local + sink + top-k by mean-query · mean-key, written out by hand."""
    g = torch.Generator().manual_seed(3)
    blk, kk = 4, 2
    q = torch.randn(1, 1, 32, 5, generator=g)
    k = torch.randn(1, 1, 32, 5, generator=g)
    sel = P.topk_blocks(blk, kk, sink_blocks=1, local_blocks=1).select(q, k, torch.arange(32), torch.arange(32))
    qm = q[0, 0].view(8, 4, 5).mean(1)
    km = k[0, 0].view(8, 4, 5).mean(1)
    for bq in range(8):
        cands = [bk for bk in range(1, bq)]
        cands.sort(key=lambda bk: -float(qm[bq] @ km[bk]))
        keep = {0, bq} | set(cands[:kk])
        for t in range(bq * 4, bq * 4 + 4):
            want = torch.tensor([(j // 4 in keep) and j <= t for j in range(32)])
            assert torch.equal(sel[0, 0, t], want)


def test_dhsa_keeps_local_global_and_topk_budget():
    g = torch.Generator().manual_seed(5)
    q = torch.randn(1, 2, 64, 8, generator=g)
    k = torch.randn(1, 1, 64, 8, generator=g)
    p = P.dhsa(block=8, topk_tokens=20, local_tokens=8, global_tokens=4, chunk_size=8, instruction_tokens=8)
    m = p.select(q, k, torch.arange(64), torch.arange(64))[0, 0]
    for t in range(56):
        end = (t // 8 + 1) * 8
        row = m[t]
        assert bool(row[: min(4, t + 1)].all())  # global tokens
        assert bool(row[max(0, end - 8) : t + 1].all())  # local tokens up to itself
        assert int(row.sum()) <= 20
    assert bool(m[56:].equal(torch.ones(8, 64, dtype=torch.bool).tril(56)[:, :]))  # instruction rows dense


@pytest.mark.parametrize("length", [256, 1024, 2048])
def test_power_reach_is_log2(length):
    """PowerAttention claim: full reach within popcount bound = floor(log2 n_blocks) + 1 layers."""
    blocks = length // 16
    r = reach(P.power(16, 1, 0), length, block=16)
    assert r.layers_to_full == popcount_bound(blocks) == int(math.log2(blocks - 1)) + 1
    w = reach(P.window(16), 256)
    assert w.layers_to_full == math.ceil(255 / 15)
    d = reach(P.neighborhood(8, 2, causal=True), 64)
    assert d.layers_to_full is None  # residues never mix


# ---------------------------------------------------------------- nominal density and the CLI's presets
# Values of ``headlab.sparsify.passkey_eval.nominal_density`` (isinstance special cases for the dynamic
# patterns) captured before it became ``Pattern.nominal_density``: the method must give the same floats.
NOMINAL = {
    "window(100)": (lambda: P.window(100), (1.0, 0.1899100899100899, 0.04822626502623871)),
    "sink_window(8, 40)": (lambda: P.sink_window(8, 40), (0.9404761904761905, 0.09365034965034966, 0.023297344093238956)),
    "causal": (lambda: P.causal(), (1.0, 1.0, 1.0)),
    "power(16, 1, 1)": (lambda: P.power(16, 1, 1), (1.0, 0.2048911088911089, 0.06639004149377593)),
    "topk_blocks(64, 2, 1, 1)": (lambda: P.topk_blocks(64, 2, 1, 1), (1.0, 0.4462737262737263, 0.12107944837686112)),
    "topk_blocks(16, 0, 0, 1)": (
        lambda: P.topk_blocks(16, 0, 0, 1),
        (0.44047619047619047, 0.03172827172827173, 0.007796291493775934),
    ),
    "topk_blocks(32, 3, 2, 2, per head)": (
        lambda: P.topk_blocks(32, 3, 2, 2, shared_kv=False),
        (1.0, 0.3976503496503497, 0.10637165914083475),
    ),
    "dhsa()": (lambda: P.dhsa(), (1.0, 1.0, 0.4606457468879668)),
    "dhsa(no instruction rows)": (
        lambda: P.dhsa(block=32, topk_tokens=100, local_tokens=50, global_tokens=80, instruction_tokens=0),
        (1.0, 0.24298701298701297, 0.06246174315810349),
    ),
    "dhsa(7 instruction rows)": (
        lambda: P.dhsa(block=16, topk_tokens=300, local_tokens=10, global_tokens=5, instruction_tokens=7),
        (1.0, 0.5195384615384615, 0.1442677425936661),
    ),
}
PRESET_NOMINAL = {
    "window": (1.0, 0.7616063936063936, 0.23434830363680742),
    "sink_window": (1.0, 0.81998001998002, 0.26144511227727607),
    "power": (1.0, 0.6347972027972028, 0.2296802538442763),
    "strided": (1.0, 0.598993006993007, 0.4044422748352453),
    "moa": (1.0, 0.5332887112887112, 0.3083162985111057),
    "halo": (1.0, 0.6317282717282717, 0.17988772272394435),
    "neighborhood": (None, 0.7616063936063936, 0.23434830363680742),  # kernel 512 does not fit 63 tokens
    "topk_blocks": (1.0, 0.81998001998002, 0.26144511227727607),
    "dhsa": (1.0, 0.81998001998002, 0.26144511227727607),
}


@pytest.mark.parametrize("label", sorted(NOMINAL))
def test_nominal_density_per_class_equals_the_former_function(label):
    make, want = NOMINAL[label]
    assert tuple(make().nominal_density(n) for n in (63, 1000, 4096)) == want


def test_nominal_density_of_every_preset_and_the_free_function():
    from headlab.patterns.presets import PRESETS, nominal_density, preset

    assert set(PRESET_NOMINAL) == set(PRESETS)
    for name, want in PRESET_NOMINAL.items():
        p = preset(name)
        for n, w in zip((63, 1000, 4096), want):
            if w is None:
                with pytest.raises(ValueError, match="larger than the sequence length 63"):
                    p.nominal_density(n)
            else:
                assert p.nominal_density(n) == w and nominal_density(p, n) == w, (name, n)


def test_nominal_density_of_a_dynamic_pattern_without_a_budget_is_an_error():
    from headlab.patterns.dynamic import DynamicPattern

    class Bare(DynamicPattern):
        name = "bare"

    with pytest.raises(ValueError, match="bare is dynamic and states no key budget"):
        Bare().nominal_density(100)


def test_presets_registry_builds_every_preset_and_names_the_valid_ones():
    from headlab.engine.plugins import PATTERNS
    from headlab.patterns.presets import PRESETS, SINK, matched_window, preset, sink_window_density

    assert PRESETS.names() == ["window", "sink_window", "power", "strided", "moa", "halo", "neighborhood", "topk_blocks", "dhsa"]
    for name in PRESETS:
        family, _ = PRESETS[name]
        assert family in PATTERNS  # a preset is a PATTERNS entry plus arguments, not a second table
        p = preset(name)
        assert isinstance(p, P.Pattern) and p is not preset(name)  # a fresh pattern each time
    assert preset("moa").kv_per_head and preset("sink_window").describe() == f"sink_window({SINK}, 512)"
    with pytest.raises(ValueError, match="unknown pattern preset 'nope'") as exc:
        preset("nope")
    assert all(name in str(exc.value) for name in PRESETS)
    assert sink_window_density(64, 512, 1000) == 0.81998001998002
    assert matched_window(0.3, 1000).describe() == "sink_window(64, 100)"
    assert matched_window(0.1, 4096).describe() == "sink_window(64, 147)"
