"""Block-sparse kernels against the dense masked reference (fp32, 1e-5) at awkward sizes."""

from __future__ import annotations

import pytest
import torch

from headlab import patterns as P
from headlab.kernels import build_plan, masked_attention, pattern_mask, reference_sparse_attend, sparse_attend

SHAPES = [  # B, H, Hkv, T, S, d
    (1, 3, 3, 63, 63, 40),
    (2, 3, 1, 63, 63, 40),
    (1, 6, 3, 50, 77, 16),  # chunked prefill: queries are the last 50 of 77
    (2, 4, 2, 1, 45, 8),  # decode step
]


def _patterns(H, Hkv, S):
    return [
        P.causal(),
        P.window(5),
        P.sink_window(2, 7),
        P.neighborhood(5, 2),
        P.neighborhood(4, causal=True),
        P.halo(8, 3),
        P.power(16, 1, 1),
        P.strided(16, 1, 3, n_heads=Hkv, dense_heads=(0,)),
        P.moa([(3, 0.1)] * H),
        P.moa([(3, 0.2)] * Hkv, sink=3, kv_per_head=True),
        P.isolate(torch.arange(S) % 3),
        P.per_head([P.window(3 + h) for h in range(H)]),
        P.window(4) | P.power(8, 1, 0),
        P.sink_window(1, 30) & P.halo(6, 2),
    ]


def _qkv(B, H, Hkv, T, S, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T, d, generator=g), torch.randn(B, Hkv, S, d, generator=g), torch.randn(B, Hkv, S, d, generator=g))


@pytest.mark.parametrize("shape", SHAPES)
def test_static_patterns_match_reference(shape):
    B, H, Hkv, T, S, d = shape
    q, k, v = _qkv(*shape)
    first = shape == SHAPES[0]
    runs = (
        (("gather", None), ("gather", 16), ("gather", 7), ("dense", None), ("auto", None))
        if first
        else (("gather", None), ("gather", 7))
    )
    for p in _patterns(H, Hkv, S):
        for causal in (True, False) if first else (True,):
            ref = reference_sparse_attend(q, k, v, p, causal=causal)
            for backend, block in runs:
                out = sparse_attend(q, k, v, p, causal=causal, backend=backend, block=block)
                assert out.shape == (B, H, T, d)
                err = (out - ref).abs().max().item()
                assert err < 1e-5, f"{p} causal={causal} {backend}/{block}: max err {err}"


def test_reference_is_plain_softmax():
    """The reference itself against a loop written from the definition."""
    q, k, v = _qkv(1, 2, 1, 5, 6, 3)
    m = P.window(2).mask(5, 6).unsqueeze(0)
    out = masked_attention(q, k, v, m, scale=0.7)
    for h in range(2):
        for t in range(5):
            js = [j for j in range(6) if m[0, 0, t, j]]
            s = torch.stack([(q[0, h, t] * k[0, 0, j]).sum() * 0.7 for j in js])
            w = torch.softmax(s, 0)
            ref = sum(w[n] * v[0, 0, j] for n, j in enumerate(js))
            assert torch.allclose(out[0, h, t], ref, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_dynamic_patterns_match_reference(shape):
    B, H, Hkv, T, S, d = shape
    q, k, v = _qkv(*shape, seed=1)
    for p in [
        P.topk_blocks(8, 2),
        P.topk_blocks(8, 1, sink_blocks=0, local_blocks=2, shared_kv=False),
        P.dhsa(block=16, topk_tokens=20, local_tokens=8, global_tokens=4, chunk_size=5, instruction_tokens=3),
        P.dhsa(block=16, topk_tokens=20, chunks="heuristic", chunk_size=5, local_tokens=4, global_tokens=2),
    ]:
        ref = reference_sparse_attend(q, k, v, p)
        out = sparse_attend(q, k, v, p)
        assert (out - ref).abs().max().item() < 1e-5, p
        again = sparse_attend(q.clone(), k.clone(), v.clone(), p)
        assert torch.equal(out, again)  # deterministic selection


class _Ahead(P.Pattern):
    name = "ahead"

    def rule(self, h, i, j, n):
        return (j > i) | (j == 0)


def test_empty_rows_give_zero():
    q, k, v = _qkv(1, 2, 2, 8, 8, 4)
    p = P.isolate([0, 0, 1, 1, 2, 2, 3, 3]) & P.window(1) & P.halo(100, 0)  # every row keeps only itself
    assert torch.allclose(sparse_attend(q, k, v, p, backend="gather"), v, atol=1e-6)
    q, k, v = _qkv(1, 2, 2, 6, 9, 4)
    none = _Ahead() & P.window(2)  # under causality only key 0, and only for the query at position 0/1
    ref = reference_sparse_attend(q, k, v, none)
    assert torch.equal(ref, torch.zeros_like(ref))
    for backend in ("gather", "dense"):
        assert torch.equal(sparse_attend(q, k, v, none, backend=backend), torch.zeros_like(q))
    q, k, v = _qkv(1, 2, 2, 9, 9, 4)
    ref = reference_sparse_attend(q, k, v, none)
    assert torch.equal(ref[:, :, 2:], torch.zeros_like(ref[:, :, 2:])) and bool(ref[:, :, :2].abs().sum() > 0)
    for backend in ("gather", "dense"):
        assert (sparse_attend(q, k, v, none, backend=backend) - ref).abs().max() < 1e-6


def test_plan_skips_empty_blocks():
    w = P.window(16)
    plan = build_plan(w, 256, 256, 3, 3, 16, True)
    assert plan.idx.shape[-1] == 2  # a query block needs its own block and the previous one
    assert plan.gathered == 256 * 32
    assert plan.pairs == pytest.approx(sum(min(16, i + 1) for i in range(256)))
    assert build_plan(w, 256, 256, 3, 3, 16, True) is plan  # cached


def test_pattern_mask_gqa_expansion():
    q, k, _ = _qkv(1, 6, 3, 10, 10, 4)
    p = P.per_head([P.window(1), P.window(2), P.causal()], kv_per_head=True)
    m = pattern_mask(p, q, k, causal=True)
    assert m.shape == (1, 6, 10, 10) and torch.equal(m[0, 0], m[0, 1]) and not torch.equal(m[0, 1], m[0, 2])


def test_bad_inputs():
    q, k, v = _qkv(1, 4, 3, 8, 8, 4)
    with pytest.raises(ValueError, match="multiple"):
        sparse_attend(q, k, v, P.window(2))
    q, k, v = _qkv(1, 3, 3, 9, 8, 4)
    with pytest.raises(ValueError, match="exceed"):
        sparse_attend(q, k, v, P.window(2))
    q, k, v = _qkv(1, 3, 3, 8, 8, 4)
    with pytest.raises(ValueError, match="backend"):
        sparse_attend(q, k, v, P.window(2), backend="cuda")
    with pytest.raises(ValueError, match="dynamic"):
        sparse_attend(q, k, v, P.topk_blocks(4, 1), backend="flex")
    with pytest.raises(ValueError, match="per KV head"):
        sparse_attend(q, k, v, P.strided(4, 1, 2, n_heads=2))


@pytest.mark.slow
def test_flex_backend_matches_reference():
    """One small compiled FlexAttention run (torch.compile, ~20-40 s on 2 cores)."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    q, k, v = _qkv(1, 6, 3, 128, 128, 16)
    for p in [P.window(20), P.power(16, 2, 1)]:
        ref = reference_sparse_attend(q, k, v, p)
        out = sparse_attend(q, k, v, p, backend="flex")
        assert (out - ref).abs().max().item() < 1e-5


@pytest.mark.slow
def test_auto_measures_against_flex_once(monkeypatch):
    """Long inputs: auto times its default and FlexAttention warm on the first call, then reuses the
    winner; both exact, and last_backend() names the one that ran. Band-shaped patterns always take
    the band kernel (no race, no decision recorded)."""
    from headlab.kernels import autotune, last_backend

    monkeypatch.setattr(autotune, "FLEX_MIN_T", 32)
    monkeypatch.setattr(autotune, "DECISIONS", {})
    g = torch.Generator().manual_seed(3)
    q, k, v = (
        torch.randn(1, 4, 64, 16, generator=g),
        torch.randn(1, 2, 64, 16, generator=g),
        torch.randn(1, 2, 64, 16, generator=g),
    )
    p = P.power(8, 1, 0)
    ref = reference_sparse_attend(q, k, v, p, scale=0.25, causal=True)
    first = sparse_attend(q, k, v, p, scale=0.25)
    dec = autotune.DECISIONS[(p.describe(), 64, 64, 4, 2, torch.float32, True)]
    assert set(dec.samples) == {"gather", "flex"} and all(len(s) == autotune.SAMPLES for s in dec.samples.values())
    assert last_backend() == dec.backend
    second = sparse_attend(q, k, v, p, scale=0.25)
    assert last_backend() == dec.backend
    assert torch.allclose(first, ref, atol=1e-5) and torch.allclose(second, ref, atol=1e-5)
    w = P.window(9)
    out = sparse_attend(q, k, v, w, scale=0.25)
    assert last_backend() == "band" and len(autotune.DECISIONS) == 1
    assert torch.allclose(out, reference_sparse_attend(q, k, v, w, scale=0.25, causal=True), atol=1e-5)
    monkeypatch.setattr(autotune, "MAX_MEASURED", 1)  # budget spent: a new size is not measured
    q2, k2, v2 = q[:, :, :48], k[:, :, :48], v[:, :, :48]
    assert torch.allclose(
        sparse_attend(q2, k2, v2, p, scale=0.25), reference_sparse_attend(q2, k2, v2, p, scale=0.25, causal=True), atol=1e-5
    )
    assert len(autotune.DECISIONS) == 1 and last_backend() == "gather"
    monkeypatch.setenv("HEADLAB_FLEX", "0")
    monkeypatch.setattr(autotune, "DECISIONS", {})
    sparse_attend(q, k, v, p, scale=0.25)
    assert autotune.DECISIONS == {} and last_backend() == "gather"


@pytest.mark.parametrize("shape", [(1, 3, 3, 63, 63, 40), (2, 6, 3, 70, 77, 16), (1, 9, 3, 130, 130, 8)])
def test_heterogeneous_heads_run_one_by_one_exactly(shape):
    """MoA-style spans and per-head windows of very different widths: the head-by-head gather (which
    skips the blocks only the widest head needs) equals the joint gather and the reference."""
    from headlab.kernels.gather import _head_work, gather_static

    B, H, Hkv, T, S, d = shape
    q, k, v = _qkv(*shape, seed=3)
    pats = [
        P.moa([(2 + 30 * (h % 3), 0.05 * (h % 2)) for h in range(Hkv)], sink=2, kv_per_head=True),
        P.moa([(1 + 9 * h, 0.0) for h in range(H)], sink=1),
        P.per_head([P.window(2 + 25 * (h % 3)) for h in range(H)]),
    ]
    for p in pats:
        ref = reference_sparse_attend(q, k, v, p, causal=True)
        for block in (7, 16):
            plan = build_plan(p, T, S, H, Hkv, block, True)
            assert plan.head_counts.shape == (plan.heads, plan.nq)
            joint, split = _head_work(plan)
            assert split < joint  # the heads really differ
            for forced in (True, False, None):
                out = gather_static(q, k, v, plan, d**-0.5, split_heads=forced)
                err = (out - ref).abs().max().item()
                assert err < 1e-5, f"{p.describe()} block={block} split={forced}: max err {err}"


@pytest.mark.slow
def test_cli_bench_kernels_small(tmp_path, monkeypatch):
    """`headlab bench kernels` end to end at a small size: by default a headlab-report/bench-kernels/ folder
    (markdown, JSON, records, plot; never BENCHMARKS_SPARSE.md nor the committed results/bench-kernels/), a .md
    file where asked, nothing for --out ''; the
    rows name the backend that really ran."""
    import json

    from typer.testing import CliRunner

    from headlab.cli.bench import app as bench_app

    monkeypatch.chdir(tmp_path)
    args = ["kernels", "--tokens", "512", "--repeats", "1", "--no-flex", "--threads", "1"]
    res = CliRunner().invoke(bench_app, args)
    assert res.exit_code == 0, res.output
    folder = tmp_path / "headlab-report" / "bench-kernels"
    assert sorted(p.name for p in folder.iterdir()) == ["BENCHMARKS.md", "kernels.json", "kernels.png", "kernels.records.jsonl"]
    data = json.loads((folder / "kernels.json").read_text())
    ran = {r["name"]: r["backend"] for r in data["rows"]}
    assert ran["window(256)"] == "band" and ran["window(256) [gather]"] == "gather"
    assert ran["plan: 1 of 3 KV heads causal, 2 sink_window(64, 256)"] == "band+sdpa"
    assert ran["power(64, 4, 1)"] == "gather" and all(r["max_err"] < 1e-4 for r in data["rows"])
    assert all(len(r["samples"]["kernel"]["wall"]) == 1 for r in data["rows"])
    res = CliRunner().invoke(bench_app, args + ["--out", str(tmp_path / "b.md")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "b.md").read_text()
    assert "| window(256) | band |" in text and "| sink_window(64, 256) [gather] | gather |" in text
    res = CliRunner().invoke(bench_app, args + ["--out", ""])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.md", "headlab-report"]
    assert not (tmp_path / "BENCHMARKS_SPARSE.md").exists()
    res = CliRunner().invoke(bench_app, ["kernels", "--repeats", "0"])
    assert res.exit_code != 0 and "--repeats" in res.output


# ---------------------------------------------------------------- banded window kernel
@pytest.mark.parametrize(
    "shape",
    [
        (1, 3, 3, 63, 63, 40),
        (2, 6, 2, 63, 63, 40),
        (1, 9, 3, 130, 130, 8),
        (1, 6, 3, 50, 77, 16),
        (2, 4, 2, 1, 45, 8),
        (1, 6, 2, 17, 300, 8),
    ],
)
def test_band_kernel_matches_reference(shape):
    """Windows smaller than the block, wider than T, T not a multiple of the block, sink 0 and sinks
    inside/outside the window, queries the last T of S, v wider than q/k."""
    from headlab.kernels.band import band_attend

    B, H, Hkv, T, S, d = shape
    q, k, _ = _qkv(*shape, seed=5)
    v = torch.randn(B, Hkv, S, d + 3, generator=torch.Generator().manual_seed(6))
    for sink in (0, 1, 20):
        for width in (1, 3, 16, 40, 100, 400):
            ref = reference_sparse_attend(q, k, v, P.sink_window(sink, width), scale=0.3)
            for block in (None, 7, 16):
                out = band_attend(q, k, v, sink, width, 0.3, block)
                assert out.shape == (B, H, T, d + 3)
                err = (out - ref).abs().max().item()
                assert err < 1e-5, f"sink={sink} width={width} block={block}: max err {err}"


def test_band_kernel_many_chunks(monkeypatch):
    """The chunk loop (several query blocks per chunk, a short last chunk) against the reference."""
    from headlab.kernels import band

    monkeypatch.setattr(band, "CHUNK_ELEMS", 3000)
    q, k, v = _qkv(1, 6, 2, 150, 170, 8, seed=7)
    for sink, width in ((0, 12), (5, 30)):
        ref = reference_sparse_attend(q, k, v, P.sink_window(sink, width))
        assert (band.band_attend(q, k, v, sink, width, 8**-0.5, 16) - ref).abs().max().item() < 1e-5


def test_gather_kernel_many_chunks(monkeypatch):
    """The gather kernel's multi-chunk path (sizes above its chunk limit), static and dynamic."""
    from headlab.kernels import gather

    monkeypatch.setattr(gather, "CHUNK_ELEMS", 2000)
    q, k, v = _qkv(1, 6, 3, 130, 130, 8, seed=8)
    for p in (P.power(16, 1, 1), P.halo(16, 5), P.topk_blocks(16, 2)):
        ref = reference_sparse_attend(q, k, v, p)
        assert (sparse_attend(q, k, v, p, backend="gather") - ref).abs().max().item() < 1e-5, p


# ---------------------------------------------------------------- heterogeneous per-head plans
def _plan_layers(Hkv):
    """Per-KV-head mixes of causal / sink_window / window / one-head moa entries."""
    mixes = [
        [P.causal()] + [P.sink_window(4, 16)] * (Hkv - 1),
        [P.sink_window(2, 9), P.causal(), P.moa([[3, 0.1]], sink=2)][:Hkv] + [P.window(5)] * max(0, Hkv - 3),
        [P.moa([[6, 0.05]], sink=1)] * Hkv,
        [P.causal()] * (Hkv - 1) + [P.window(200)],  # a window wider than S is a full head
    ]
    return [P.per_head(m, kv_per_head=True) for m in mixes]


@pytest.mark.parametrize("shape", [(1, 6, 2, 63, 63, 40), (1, 9, 3, 130, 130, 40), (2, 9, 3, 63, 90, 16), (1, 6, 2, 1, 70, 8)])
def test_heterogeneous_plans_match_reference(shape):
    from headlab.kernels import last_backend

    B, H, Hkv, T, S, d = shape
    q, k, v = _qkv(*shape, seed=9)
    for p in _plan_layers(Hkv):
        ref = reference_sparse_attend(q, k, v, p)
        for backend in ("auto", "band"):
            out = sparse_attend(q, k, v, p, backend=backend)
            err = (out - ref).abs().max().item()
            assert err < 1e-5, f"{p.describe()} {backend}: max err {err}"
            assert last_backend() in ("band", "sdpa", "band+sdpa")
    # query-head entries that differ inside a KV group, and a multi-head MoA
    for p in (
        P.per_head([P.causal() if h % 3 == 0 else P.sink_window(2, 7 + h) for h in range(H)]),
        P.moa([[3, 0.1]], sink=2),
        P.per_head([P.window(6)]),
        P.moa([(2 + 5 * h, 0.02 * (h % 2)) for h in range(Hkv)], sink=3, kv_per_head=True),
        P.moa([(1 + 3 * h, 0.0) for h in range(H)], sink=0),
    ):
        ref = reference_sparse_attend(q, k, v, p)
        assert (sparse_attend(q, k, v, p) - ref).abs().max().item() < 1e-5, p.describe()


def test_full_heads_pay_only_their_own_span(monkeypatch):
    """1 causal KV head of 3: SDPA sees only its 3 query heads and 1 KV head; the band kernel only
    the other 6 query / 2 KV heads; the scattered result equals the reference."""
    from headlab.kernels import heads, last_backend

    calls = []
    real_sdpa, real_band = heads.sdpa_causal, heads.band_attend
    monkeypatch.setattr(
        heads, "sdpa_causal", lambda q, k, v, s: calls.append(("sdpa", q.shape[1], k.shape[1])) or real_sdpa(q, k, v, s)
    )
    monkeypatch.setattr(
        heads, "band_attend", lambda q, k, v, *a: calls.append(("band", q.shape[1], k.shape[1])) or real_band(q, k, v, *a)
    )
    q, k, v = _qkv(1, 9, 3, 63, 63, 40, seed=10)
    p = P.per_head([P.sink_window(4, 9), P.causal(), P.sink_window(4, 9)], kv_per_head=True)
    out = sparse_attend(q, k, v, p)
    assert sorted(calls) == [("band", 6, 2), ("sdpa", 3, 1)]
    assert last_backend() == "band+sdpa"
    assert (out - reference_sparse_attend(q, k, v, p)).abs().max().item() < 1e-5


def test_head_bands_decomposition():
    from headlab.kernels.heads import FULL, head_bands

    hb = head_bands(P.per_head([P.causal(), P.sink_window(64, 256), P.moa([[10, 0.5]], 4)], kv_per_head=True), 9, 3, 1000)
    assert hb.kv and hb.bands == (FULL, (64, 256), (4, 510))
    assert head_bands(P.window(300), 9, 3, 300).bands == (FULL,)  # wider than the input: full
    assert head_bands(P.sink_window(10, 290), 9, 3, 300).bands == (FULL,)  # sink + window cover row S-1
    assert head_bands(P.power(16, 1, 1), 9, 3, 300) is None  # not a band: gather path
    assert head_bands(P.per_head([P.window(4), P.power(16, 1, 1), P.causal()], kv_per_head=True), 9, 3, 300) is None
    q_level = head_bands(P.per_head([P.window(4)] * 3 + [P.window(5)] * 3), 6, 2, 50)
    assert q_level.kv and q_level.bands == ((0, 4), (0, 5))  # constant per KV group: KV level
    assert not head_bands(P.per_head([P.window(4), P.window(5)] * 3), 6, 2, 50).kv
    assert head_bands(P.moa([[3, 0.1]], sink=2), 9, 3, 50).bands == ((2, 8),)  # one head's rule for all heads
    assert head_bands(P.per_head([P.sink_window(1, 6)]), 9, 3, 50).bands == ((1, 6),)
    with pytest.raises(ValueError, match="KV head"):
        head_bands(P.per_head([P.window(4)] * 2, kv_per_head=True), 9, 3, 50)
    q, k, v = _qkv(1, 3, 3, 8, 8, 4)
    with pytest.raises(ValueError, match="band"):
        sparse_attend(q, k, v, P.power(4, 1, 1), backend="band")


# ---------------------------------------------------------------- fair auto choice
def test_autotune_fair_warm_median(monkeypatch, fake_clock):
    """Each candidate: one untimed warm-up, then SAMPLES alternating timed calls; the lowest median wins
    (a slow first call does not decide); cached per key; a failing candidate is dropped."""
    from headlab.kernels import autotune

    clock = fake_clock  # autotune times by headlab.timing's protocol
    monkeypatch.setattr(autotune, "DECISIONS", {})
    monkeypatch.setattr(autotune, "FLEX_MIN_T", 10)
    monkeypatch.delenv("HEADLAB_FLEX", raising=False)
    calls = {"a": 0, "b": 0}
    costs = {"a": [9.0, 1.0, 3.0, 3.0], "b": [50.0, 2.0, 2.0, 2.0]}  # first entries: warm-up (untimed)

    def cand(name):
        def fn():
            clock.t += costs[name][calls[name]]
            calls[name] += 1
            return torch.full((1,), float(ord(name)))

        return fn

    choice, out = autotune.choose("k", 100, {"a": cand("a"), "b": cand("b")})
    assert choice == "b" and out.item() == ord("b")  # medians: a 3.0, b 2.0 (a's one fast sample loses)
    assert calls == {"a": 1 + autotune.SAMPLES, "b": 1 + autotune.SAMPLES}
    dec = autotune.DECISIONS["k"]
    assert dec.samples == {"a": [1.0, 3.0, 3.0], "b": [2.0, 2.0, 2.0]} and dec.median("a") == 3.0
    assert autotune.choose("k", 100, {"a": cand("a"), "b": cand("b")}) == ("b", None)  # cached, nothing run
    assert calls == {"a": 4, "b": 4}
    assert autotune.choose("short", 5, {"a": cand("a"), "b": cand("b")}) == ("a", None)  # below FLEX_MIN_T

    def broken():
        raise RuntimeError("no compiler")

    calls["a"] = 0
    choice, _ = autotune.choose("k2", 100, {"a": cand("a"), "flex": broken})
    assert choice == "a" and "no compiler" in autotune.DECISIONS["k2"].failed["flex"]
    with pytest.raises(RuntimeError):
        autotune.choose("k3", 100, {"flex": broken, "a": cand("a")})  # the default must run
    monkeypatch.setattr(autotune, "MAX_MEASURED", 2)
    assert autotune.choose("k4", 100, {"a": cand("a"), "b": cand("b")}) == ("a", None)  # budget spent
