"""Block-sparse kernels against the dense masked reference (fp32, 1e-5) at awkward sizes."""
from __future__ import annotations

import pytest
import torch

from headlab import patterns as P
from headlab.kernels import build_plan, masked_attention, pattern_mask, reference_sparse_attend, sparse_attend

SHAPES = [  # B, H, Hkv, T, S, d
    (1, 3, 3, 63, 63, 40),
    (2, 3, 1, 63, 63, 40),
    (1, 6, 3, 50, 77, 16),   # chunked prefill: queries are the last 50 of 77
    (2, 4, 2, 1, 45, 8),     # decode step
]


def _patterns(H, Hkv, S):
    return [
        P.causal(), P.window(5), P.sink_window(2, 7), P.neighborhood(5, 2), P.neighborhood(4, causal=True),
        P.halo(8, 3), P.power(16, 1, 1), P.strided(16, 1, 3, n_heads=Hkv, dense_heads=(0,)),
        P.moa([(3, 0.1)] * H), P.moa([(3, 0.2)] * Hkv, sink=3, kv_per_head=True),
        P.isolate(torch.arange(S) % 3), P.per_head([P.window(3 + h) for h in range(H)]),
        P.window(4) | P.power(8, 1, 0), P.sink_window(1, 30) & P.halo(6, 2),
    ]


def _qkv(B, H, Hkv, T, S, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T, d, generator=g), torch.randn(B, Hkv, S, d, generator=g),
            torch.randn(B, Hkv, S, d, generator=g))


@pytest.mark.parametrize("shape", SHAPES)
def test_static_patterns_match_reference(shape):
    B, H, Hkv, T, S, d = shape
    q, k, v = _qkv(*shape)
    first = shape == SHAPES[0]
    runs = ((("gather", None), ("gather", 16), ("gather", 7), ("dense", None), ("auto", None)) if first
            else (("gather", None), ("gather", 7)))
    for p in _patterns(H, Hkv, S):
        for causal in ((True, False) if first else (True,)):
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
    for p in [P.topk_blocks(8, 2), P.topk_blocks(8, 1, sink_blocks=0, local_blocks=2, shared_kv=False),
              P.dhsa(block=16, topk_tokens=20, local_tokens=8, global_tokens=4, chunk_size=5, instruction_tokens=3),
              P.dhsa(block=16, topk_tokens=20, chunks="heuristic", chunk_size=5, local_tokens=4, global_tokens=2)]:
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
    assert plan.idx.shape[-1] == 2          # a query block needs its own block and the previous one
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
def test_auto_measures_gather_against_flex_once(monkeypatch):
    """Long inputs: auto times both backends on the first call, then reuses the winner; both exact."""
    from headlab.kernels import autotune

    monkeypatch.setattr(autotune, "FLEX_MIN_T", 32)
    monkeypatch.setattr(autotune, "DECISIONS", {})
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 4, 64, 16, generator=g), torch.randn(1, 2, 64, 16, generator=g),
               torch.randn(1, 2, 64, 16, generator=g))
    p = P.window(9)
    ref = reference_sparse_attend(q, k, v, p, scale=0.25, causal=True)
    first = sparse_attend(q, k, v, p, scale=0.25)
    assert len(autotune.DECISIONS) == 1
    (choice, t_gather, t_flex), = autotune.DECISIONS.values()
    assert choice in ("flex", "gather") and t_gather > 0 and t_flex > 0
    second = sparse_attend(q, k, v, p, scale=0.25)
    assert len(autotune.DECISIONS) == 1
    assert torch.allclose(first, ref, atol=1e-5) and torch.allclose(second, ref, atol=1e-5)
    monkeypatch.setattr(autotune, "MAX_MEASURED", 1)  # budget spent: a new size is not measured
    q2, k2, v2 = q[:, :, :48], k[:, :, :48], v[:, :, :48]
    assert torch.allclose(sparse_attend(q2, k2, v2, p, scale=0.25),
                          reference_sparse_attend(q2, k2, v2, p, scale=0.25, causal=True), atol=1e-5)
    assert len(autotune.DECISIONS) == 1
    monkeypatch.setenv("HEADLAB_FLEX", "0")
    monkeypatch.setattr(autotune, "DECISIONS", {})
    assert torch.allclose(sparse_attend(q, k, v, p, scale=0.25), ref, atol=1e-5)
    assert autotune.DECISIONS == {}


@pytest.mark.parametrize("shape", [(1, 3, 3, 63, 63, 40), (2, 6, 3, 70, 77, 16), (1, 9, 3, 130, 130, 8)])
def test_heterogeneous_heads_run_one_by_one_exactly(shape):
    """MoA-style spans and per-head windows of very different widths: the head-by-head gather (which
    skips the blocks only the widest head needs) equals the joint gather and the reference."""
    from headlab.kernels.gather import _head_work, gather_static

    B, H, Hkv, T, S, d = shape
    q, k, v = _qkv(*shape, seed=3)
    pats = [P.moa([(2 + 30 * (h % 3), 0.05 * (h % 2)) for h in range(Hkv)], sink=2, kv_per_head=True),
            P.moa([(1 + 9 * h, 0.0) for h in range(H)], sink=1),
            P.per_head([P.window(2 + 25 * (h % 3)) for h in range(H)])]
    for p in pats:
        ref = reference_sparse_attend(q, k, v, p, causal=True)
        for block in (7, 16):
            plan = build_plan(p, T, S, H, Hkv, block, True)
            assert plan.head_counts.shape == (plan.heads, plan.nq)
            joint, split = _head_work(plan)
            assert split < joint  # the heads really differ
            for forced in (True, False, None):
                out = gather_static(q, k, v, plan, d ** -0.5, split_heads=forced)
                err = (out - ref).abs().max().item()
                assert err < 1e-5, f"{p.describe()} block={block} split={forced}: max err {err}"


def test_cli_bench_kernels_small(tmp_path, monkeypatch):
    """`headlab bench kernels` end to end at a small size: markdown written where asked, nothing for --out ''."""
    from typer.testing import CliRunner

    from headlab.cli.sparsify import bench_app

    monkeypatch.chdir(tmp_path)
    args = ["kernels", "--tokens", "1024", "--repeats", "1", "--no-flex", "--threads", "1"]
    res = CliRunner().invoke(bench_app, args + ["--out", str(tmp_path / "b.md")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "b.md").read_text()
    assert "window(256)" in text and "1024" in text
    res = CliRunner().invoke(bench_app, args + ["--out", ""])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.md"]
