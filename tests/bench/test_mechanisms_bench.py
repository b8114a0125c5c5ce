"""``headlab bench mechanisms``: synthetic tasks, the O(T) kernels against their dense forms, the efficiency-length
fit, and the CLI end to end at a tiny size."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from headlab.bench import mechanisms as mb
from headlab.bench.mechanism_quality import Budget, evaluate, train
from headlab.bench.tasks_synthetic import BLANK, MARK, mqar, selective_copy
from headlab.modules.linear import linear_attention_parallel, linear_weights
from headlab.modules.softmax import softmax_weights


def test_mqar_layout_and_targets():
    g = torch.Generator().manual_seed(0)
    x, y, m = mqar(5, 6, g, n_keys=10, n_values=7)
    assert x.shape == y.shape == m.shape == (5, 23)
    assert int(m.sum()) == 5 * 6
    seq = torch.cat([x[:, :1], y], 1)
    for b in range(5):
        keys, vals = seq[b, 0:12:2], seq[b, 1:12:2]
        assert len(set(keys.tolist())) == 6 and bool((keys < 10).all()) and bool((vals >= 10).all())
        table = dict(zip(keys.tolist(), vals.tolist()))
        for i in torch.nonzero(m[b]).flatten().tolist():
            assert y[b, i].item() == table[x[b, i].item()]  # the value stored with the queried key
    with pytest.raises(ValueError, match="pairs"):
        mqar(2, 11, g, n_keys=10)


def test_selective_copy_layout_and_targets():
    g = torch.Generator().manual_seed(1)
    x, y, m = selective_copy(4, 13, 5, g, vocab=9)
    assert x.shape == (4, 18) and bool((x[:, 13:] == MARK).all())
    for b in range(4):
        data = [t for t in x[b, :13].tolist() if t != BLANK]
        assert len(data) == 5 and y[b, m[b]].tolist() == data  # copied in order at the markers
    assert not m[:, :13].any()
    with pytest.raises(ValueError, match="n_tokens"):
        selective_copy(2, 3, 4, g)


@pytest.mark.parametrize("t", [37, 100])
def test_linear_kernels_match_the_dense_form(t):
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 3, t, 8, generator=g) for _ in range(3))
    torch.testing.assert_close(mb.linear_scan(q, k, v, chunk=16), linear_attention_parallel(q, k, v), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mb.linear_global(q, k, v), linear_weights(q, k, causal=False) @ v, atol=1e-4, rtol=1e-4)


def test_sdpa_causal_cross_is_suffix_aligned():
    q, k, v = mb.qkv("causal-cross", 9)
    assert k.shape[2] == 18
    want = softmax_weights(q, k, causal=True) @ v
    torch.testing.assert_close(mb._sdpa(q, k, v, True), want, atol=1e-5, rtol=1e-5)


def test_every_entry_states_every_pattern_and_runs_what_it_supports():
    ents = mb.entries()
    names = {(e.level, e.name) for e in ents}
    assert ("kernel", "sdpa") in names and ("module", "softmax") in names and ("module", "attsets") in names
    for e in ents:
        assert set(e.support) == set(mb.PATTERNS), e.name
        for pat in mb.PATTERNS:
            if e.supports(pat) and e.make is not None:
                y = e.make(pat, 16)()
                assert torch.isfinite(y).all(), (e.name, pat)
            else:
                assert e.support[pat], f"{e.name} {pat}: a missing pattern needs a reason"


def test_fit_and_efficiency_length():
    ls = [256, 512, 1024, 2048, 4096]
    a, b = mb.fit_power(ls, [1e-9 * l**2 for l in ls])
    assert abs(b - 2) < 1e-9 and abs(math.exp(a) - 1e-9) < 1e-15
    pts = [mb.Point("sdpa", "kernel", "causal-self", l, 1e-8 * l**2, (0, 0), 0) for l in ls]
    pts += [mb.Point("x", "kernel", "causal-self", l, 1e-4 * l, (0, 0), 0) for l in ls]  # crosses at L = 1e4
    ents = [mb.Entry("sdpa", "kernel", "", None, {}), mb.Entry("x", "kernel", "", None, {})]
    (row,) = mb.efficiency(pts, ents)
    assert row["measured"] is None and abs(row["fitted"] - 1e4) / 1e4 < 1e-6 and row["note"] == "faster beyond"
    pts = pts[:5] + [mb.Point("x", "kernel", "causal-self", l, 3e-6 * l, (0, 0), 0) for l in ls]  # crosses at 300
    (row,) = mb.efficiency(pts, ents)
    assert row["measured"] == 512 and abs(row["fitted"] - 300) < 1e-6


def test_quality_training_learns_a_trivial_copy():
    """Same-position copy is solvable by any per-token model: the trainer must drive it to accuracy 1."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(6, 16), torch.nn.Linear(16, 6))

    def batch(n, g):
        x = torch.randint(0, 6, (n, 5), generator=g)
        return x, x, torch.ones_like(x, dtype=torch.bool)

    hist = train(model, batch, Budget(steps=60, batch=16, lr=3e-2), 0)
    assert hist[-1] < hist[0]
    loss, acc, n = evaluate(model, batch, 40, 16, 0)
    assert acc == 1.0 and n == 200


@pytest.mark.slow
def test_cli_runs_end_to_end_at_a_tiny_size(tmp_path):
    from headlab.cli import app

    out = tmp_path / "bm"
    r = CliRunner().invoke(
        app,
        [
            "bench",
            "mechanisms",
            "--quick",
            "--lengths",
            "32,64",
            "--repeats",
            "1",
            "--mechanisms",
            "softmax,moneta,no-mix",
            "--steps",
            "2",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    for f in ("speed", "memory", "efficiency", "quality"):
        assert (out / f"{f}.md").exists() and (out / f"{f}.png").stat().st_size > 1000
    doc = json.loads((out / "mechanisms.json").read_text())
    assert doc["seed"] == 0 and "bench mechanisms" in doc["command"]
    assert {r["mechanism"] for r in doc["quality"]} == {"softmax", "moneta", "no-mix"}
    assert {r["task"] for r in doc["quality"]} == {"mqar", "selective-copy", "prose"}
    speed = (out / "speed.md").read_text()
    assert "the block-sparse patterns are causal self-attention masks" in speed
    assert "| moneta | module | noncausal-self |" in speed and "causal-only module" in speed
    bad = CliRunner().invoke(app, ["bench", "mechanisms", "--mechanisms", "nope", "--out", str(out)])
    assert bad.exit_code != 0 and "unknown mechanism" in bad.output
