"""Notebook views and data frames: ``_repr_html_`` on scan results, runs and head_stats (report
stylesheet, escaped token text, the head grid and a head's map), ``.to_frame()`` one row per head."""

from __future__ import annotations

import html
import sys
from html.parser import HTMLParser

import pytest
import torch
from conftest import llama, word_tokenizer

from headlab import head_stats
from headlab.engine.hf import attach
from headlab.measure.scan import run_scan
from headlab.probes import HeadMapProbe

WORDS = ["<script>", "alert(1)", "</script>", "&amp;", "the", "cat", "sat", "on", "mat", '"q"', "a", "b"]


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer(WORDS, split="whitespace_split")


@pytest.fixture(scope="module")
def model(tok):
    return llama(
        vocab_size=len(tok),
        hidden_size=40,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=5,
        max_position_embeddings=128,
    )


TEXT = 'the cat <script> alert(1) </script> sat on the mat &amp; "q" a b the cat sat'
METRICS = ["sink", "entropy", "prev_token", "distance"]


@pytest.fixture(scope="module")
def scan(model, tok):
    return run_scan(model, tok, "tiny<b>", [TEXT, "a b the cat"], METRICS, max_tokens=64, head_maps=2)


class _Doc(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.cells: list[dict] = []
        self.tokens: list[str] = []
        self.imgs: list[str] = []
        self._in_tok = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        cls = (a.get("class") or "").split()
        if tag == "div" and "cell" in cls:
            self.cells.append(a)
        if tag == "span" and "tok" in cls:
            self._in_tok = True
            self.tokens.append("")
        if tag == "img":
            self.imgs.append(a.get("src", ""))

    def handle_endtag(self, tag):
        if tag == "span":
            self._in_tok = False

    def handle_data(self, data):
        if self._in_tok:
            self.tokens[-1] += data


def _inner(frag: str) -> tuple[str, _Doc]:
    """The iframe's document (srcdoc unescaped once) and its parse."""
    assert frag.startswith('<iframe srcdoc="')
    raw = frag[len('<iframe srcdoc="') : frag.index('" style=')]
    assert "<" not in raw and '"' not in raw  # the attribute value is fully escaped
    doc = html.unescape(raw)
    p = _Doc()
    p.feed(doc)
    return doc, p


def test_scan_repr_html_grid_map_and_escaped_tokens(scan, tok):
    frag = scan._repr_html_()
    assert "<script" not in frag.lower().replace("<iframe", "")
    doc, p = _inner(frag)
    assert "script" not in p.tags  # no script element anywhere, only text
    assert len(p.cells) == 3 * 5
    assert sum("sel" in c["class"].split() for c in p.cells) == 1
    assert "&lt;script&gt;" in doc and "<script>" in p.tokens and "&amp;" in p.tokens
    assert len(p.tokens) == len(tok(TEXT)["input_ids"])
    assert len(p.imgs) == 1 and p.imgs[0].startswith("data:image/png;base64,")
    from importlib import resources

    css = resources.files("headlab.report").joinpath("assets", "report.css").read_text()
    assert css.strip() in doc  # styled by the report's own stylesheet
    assert "tiny&lt;b&gt;" in doc  # the model name is escaped too


def test_scan_keeps_maps_of_telling_heads_and_show_selects(scan):
    assert 1 <= len(scan.maps) <= 2
    site = next(iter(scan.maps))
    hm = scan.maps[site]
    assert hm.n_tokens == len(scan.tokens) and hm.map.shape == (hm.n_tokens, hm.n_tokens)
    other = next((l, h) for l in range(3) for h in range(5) if (l, h) not in scan.maps)
    doc, p = _inner(scan.show(head=other, metric="entropy"))
    sel = [c for c in p.cells if "sel" in c["class"].split()]
    assert sel and sel[0]["title"].startswith(f"L{other[0]}H{other[1]} entropy = ")
    assert not p.imgs and "no attention map recorded" in doc
    with pytest.raises(ValueError, match="out of range"):
        scan.show(head="L9H0")
    with pytest.raises(ValueError, match="unknown metric"):
        scan.show(metric="nope")


def test_scan_to_frame_one_row_per_head(scan):
    pd = pytest.importorskip("pandas")
    df = scan.to_frame()
    assert isinstance(df, pd.DataFrame) and len(df) == 3 * 5
    assert list(df.columns) == ["layer", "head", "site", *METRICS, "roles"]
    for r in scan.records:
        row = df[(df.layer == r["layer"]) & (df["head"] == r["head"])].iloc[0]
        assert row["site"] == f"L{r['layer']}H{r['head']}"
        for m in METRICS:
            assert row[m] == pytest.approx(r[m])
        assert row["roles"] == " ".join(r["roles"])


def test_to_frame_names_the_install_command_without_pandas(scan, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(ImportError, match=r'pip install "headlab\[frames\]"'):
        scan.to_frame()


def test_run_repr_html_and_to_frame(model, tok):
    pd = pytest.importorskip("pandas")
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    with attach(model, probes=["sink", "entropy", HeadMapProbe(sites="L1H2", px=8)]) as run:
        assert "no attention call" in run._repr_html_()
        with torch.no_grad():
            model(ids)
    doc, p = _inner(run._repr_html_())
    assert len(p.cells) == 15 and len(p.imgs) == 1  # L1H2 is shown, with its map
    sel = [c for c in p.cells if "sel" in c["class"].split()][0]
    assert sel["title"].startswith("L1H2 sink = ")
    doc, p = _inner(run.show(tokens=tok.convert_ids_to_tokens(ids[0].tolist())))
    assert "<script>" in p.tokens and "script" not in p.tags
    df = run.to_frame()
    assert isinstance(df, pd.DataFrame) and len(df) == 15
    st = run.stats()
    torch.testing.assert_close(torch.tensor(df["entropy"].to_numpy(), dtype=torch.float32), st["entropy"].flatten())
    with attach(model) as bare:
        model(ids)
    assert "no probes attached" in bare._repr_html_()


def test_head_stats_result_has_frame_and_view(model, tok):
    pytest.importorskip("pandas")
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    st = head_stats(model, ids, metrics=["sink", "prev_token"])
    assert set(st) == {"sink", "prev_token"}  # still a dict of tensors
    df = st.to_frame()
    assert list(df.columns) == ["layer", "head", "site", "sink", "prev_token"] and len(df) == 15
    assert df.loc[7, "sink"] == pytest.approx(float(st["sink"][1, 2]))
    _, p = _inner(st._repr_html_())
    assert len(p.cells) == 15
