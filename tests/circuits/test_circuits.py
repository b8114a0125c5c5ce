"""Circuit tasks, classification, reuse statistics and head importance on tiny random models with a
small word-piece tokenizer (real-model checks are marked)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import _tiny_llama

from headlab import attach
from headlab.circuits import classify, find_circuit, make_colored_objects, make_ioi, overlap, reuse, top_k, write
from headlab.circuits.colored_objects import COLORS, OBJECTS
from headlab.circuits.colored_objects import TEMPLATES as CO_TEMPLATES
from headlab.circuits.ioi import NAMES, TEMPLATES
from headlab.circuits.run import load_result
from headlab.edits import ablate
from headlab.measure.importance import head_importance


@pytest.fixture(scope="module")
def tok():
    """Word-piece tokenizer: every template word and built-in name / colour / object is one token; other
    words split into letters."""
    import re

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = set()
    for t in TEMPLATES + CO_TEMPLATES:
        words |= set(re.findall(r"\w+|[^\w\s]", re.sub(r"\{\w+\}", " ", t)))
    words |= set(NAMES) | set(COLORS) | set(OBJECTS)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    vocab = ["[PAD]", "[UNK]"] + sorted(words) + letters + ["##" + c for c in letters]
    vocab = list(dict.fromkeys(vocab))
    wp = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return PreTrainedTokenizerFast(tokenizer_object=wp, pad_token="[PAD]", unk_token="[UNK]")


@pytest.fixture(scope="module")
def model(tok):
    return _tiny_llama(heads=3, kv=1, d=8, layers=2, vocab=len(tok))


def test_ioi_dataset(tok):
    t = make_ioi(tok, n=6, seed=1)
    assert t.clean_ids.shape == t.corrupt_ids.shape and len(t) == 6
    for r in range(6):
        real = t.clean_ids[r][t.mask[r].bool()]
        assert real[t.positions["IO"][r]] == t.answer[r]
        assert real[t.positions["S1"][r]] == real[t.positions["S2"][r]] == t.distractors[r, 0]
        assert t.positions["END"][r] == len(real) - 1
        # corrupt: three new, distinct names; the clean IO and S are absent
        cor = set(t.corrupt_ids[r].tolist())
        assert int(t.answer[r]) not in cor and int(t.distractors[r, 0]) not in cor
    assert "Kevin" in t.clean_texts[0] or "gave" in t.clean_texts[0]
    logits = torch.zeros(6, len(tok))
    logits[torch.arange(6), t.answer] = 2.0
    assert float(t.metric(logits)) == pytest.approx(2.0) and t.accuracy(logits) == 1.0 and t.top1(logits) == 1.0


def test_colored_objects_dataset(tok):
    t = make_colored_objects(tok, n=5)
    for r in range(5):
        real = t.clean_ids[r][t.mask[r].bool()]
        assert real[t.positions["ANS"][r]] == t.answer[r]
        assert int(t.answer[r]) not in set(t.corrupt_ids[r].tolist())
    assert t.distractors.shape == (5, 2)


def test_bad_names(tok):
    with pytest.raises(ValueError, match="not single.*'Zorblax' -> 7 tokens"):
        make_ioi(tok, n=4, names=["Mary", "John", "Alice", "Bob", "Tom", "Zorblax"])
    with pytest.raises(ValueError, match="at least 5 distinct"):
        make_ioi(tok, n=4, names=["Mary", "John"])
    with pytest.raises(ValueError, match="colours must be single tokens"):
        make_colored_objects(tok, n=4, colors=["red", "blue", "green", "teal", "black", "white"])


def test_find_circuit_and_write(tmp_path, tok, model):
    t = make_ioi(tok, n=4)
    res = find_circuit(model, t, "tiny", batch_heads=4)
    assert res.effect.shape == (2, 3) and torch.isfinite(res.effect).all()
    assert set(res.attn) == {"END->IO", "END->S2", "S2->S1", "S2->S1+1"}
    for v in res.attn.values():
        assert ((v >= 0) & (v <= 1)).all()
    paths = write(res, tmp_path / "ioi")
    heads = json.loads(paths["heads.json"].read_text())["heads"]
    assert len(heads) == 6 and {"effect", "direct", "roles", "attn_END_to_IO"} <= set(heads[0])
    roles = json.loads(paths["roles.json"].read_text())
    assert all(k.startswith("L") for k in roles)
    assert paths["effects.png"].read_bytes()[:4] == b"\x89PNG"
    back = load_result(tmp_path / "ioi")
    assert back.records() == res.records() and back.baseline == res.baseline
    # the file is a head atlas for edit selectors
    sel = ablate("effect:top2", atlas=tmp_path / "ioi").bind(2, 3)
    assert sum(len(h) for h in sel.sites.values()) == 2


def test_attention_evidence_matches_weights(tok, model):
    from headlab.circuits.classify import attention_between
    from headlab.measure import patching

    t = make_ioi(tok, n=3)
    w = patching.record(model, t.clean_ids, "weights", t.mask)
    a = attention_between(w.data, t.columns("END"), t.columns("IO"), 2, 3)
    r = 1
    want = w.data[1][r, 2, t.columns("END")[r], t.columns("IO")[r]]
    manual = torch.stack([w.data[1][i, 2, t.columns("END")[i], t.columns("IO")[i]] for i in range(3)]).mean()
    assert float(a[1, 2]) == pytest.approx(float(manual), abs=1e-6) and 0 <= float(want) <= 1


def test_classify_rules():
    eff = torch.tensor([[0.5, 0.01], [0.3, 0.2]])
    direct = torch.tensor([[0.0, 0.0], [0.3, -0.2]])
    attn = {
        "END->IO": torch.tensor([[0.0, 0.0], [0.6, 0.5]]),
        "END->S2": torch.tensor([[0.3, 0.0], [0.1, 0.1]]),
        "S2->S1": torch.tensor([[0.5, 0.0], [0.0, 0.0]]),
        "S2->S1+1": torch.tensor([[0.0, 0.0], [0.0, 0.0]]),
    }
    path = torch.tensor([[0.1, float("nan")], [float("nan"), float("nan")]])
    roles = classify(eff, direct, attn, path, torch.zeros(2, 2), torch.zeros(2, 2))
    assert roles["L1H0"] == ["in_circuit", "name_mover"]
    assert "negative_name_mover" in roles["L1H1"]
    assert roles["L0H0"] == ["in_circuit", "s_inhibition", "duplicate_token"]
    assert roles["L0H1"] == []
    with pytest.raises(ValueError, match="unknown threshold"):
        classify(eff, direct, attn, thresholds={"bogus": 1})


def test_overlap_statistics():
    a = {(0, i) for i in range(10)}
    same = overlap(a, a, 100, permutations=500)
    assert same["jaccard"] == 1.0 and same["p_hypergeom"] < 1e-10 and same["perm_p"] < 0.01
    b = {(1, i) for i in range(10)}
    none = overlap(a, b, 100, permutations=500)
    assert none["intersection"] == 0 and none["p_hypergeom"] == 1.0
    assert none["expected_intersection"] == pytest.approx(1.0)
    assert abs(none["perm_mean_jaccard"] - 1 / 19) < 0.02  # E|A∩B| = 1 of |A∪B| = 19
    e = torch.arange(12.0).reshape(3, 4)
    assert top_k(e, 2) == {(2, 3), (2, 2)}
    r = reuse(e, e.flip(0), k=4, permutations=200)
    assert r["top_k"]["intersection"] == 0 and r["spearman_abs_effect"] < 0
    with pytest.raises(ValueError, match="k=0"):
        top_k(e, 0)


def test_importance_matches_single_edit_and_taylor():
    m = _tiny_llama(heads=6, kv=2, d=8, layers=3, vocab=97)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 97, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    res = head_importance(m, ids, mask, batch_heads=5)
    assert res.kl.shape == (3, 6) and (res.kl >= 0).all()
    # one head by hand with the mean-ablation edit and the same means
    from headlab.measure.importance import _means_tensor, _record_masked

    with torch.no_grad():
        mu = _means_tensor(None, _record_masked(m, ids, mask), 3, 6)
        base = torch.log_softmax(m(input_ids=ids, attention_mask=mask).logits, -1)
        with attach(m, edits=[ablate("L1H4", mode="mean", means={"L1H4": mu[1][4]})]):
            abl = torch.log_softmax(m(input_ids=ids, attention_mask=mask).logits, -1)
    kl = ((base.exp() * (base - abl)).sum(-1) * mask).sum() / mask.sum()
    assert float(res.kl[1, 4]) == pytest.approx(float(kl), rel=1e-3, abs=1e-7)
    # small ablations on a random model: the first-order estimate tracks the measured loss change
    assert res.pearson_nll_taylor > 0.9
    from headlab.measure.importance import importance_png

    assert importance_png(res.records())[:4] == b"\x89PNG"


def test_cli_bad_input(tmp_path):
    from typer.testing import CliRunner

    from headlab.cli import app

    r = CliRunner().invoke(app, ["circuits", "ioi", "--out", str(tmp_path / "x"), "--n", "1"])
    assert r.exit_code != 0 and "--n=1 must be >= 2" in r.output
    r = CliRunner().invoke(
        app, ["circuits", "reuse", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "r.json")]
    )
    assert r.exit_code != 0 and "not found" in r.output


@pytest.mark.model
def test_smollm2_ioi_names_and_baseline(smollm2):
    model, tk = smollm2
    t = make_ioi(tk, n=8)
    assert len(t.meta["names"]) >= 20
    with torch.no_grad():
        lg = model(input_ids=t.clean_ids, attention_mask=t.mask).logits[:, -1]
    assert float(t.metric(lg)) > 1.0  # SmolLM2 prefers the indirect object
    with pytest.raises(ValueError, match="not single"):
        make_ioi(tk, n=4, names=["Mary", "John", "Alice", "Bob", "Tom", "Bartholomew"])
