"""One public surface on every result: ``.show()`` returns an HtmlView, ``.plot()`` a matplotlib Figure made
without pyplot, ``.to_frame()`` a pandas DataFrame; bad arguments name the valid values. Tiny random models."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import _tiny_llama
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from headlab import head_stats, scan
from headlab.engine.view import HtmlView
from headlab.report.figure import PlotFigure

torch.set_num_threads(1)
WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "film", "was", "good", "bad", "review", "sentiment", ":"]
METRICS = ["sink", "entropy", "prev_token"]


@pytest.fixture(scope="module")
def tok():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", *WORDS])}
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]", pad_token="[PAD]", eos_token="[PAD]")


@pytest.fixture(scope="module")
def model():
    return _tiny_llama(heads=3, kv=1, d=16, layers=2, vocab=len(WORDS) + 2)


@pytest.fixture(scope="module")
def res(model, tok):
    return scan(
        model, tok, ["the cat sat on the mat", "a dog ran on the mat the cat sat"], metrics=METRICS, max_tokens=64, head_maps=1
    )


def _no_pyplot_figures() -> bool:
    import matplotlib.pyplot as plt

    return plt.get_fignums() == []


def _heatmaps(fig: Figure) -> int:
    return sum(1 for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>")


def test_scan_result_show_plot_and_frame(res):
    pd = pytest.importorskip("pandas")
    view = res.show(head="L1H2", metric="entropy")
    assert isinstance(view, HtmlView) and view._repr_html_() == str(view) and view.startswith("<iframe")
    assert "characters of HTML" in repr(view)
    assert isinstance(res._repr_html_(), str)
    fig = res.plot()
    assert isinstance(fig, PlotFigure) and _heatmaps(fig) == len(METRICS)
    assert [ax.get_title() for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"] == METRICS
    assert fig._repr_png_()[:4] == b"\x89PNG"  # a notebook draws it without %matplotlib inline
    one = res.plot(metric="entropy")
    assert _heatmaps(one) == 1 and one.axes[0].images[0].get_array().shape == (2, 3)
    assert _heatmaps(res.plot(metric="sink,prev_token")) == 2
    assert _no_pyplot_figures()  # nothing joined pyplot's figure list
    df = res.to_frame()
    assert isinstance(df, pd.DataFrame) and df.shape == (2 * 3, 3 + len(METRICS) + 1)
    with pytest.raises(ValueError, match=r"unknown metric \['nope'\]: this scan has sink, entropy, prev_token"):
        res.plot(metric="nope")
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        res.show(metric="nope")


def test_scan_rejects_unknown_metric_naming_the_valid_ones(model, tok):
    with pytest.raises(ValueError, match=r"unknown metrics \['nope'\]: choose from .*sink.*entropy"):
        scan(model, tok, "the cat", metrics="sink,nope", max_tokens=64)


def test_head_stats_show_plot_and_frame(model, tok):
    pytest.importorskip("pandas")
    ids = tok("the cat sat on the mat", return_tensors="pt")["input_ids"]
    st = head_stats(model, ids, metrics=["sink", "entropy"])
    view = st.show(head=(0, 1))
    assert isinstance(view, HtmlView) and "L0H1 sink" in view
    assert isinstance(st.show(metric="entropy"), HtmlView)
    fig = st.plot()
    assert isinstance(fig, Figure) and _heatmaps(fig) == 2
    assert _heatmaps(st.plot("entropy")) == 1
    assert st.to_frame().shape == (6, 5)
    with pytest.raises(ValueError, match="unknown metric .*'prev_token'.*has sink, entropy"):
        st.plot(metric=["prev_token"])
    with pytest.raises(ValueError, match="out of range: layers 0..1, heads 0..2"):
        st.show(head="L5H0")
    assert _no_pyplot_figures()


def test_plot_code_never_switches_the_matplotlib_backend(monkeypatch, res, tmp_path):
    """A notebook keeps its backend: no module-level or call-time ``matplotlib.use``."""
    import importlib

    import matplotlib

    import headlab.report.png as png

    def refuse(*a, **k):
        raise AssertionError(f"matplotlib.use{a} called: it would switch a notebook's backend")

    monkeypatch.setattr(matplotlib, "use", refuse)
    importlib.reload(png)
    from headlab.steer.run import plot

    res.plot()
    png.atlas_png(tmp_path / "atlas.png", res.records, METRICS)
    plot({"baseline": [0.5, 0.3, 0.7], "steered": [0.6, 0.4, 0.8]}, tmp_path / "s.png", "t")
    assert (tmp_path / "atlas.png").read_bytes()[:4] == (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


# ---- steer ----


def _toy_task(n=12):
    from headlab.data.tasks import Item, Task

    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        words = [WORDS[int(j)] for j in torch.randint(0, 12, (4,), generator=g)]
        items.append(Item(f"review : {' '.join(words)} sentiment :", [" good", " bad"], i % 2))
    return Task("toy", "choice", items)


def test_steer_result_frame_plot_and_json(model, tok, tmp_path):
    pd = pytest.importorskip("pandas")
    from headlab.steer import SteerResult, evaluate, steer

    out = steer("ablate", _toy_task(), tune_on=0, eval_on=6, sites="L1H2", mode="zero", model_tok=(model, tok), progress=False)
    assert isinstance(out, SteerResult) and isinstance(out, dict) and len(out.records) == 6
    assert json.loads(json.dumps(out))["results"]["n"] == 6  # still the plain summary that --save writes
    df = out.to_frame()
    assert isinstance(df, pd.DataFrame) and len(df) == 6
    assert list(df.columns) == ["item", "baseline", "steered", "changed", "baseline_output", "steered_output"]
    assert df["baseline"].sum() == out["results"]["stats"]["baseline"]["k"]
    fig = out.plot()
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    bars = fig.axes[0].patches
    first = bars[0]
    assert len(bars) == 2 and isinstance(first, Rectangle)
    assert first.get_height() == pytest.approx(out["results"]["baseline"][0])
    assert _no_pyplot_figures()
    with pytest.raises(ValueError, match="no 'results'"):
        SteerResult({"method": "x"}).plot()
    r = evaluate(model, tok, _toy_task(4), _toy_task(4).items, progress=False)
    f = r.to_frame()
    assert list(f.columns) == ["item", "correct", "margin", "output"] and len(f) == 4
    assert f["correct"].mean() == pytest.approx(r.accuracy)


# ---- sparsify eval ----


class CharTok:
    """One token per character (ids < 256)."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [min(255, ord(c)) for c in text]}

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_sparsify_eval_result_frame_and_plot():
    pd = pytest.importorskip("pandas")
    from headlab import patterns as P
    from headlab import sparsify
    from headlab.sparsify.eval.report import EvalResult

    m = _tiny_llama(heads=6, kv=3, d=8, layers=2, vocab=256)
    rows = sparsify.evaluate(m, CharTok(), [("power", P.power(16, 1, 1))], lengths=[300], trials=2, decode_prompts=0)
    assert isinstance(rows, EvalResult) and isinstance(rows, list) and len(rows) == 3
    df = rows.to_frame()
    assert isinstance(df, pd.DataFrame) and df.shape[0] == 3
    assert list(df.columns[:6]) == ["length", "label", "kind", "method", "budget", "density"]
    assert {"acc_low", "acc_high", "kv_bytes", "accuracy", "ppl", "prefill_s"} <= set(df.columns)
    assert "by_depth" not in df.columns and list(df["method"]) == ["dense", "pattern", "pattern"]
    assert (df["acc_low"] <= df["accuracy"]).all() and (df["accuracy"] <= df["acc_high"]).all()
    assert (df["kv_bytes"] > 0).all()
    fig = rows.plot()
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert "density" in fig.axes[0].get_xlabel() and "KV" in fig.axes[1].get_xlabel()
    assert _no_pyplot_figures()
    with pytest.raises(ValueError, match="no rows"):
        EvalResult().plot()


# ---- circuits ----


def test_circuit_result_frame_plot_and_show():
    pd = pytest.importorskip("pandas")
    from headlab.circuits import CircuitResult

    g = torch.Generator().manual_seed(0)
    L, H = 3, 4
    grid = lambda: torch.randn(L, H, generator=g)  # noqa: E731
    roles = {f"L{l}H{h}": [] for l in range(L) for h in range(H)}
    roles["L2H1"] = ["name_mover", "in_circuit"]
    res = CircuitResult(
        "ioi",
        "tiny",
        8,
        {"clean_logit_diff": 1.0, "clean_accuracy": 0.75, "corrupt_logit_diff": -0.5},
        grid(),
        grid(),
        {"END->IO": torch.rand(L, H, generator=g), "S2->S1+1": torch.rand(L, H, generator=g)},
        torch.full((L, H), float("nan")),
        torch.rand(L, H, generator=g),
        torch.rand(L, H, generator=g),
        roles,
        {},
    )
    df = res.to_frame()
    assert isinstance(df, pd.DataFrame) and len(df) == L * H
    assert list(df.columns) == [
        "layer",
        "head",
        "site",
        "effect",
        "direct",
        "path_q",
        "prev_token",
        "induction",
        "attn_END_to_IO",
        "attn_S2_to_S1p1",
        "roles",
    ]
    assert df.loc[2 * H + 1, "roles"] == "name_mover in_circuit" and df["path_q"].isna().all()
    assert df.loc[5, "effect"] == pytest.approx(float(res.effect[1, 1]), abs=1e-6)
    fig = res.plot()
    assert isinstance(fig, Figure) and _heatmaps(fig) == 2
    assert any(t.get_text() == "N" for t in fig.axes[0].texts)  # the name mover's letter
    assert _heatmaps(res.plot(metric=["effect", "attn_END_to_IO", "path_q"])) == 3
    with pytest.raises(ValueError, match="unknown metric .*'logit'.*has effect, direct, path_q"):
        res.plot(metric="logit")
    view = res.show(head="L2H1")
    assert isinstance(view, HtmlView) and "name_mover" in view
    with pytest.raises(ValueError, match="unknown metric 'x'"):
        res.show(metric="x")
    assert _no_pyplot_figures()
