"""``carve-squad`` (CARVE, arXiv 2509.06461, adapted to text): the contrast and the sentence selection against plain
references, the seeded random baseline, rendering and token-to-sentence mapping, the last-row attention read from a
cached prefix, bad settings, the items' disjointness from refam-squad, a tiny-model run and CLI, and the registered
rule on synthetic numbers."""

from __future__ import annotations

import importlib
import random
import sys

import pytest
import torch
from conftest import _tiny_llama, save_tiny_llama, word_tokenizer
from typer.testing import CliRunner

from headlab.lab import carve_items as ci
from headlab.lab import carve_squad as cs
from headlab.lab.config import SMOKE, CarveSquadConfig

WORDS = ["Read", "the", "documents", "below", "Document", "1", "2", "3", ":", ".", "?", "Answer", "question", "based",
         "on", "given", "Only", "give", "me", "answer", "and", "do", "not", "output", "any", "other", "words", "Question",
         "Summarize", "text", "Paris", "is", "big", "cats", "sleep", "a", "lot", "dogs", "bark", "where"]  # fmt: skip


def _item() -> ci.CarveItem:
    sentences = ("Paris is big.", "cats sleep a lot.", "dogs bark.", "the cats sleep.", "Paris is the big text.")
    return ci.CarveItem(
        index=0,
        question_id=500,
        question="where is Paris?",
        answers=("big",),
        sentences=sentences,
        doc_of=(0, 0, 1, 2, 2),
        gold=(0, 4),
        gold_doc=0,
        squad_docs=(10, 11, 12),
    )


# ------------------------------------------------------------------------------------------ contrast and selection
def test_contrast_scores_match_a_plain_loop_at_awkward_sizes():
    g = torch.Generator().manual_seed(3)
    L, N, S, lam = 5, 37, 7, 0.7
    a_q = torch.rand(L, N, generator=g, dtype=torch.float64)
    a_g = torch.rand(L, N, generator=g, dtype=torch.float64)
    a_q, a_g = a_q / a_q.sum(-1, keepdim=True), a_g / a_g.sum(-1, keepdim=True)
    sent = torch.randint(0, S - 1, (N,), generator=g)  # sentence S - 1 gets no token
    layers = [1, 3, 4]
    carve, plain = cs.contrast_scores(a_q, a_g, sent, S, layers, lam)
    ref_c, ref_p = [0.0] * S, [0.0] * S
    for i in range(N):
        c = sum(float(a_q[l, i]) / (float(a_g[l, i]) + lam / N) for l in layers) / len(layers)
        p = sum(float(a_q[l, i]) for l in layers) / len(layers)
        ref_c[int(sent[i])] += c
        ref_p[int(sent[i])] += p
    assert torch.allclose(carve, torch.tensor(ref_c, dtype=carve.dtype))
    assert torch.allclose(plain, torch.tensor(ref_p, dtype=plain.dtype))
    assert carve[S - 1] == 0 and plain[S - 1] == 0


def _ref_keep(scores, sizes, share):
    """The shortest prefix of the ranking (score down, index up) whose tokens reach share x total."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    for k in range(1, len(order) + 1):
        if sum(sizes[i] for i in order[:k]) >= share * sum(sizes):
            return sorted(order[:k])
    return sorted(order)


def test_keep_top_takes_whole_sentences_until_the_share():
    scores, sizes = [0.5, 0.9, 0.5, 0.1, 0.7, 0.2, 0.9, 0.3], [3, 1, 4, 1, 5, 9, 2, 6]
    # target 0.3 x 31 = 9.3: sentences 1 (0.9), 6 (0.9, tie: later), 4 (0.7) make 8 tokens, then 0 (0.5, tie with 2)
    assert cs.keep_top(scores, sizes, 0.3) == [0, 1, 4, 6]
    rng = random.Random(1)
    for _ in range(200):
        n = rng.randint(1, 13)
        sc = [rng.choice([0.1, 0.2, 0.5, rng.random()]) for _ in range(n)]
        sz = [rng.randint(1, 9) for _ in range(n)]
        share = rng.choice([0.01, 0.3, 0.5, 0.99, rng.random() * 0.98 + 0.01])
        assert cs.keep_top(sc, sz, share) == _ref_keep(sc, sz, share)


def test_random_baseline_is_seeded_and_keeps_the_same_share():
    sizes = [4, 7, 1, 3, 9, 2, 5, 6, 8, 3, 2]
    a = cs.keep_random(sizes, 0.3, random.Random("0/carve-squad/random/5"))
    b = cs.keep_random(sizes, 0.3, random.Random("0/carve-squad/random/5"))
    assert a == b
    draws = {tuple(cs.keep_random(sizes, 0.3, random.Random(f"0/carve-squad/random/{k}"))) for k in range(20)}
    assert len(draws) > 5  # other items, other subsets
    for d in draws:
        kept = sum(sizes[i] for i in d)
        assert kept >= 0.3 * sum(sizes) and kept - max(sizes[i] for i in d) < 0.3 * sum(sizes)  # whole sentences, just enough
    r1 = cs.chance_hit(sizes, 0.3, [2, 5], 50, random.Random(7))
    assert r1 == cs.chance_hit(sizes, 0.3, [2, 5], 50, random.Random(7)) and 0 < r1 < 1
    assert cs.chance_hit(sizes, 0.3, range(len(sizes)), 10, random.Random(0)) == 1.0
    assert cs.chance_hit(sizes, 0.3, [], 10, random.Random(0)) == 0.0


# ------------------------------------------------------------------------------------------ bad values
@pytest.mark.parametrize(
    ("setting", "match"),
    [
        (dict(keep=0.0), r"keep must be in \(0, 1\).*got 0.0"),
        (dict(keep=1.0), r"keep must be in \(0, 1\).*got 1.0"),
        (dict(keep=-0.2), r"keep must be in \(0, 1\).*got -0.2"),
        (dict(lam=0.0), r"lam must be > 0.*got 0.0"),
        (dict(lam=-1e-3), r"lam must be > 0.*got -0.001"),
        (dict(items=0), r"items must be >= 1, got 0"),
        (dict(first_layer=5, last_layer=4), r"0 <= first_layer <= last_layer, got first_layer=5, last_layer=4"),
        (dict(first_layer=-1), r"got first_layer=-1"),
    ],
)
def test_bad_settings_name_the_value_and_the_range(setting, match):
    with pytest.raises(ValueError, match=match):
        cs.run(quiet=True, **setting)  # refused before the model loads


def test_bad_values_of_the_helpers():
    cfg = CarveSquadConfig.make(last_layer=30)
    with pytest.raises(ValueError, match=r"last_layer=30 out of range: the model's layers are 0..29"):
        cs.check_settings(cfg, 30)
    with pytest.raises(ValueError, match=r"share must be in \(0, 1\), got 1.5"):
        cs.keep_top([1.0], [1], 1.5)
    a = torch.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="lam must be > 0, got 0"):
        cs.contrast_scores(a, a, torch.zeros(3, dtype=torch.long), 1, [0], 0)
    with pytest.raises(ValueError, match="sentences .*9.* out of range: valid ids are 0..4"):
        ci.render(_item(), "x", word_tokenizer(WORDS), keep=[0, 9])
    with pytest.raises(ValueError, match="context_tokens must be >= 200"):
        ci.make_items(word_tokenizer(WORDS), 1, context_tokens=100)


# ------------------------------------------------------------------------------------------ prompts and tokens
def test_render_spans_and_token_sentences():
    tok, it = word_tokenizer(WORDS), _item()
    full = ci.render(it, it.task(), tok)
    for i, (a, b) in full.spans.items():
        assert full.text[a:b] == it.sentences[i]
    assert full.text.endswith("Question: where is Paris?\nAnswer:") and "Document 3:" in full.text
    part = ci.render(it, ci.GENERAL, tok, keep=[4, 2])  # document 1 has nothing kept: left out, the rest renumbered
    assert "Paris is big." not in part.text and "Document 3" not in part.text
    assert part.text.index("Document 1:\ndogs bark.") < part.text.index("Document 2:\nParis is the big text.")
    enc = tok(full.text, add_special_tokens=False, return_offsets_mapping=True)
    pos, sent = ci.token_sentences([tuple(o) for o in enc["offset_mapping"]], full.spans)
    words = [tok.convert_ids_to_tokens(enc["input_ids"][t]) for t in pos]
    assert " ".join(words) == " ".join(" ".join(tok.tokenize(s)) for s in it.sentences)
    assert sent == sorted(sent) and set(sent) == set(range(len(it.sentences)))


def test_read_last_row_from_a_cached_prefix_matches_a_full_forward():
    from headlab.engine.hf import attach
    from headlab.measure.contrast import LastRowProbe
    from headlab.measure.stats import forward_for_attention

    model = _tiny_llama(layers=3)
    ids = torch.randint(0, 101, (23,), generator=torch.Generator().manual_seed(0)).tolist()
    probe = LastRowProbe()
    with attach(model, probes=[probe]):
        forward_for_attention(model, torch.tensor([ids]))
    ref = probe.result()
    for start in (0, 9, 22):
        cache = cs.new_cache(model)
        if start:
            cs._forward(model, ids[:start], cache, 0)
        rows, out = cs.read_last_row(model, ids, cache, start)
        assert rows.shape == ref.shape == (3, 3, 23)
        assert torch.allclose(rows, ref, atol=1e-5)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
        assert torch.allclose(out.logits[0, -1], logits, atol=1e-4)


def test_carve_item_on_a_tiny_model():
    tok, it = word_tokenizer(WORDS), _item()
    model = _tiny_llama(vocab=len(WORDS) + 2)
    cfg = CarveSquadConfig.make(first_layer=0, last_layer=1, keep=0.4, max_new=3, chance_draws=30)
    rec = cs.carve_item(model, tok, it, cfg)
    assert rec["sentences"] == 5 and rec["gold_sentences"] == [0, 4]
    for m in cs.METHODS:
        kept = rec[f"kept_{m}"]
        assert kept == sorted(kept) and rec[f"share_{m}"] >= 0.4
        assert rec[f"hit_{m}"] == int(bool({0, 4} & set(kept)))
    assert len(rec["entropy_task"]) == 2 and 0 <= rec["chance_hit"] <= 1
    assert all(isinstance(rec[f"answer_{c}"], str) and rec[f"correct_{c}"] in (0, 1) for c in cs.CONTEXTS)
    assert rec == cs.carve_item(model, tok, it, cfg)  # deterministic
    measured = cs.summarize([rec, rec], cfg)
    assert measured["items"] == 2 and measured["carve_vs_random"]["mcnemar_p"] == 1.0


# ------------------------------------------------------------------------------------------ the data
def test_items_are_disjoint_from_refam_squad_and_answer_only_in_the_gold_paragraph():
    from headlab.data.longctx.sources import squad_docs
    from headlab.data.tasks.squad import load

    docs = squad_docs()
    excluded = ci._excluded_docs()
    refam = {it.prompt[slice(*it.spans["context"])] for it in load(300, max_chars=1000, chat=False).items}
    assert refam <= {docs[d].strip() for d in excluded}
    items = ci.make_items(word_tokenizer(WORDS), 6, seed=0, context_tokens=600)
    assert items == ci.make_items(word_tokenizer(WORDS), 6, seed=0, context_tokens=600)
    assert len({it.squad_docs[it.gold_doc] for it in items}) == 6  # one question per paragraph
    for it in items:
        assert it.question_id >= ci.FIRST_QUESTION and not set(it.squad_docs) & excluded
        assert len(it.squad_docs) >= 2 and it.gold
        for s in it.gold:
            assert it.doc_of[s] == it.gold_doc and ci._has_answer(it.sentences[s], it.answers)
        others = [d for j, d in enumerate(it.squad_docs) if j != it.gold_doc]
        assert not any(ci._has_answer(docs[d], it.answers) for d in others)


# ------------------------------------------------------------------------------------------ the command line
def test_cli_on_a_tiny_model(tmp_path):
    from headlab.cli import lab as cli_lab

    folder = str(save_tiny_llama(tmp_path / "tiny"))
    out = tmp_path / "out"
    args = ["carve-squad", "--items", "1", "--context-tokens", "300", "--first-layer", "0", "--last-layer", "1"]
    r = CliRunner().invoke(cli_lab.app, [*args, "--model", folder, "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert (out / "carve-squad.json").is_file() and (out / "carve-squad.png").is_file()
    bad = CliRunner().invoke(cli_lab.app, ["carve-squad", "--keep", "1.5", "--model", folder, "--out", str(out)])
    assert bad.exit_code == 2 and "keep must be in (0, 1)" in bad.output


# ------------------------------------------------------------------------------------------ the registered rule
@pytest.fixture
def claim():
    """The registered claim; imported for the test alone (and forgotten after) while no registry lists it."""
    from headlab_repro import claims as C

    if "carve-squad" in C.all_claims():
        yield C.get("carve-squad")
        return
    mod = importlib.import_module("headlab_repro.carve_claims")
    try:
        yield mod.CLAIM
    finally:
        C.REGISTRY.pop("carve-squad", None)
        C._ORDER.pop("carve-squad", None)
        sys.modules.pop("headlab_repro.carve_claims", None)


def _raw(n, correct: dict[str, list[int]]):
    cfg = CarveSquadConfig()
    recs = []
    for k in range(n):
        rec = {
            "context_tokens": 1000, "sentences": 30, "documents": 6, "chance_hit": 0.3,
            "entropy_task": [3.0 - 0.1 * l for l in range(30)], "entropy_general": [3.0] * 30, "entropy_window_task": 1.0,
        }  # fmt: skip
        for c in cs.CONTEXTS:
            rec[f"correct_{c}"] = rec[f"exact_{c}"] = correct[c][k]
        for m in cs.METHODS:
            rec[f"hit_{m}"], rec[f"share_{m}"] = correct[m][k], 0.3
        recs.append(rec)
    return {"measured": cs.summarize(recs, cfg)}


def test_carve_rule_on_synthetic_numbers(claim):
    n = 150
    full = [1] * 50 + [0] * 100
    carve = [1] * 48 + [0] * 102  # 2 points below full
    rand = [1] * 20 + [0] * 130
    good = claim.summarize(_raw(n, {"full": full, "carve": carve, "plain": carve, "random": rand}))
    assert claim.judge(good)["rule_met"]
    assert "38.7" in good["acc_carve"]["paper"] and good["entropy_depth_spearman"]["value"] == pytest.approx(-1.0)
    low = [1] * 45 + [0] * 105  # 5 points below full
    assert not claim.judge(claim.summarize(_raw(n, {"full": full, "carve": low, "plain": low, "random": rand})))["rule_met"]
    near = [1] * 45 + [0] * 105  # random at 45: not significant
    res = claim.judge(claim.summarize(_raw(n, {"full": carve, "carve": carve, "plain": carve, "random": near})))
    assert not res["rule_met"] and res["conditions"][1]["passed"] and not res["conditions"][0]["passed"]


@pytest.mark.model
def test_smoke_run_on_smollm2():
    res = cs.run(**SMOKE["carve-squad"], quiet=True)
    m = res.measured
    assert m["items"] == 2 and len(res.records) == 2 and len(m["entropy_task_by_layer"]) == 30
