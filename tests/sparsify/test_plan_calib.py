"""Calibration on the user's own text (``headlab sparsify plan --calib FILE``): reading the file, windows of its
text, the duo / moa / retrieval planners building their items from it, the plan's record of it, the profile
cache keyed on its sha256, and the errors for bad files and for methods that use no calibration."""

from __future__ import annotations

import functools
import hashlib
import json
import random

import pytest
import torch
from conftest import _tiny_llama, word_tokenizer

from headlab.data.calib import CalibText, read_calib
from headlab.sparsify import plans as PL
from headlab.sparsify.plans import retrieval as PR
from headlab.sparsify.plans.duo.data import make_sample
from headlab.sparsify.plans.moa import planner as profile_moa

#: two disjoint vocabularies: text A is made only of WORDS_A, text B only of WORDS_B
WORDS_A = [f"ant{i}" for i in range(30)]
WORDS_B = [f"bee{i}" for i in range(30)]
PUNCT = [".", ":", "?", "=", "'", ","]
#: small enough for the tiny models' 101-token vocabularies ("[UNK]" and "[PAD]" come first)
TOK = word_tokenizer([*WORDS_A, *WORDS_B, *PUNCT])
DUO = dict(steps=3, items=2, train_lengths=(150,), train_sink=2, train_window=8, n_facts=2, sink=4, min_window=8)
MOA = dict(lengths=(40, 72), items=1, response=6, sink=4, alphas=(0, 8, 16, 32), betas=(0.0, 0.1, 0.25, 0.5))
RET = dict(sink=8, min_window=8, lengths=(40,), depths=(0.5,), needles=(0,), max_new=2)


def _prose(words, n_sentences: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(" ".join(rng.choice(words) for _ in range(8)) + " ." for _ in range(n_sentences))


@pytest.fixture
def files(tmp_path):
    """(text A, text B): ~450 tokens each, of disjoint words."""
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(_prose(WORDS_A, 50, 1), encoding="utf-8")
    b.write_text(_prose(WORDS_B, 50, 2), encoding="utf-8")
    return a, b


def _words(ids) -> set[str]:
    return set(TOK.convert_ids_to_tokens([int(i) for i in ids]))


def _is_run_of(part: list[int], whole: list[int]) -> bool:
    n = len(part)
    return any(whole[i : i + n] == part for i in range(len(whole) - n + 1))


# ---------------------------------------------------------------------------------------------- reading
def test_text_and_jsonl_files_are_read_and_hashed(tmp_path):
    raw = "\ufeffFirst line .\r\nSecond line .\r\n".encode()
    (tmp_path / "t.txt").write_bytes(raw)
    c = read_calib(tmp_path / "t.txt")
    assert c.text == "First line .\nSecond line ." and c.format == "text" and c.documents == 1
    assert c.sha256 == hashlib.sha256(raw).hexdigest() and c.path == str(tmp_path / "t.txt")
    rows = [{"text": "ant1 ant2 ."}, {"text": "   "}, {"text": "bee1 bee2 .", "id": 7}]
    body = "\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + json.dumps(rows[2]) + "\n"
    (tmp_path / "t.jsonl").write_text(body, encoding="utf-8")
    j = read_calib(tmp_path / "t.jsonl")
    assert j.text == "ant1 ant2 .\n\nbee1 bee2 ." and j.format == "jsonl" and j.documents == 2
    assert j.sha256 == hashlib.sha256(body.encode()).hexdigest()
    src = j.source(TOK)
    assert src == {"file": str(tmp_path / "t.jsonl"), "sha256": j.sha256, "format": "jsonl", "documents": 2, "tokens": 6}


@pytest.mark.parametrize(
    "name, content, msg",
    [
        ("missing.txt", None, "does not exist"),
        ("folder", "DIR", "is a folder"),
        ("empty.txt", b"", r"is empty \(no text\)"),
        ("blank.txt", b" \n\t\n", r"is empty \(no text\)"),
        ("latin1.txt", "caf\u00e9 .".encode("latin-1"), r"is not UTF-8 text: byte 0xe9 at offset 3"),
        ("bad.jsonl", b'{"text": "ok ."}\n{not json\n', r"line 2: not valid JSON"),
        ("field.jsonl", b'{"body": "x"}\n', r"line 1: each row needs a string 'text' field, got \['body'\]"),
        ("list.jsonl", b'["x"]\n', r"line 1: expected a JSON object {...}, got list"),
        ("none.jsonl", b'{"text": ""}\n\n', r"is empty \(no row with a non-empty 'text' field\)"),
    ],
)
def test_bad_files_are_refused_by_name(tmp_path, name, content, msg):
    path = tmp_path / name
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=msg) as err:
        read_calib(path, "--calib")
    assert str(err.value).startswith(f"--calib {str(path)!r}")


def test_an_unreadable_file_is_refused_by_name(tmp_path, monkeypatch):
    path = tmp_path / "secret.txt"
    path.write_text("ant1 .", encoding="utf-8")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(path), "read_bytes", denied)  # as for chmod 0, also when the tests run as root
    with pytest.raises(ValueError, match=r"secret.txt' cannot be read: Permission denied"):
        read_calib(path)


# ---------------------------------------------------------------------------------------------- windows
def test_windows_are_seeded_runs_of_the_file_after_a_sentence_end(files):
    c = read_calib(files[0])
    ids = c.ids(TOK)
    assert c.n_tokens(TOK) == len(ids) == 450
    dot = TOK.convert_tokens_to_ids(".")
    starts = set()
    for seed in range(6):
        w = c.window_ids(TOK, 120, seed=seed)
        assert len(w) == 120 and _is_run_of(w, ids) and w == c.window_ids(TOK, 120, seed=seed)
        start = next(i for i in range(len(ids)) if ids[i : i + 120] == w)
        assert start == 0 or ids[start - 1] == dot  # begins a sentence
        starts.add(start)
    assert len(starts) > 3  # the seed moves the window
    assert c.window_ids(TOK, 450, seed=5) == ids  # the whole text fits once
    assert set(c.haystack(TOK, 60, seed=2).split()) <= set(WORDS_A) | {"."}
    with pytest.raises(ValueError, match=r"a.txt' holds 450 tokens; a calibration item of 451 tokens needs at least 451"):
        c.window_ids(TOK, 451)


# ---------------------------------------------------------------------------------------------- duo
def test_duo_samples_hide_the_facts_in_the_file_text(files):
    for mine, other in ((files[0], WORDS_B), (files[1], WORDS_A)):
        c = read_calib(mine)
        s = make_sample(TOK, 150, seed=3, n_facts=2, hay_ids=functools.partial(c.window_ids, TOK))
        assert s.input_ids.shape == (150,)
        seen = _words(s.input_ids)
        assert len(seen & set(WORDS_A + WORDS_B)) > 20 and not seen & set(other)
        built_in = make_sample(TOK, 150, seed=3, n_facts=2)  # pydoc prose: none of these words
        assert not _words(built_in.input_ids) & set(WORDS_A + WORDS_B)


def test_duo_plan_records_the_file_and_keys_its_cache_on_it(files, tmp_path):
    model = _tiny_llama(heads=6, kv=2, d=40, layers=2)
    cache = tmp_path / "cache"
    kw = dict(length=256, cache_dir=cache, progress=lambda *a: None, **DUO)
    pa = PL.make_plan("duo", model, TOK, budget=0.6, calib=files[0], **kw)
    cal = pa.meta["calibration"]
    assert cal["source"] == read_calib(files[0]).source(TOK) and cal["source"]["tokens"] == 450
    assert cal["source"]["sha256"] == hashlib.sha256(files[0].read_bytes()).hexdigest()
    assert "user text" in cal["data"] and str(files[0]) in cal["data"] and cal["from_cache"] is False
    pb = PL.make_plan("duo", model, TOK, budget=0.6, calib=files[1], **kw)  # other file: trained anew
    assert pb.meta["calibration"]["from_cache"] is False and pb.meta["scores"] != pa.meta["scores"]
    assert len(list(cache.glob("duo-*.json"))) == 2
    pa2 = PL.make_plan("duo", model, TOK, budget=0.9, calib=read_calib(files[0]), **kw)  # same bytes: reused
    assert pa2.meta["calibration"]["from_cache"] is True and pa2.meta["scores"] == pa.meta["scores"]
    plain = PL.make_plan("duo", model, TOK, budget=0.6, **kw)
    assert "source" not in plain.meta["calibration"] and len(list(cache.glob("duo-*.json"))) == 3
    short = tmp_path / "short.txt"
    short.write_text(_prose(WORDS_A, 10, 3), encoding="utf-8")  # 90 tokens
    with pytest.raises(ValueError, match=r"short.txt' holds 90 tokens; method duo .*needs at least 150 tokens"):
        PL.make_plan("duo", model, TOK, budget=0.6, calib=short, **kw)


# ---------------------------------------------------------------------------------------------- moa
def test_moa_profiles_prompts_made_of_the_file_text(files, tmp_path):
    model = _tiny_llama(heads=4, kv=2, d=8, layers=2)
    a, b = read_calib(files[0]), read_calib(files[1])
    ids = profile_moa._prompt_ids(None, TOK, 60, 1, 0, "prose", a)
    assert ids.shape == (1, 60) and _is_run_of(ids[0].tolist()[:40], a.ids(TOK))
    kw = dict(length=128, cache_dir=tmp_path, progress=lambda *x: None, **MOA)
    pa = profile_moa.make_plan(model, TOK, budget=0.5, calib=a, **kw)
    pb = profile_moa.make_plan(model, TOK, budget=0.5, calib=b, **kw)
    prof = functools.partial(
        profile_moa.profile,
        model,
        TOK,
        cache_dir=tmp_path,
        **{k: MOA[k] for k in MOA if k in ("lengths", "items", "response", "sink")},
    )
    ha, hb = prof(calib=a), prof(calib=b)
    assert ha["cached"] and hb["cached"] and ha["settings"]["calib"] == a.sha256 and ha["settings"]["data"] == "calib"
    assert not torch.equal(ha["hist"][72], hb["hist"][72])  # the text changed what the profiler saw
    assert len(list(tmp_path.glob("moa-*.pt"))) == 2
    assert pa.meta["calibration"]["source"] == a.source(TOK) and pb.meta["calibration"]["source"]["sha256"] == b.sha256
    assert "user text" in pa.meta["calibration"]["data"]
    with pytest.raises(ValueError, match="data='synthetic' uses none"):
        profile_moa.make_plan(model, TOK, budget=0.5, calib=a, **{**kw, "data": "synthetic"})
    short = tmp_path / "short.txt"
    short.write_text(_prose(WORDS_A, 7, 3), encoding="utf-8")  # 63 tokens, 72 - 6 needed
    with pytest.raises(ValueError, match=r"short.txt' holds 63 tokens; method moa .*needs at least 66 tokens"):
        profile_moa.make_plan(model, TOK, budget=0.5, calib=short, **kw)


# ---------------------------------------------------------------------------------------------- retrieval
class _Case:
    def __init__(self, scores):
        self.scores, self.recall = scores, 1.0


def test_retrieval_needles_sit_in_the_file_text_and_the_cache_keys_on_it(files, tmp_path, monkeypatch):
    model = _tiny_llama(heads=6, kv=3, d=20)
    hays: list[str | None] = []

    def fake_case(model, tok, n, d, k, max_new=24, seed=0, haystack_fn=None):
        hays.append(None if haystack_fn is None else haystack_fn(tok, n, seed=seed))
        return _Case(torch.rand(2, 6, generator=torch.Generator().manual_seed(len(hays))))

    monkeypatch.setattr(PR, "_retrieval_case_fn", lambda: fake_case)
    kw = dict(length=200, cache_dir=tmp_path, **RET)
    pa = PL.make_plan("retrieval", model, TOK, budget=0.7, calib=files[0], **kw)
    assert set(hays[-1].split()) <= set(WORDS_A) | {"."}  # type: ignore[union-attr]
    PL.make_plan("retrieval", model, TOK, budget=0.7, calib=files[1], **kw)
    assert set(hays[-1].split()) <= set(WORDS_B) | {"."}  # type: ignore[union-attr]
    PL.make_plan("retrieval", model, TOK, budget=0.5, calib=files[0], **kw)  # same file: from the cache
    PL.make_plan("retrieval", model, TOK, budget=0.7, **kw)
    assert len(hays) == 3 and hays[-1] is None and len(list(tmp_path.glob("retrieval-*.json"))) == 3
    src = pa.meta["calibration"]["source"]
    assert src["sha256"] == hashlib.sha256(files[0].read_bytes()).hexdigest() and src["tokens"] == 450
    assert src["file"] == str(files[0]) and "user text" in pa.meta["calibration"]["data"]


def test_retrieval_plan_on_the_file_runs_a_real_tiny_model(files, tmp_path):
    model = _tiny_llama(heads=6, kv=3, d=20)
    p = PL.make_plan("retrieval", model, TOK, budget=0.7, length=200, cache_dir=tmp_path, calib=files[0], **RET)
    assert p.meta["calibration"]["items"] == 1 and p.meta["calibration"]["source"]["tokens"] == 450
    assert p.kv_fraction() <= 0.7


# ---------------------------------------------------------------------------------------------- no calibration
@pytest.mark.parametrize("method", ["uniform", "random"])
def test_methods_without_calibration_refuse_a_file(files, method):
    with pytest.raises(ValueError, match=f"method '{method}' uses no calibration data"):
        PL.make_plan(method, _tiny_llama(), TOK, budget=0.5, length=200, calib=files[0])


def test_requests_read_a_path_and_refuse_other_values(files):
    r = PL.RetrievalRequest(budget=0.5, length=100, calib=str(files[0]))
    assert isinstance(r.calib, CalibText) and r.calib.sha256 == hashlib.sha256(files[0].read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="calib must be a path"):
        PL.RetrievalRequest(budget=0.5, length=100, calib=5)
    with pytest.raises(ValueError, match="data='synthetic' uses none"):
        profile_moa.MoaRequest(budget=0.5, length=100, calib=files[0], data="synthetic")


# ---------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def plan_cli(monkeypatch):
    from typer.testing import CliRunner

    import headlab.models as M
    from headlab.cli.sparsify import app

    model = _tiny_llama(heads=6, kv=3, d=20)
    loads: list[str] = []
    monkeypatch.setattr(M, "load", lambda name, *a, **k: (loads.append(name), (model, TOK))[1])
    runner = CliRunner()
    return loads, lambda args: runner.invoke(app, ["plan", *args])


def test_cli_plan_on_a_calibration_file(files, tmp_path, plan_cli):
    from headlab.patterns.headplan import load_plan

    loads, invoke = plan_cli
    out = tmp_path / "plan.json"
    args = ["--method", "retrieval", "--kv-budget", "0.7", "--length", "200", "--sink", "8", "--cache-dir", str(tmp_path)]
    args += ["--opt", "min_window=8", "--opt", "lengths=40", "--opt", "depths=0.5", "--opt", "needles=0", "--opt", "max_new=2"]
    res = invoke([*args, "--calib", str(files[0]), "--out", str(out), "--json", "--quiet"])
    assert res.exit_code == 0, res.output
    sha = hashlib.sha256(files[0].read_bytes()).hexdigest()
    meta = json.loads(res.stdout.strip().splitlines()[-1])["meta"]
    assert meta["calibration"]["source"]["sha256"] == sha and meta["calibration"]["source"]["tokens"] == 450
    model = _tiny_llama(heads=6, kv=3, d=20)
    assert load_plan(out, model).meta["calibration"]["source"]["file"] == str(files[0])
    res = invoke([*args, "--calib", str(files[0]), "--out", str(out)])  # the summary names the file
    assert res.exit_code == 0 and f"calibration text: {files[0]} (450 tokens, sha256 {sha[:12]}" in res.output
    assert loads == ["smollm2-135m", "smollm2-135m"]


def test_cli_plan_refuses_bad_calibration_files(files, tmp_path, plan_cli):
    loads, invoke = plan_cli
    base = ["--method", "duo", "--kv-budget", "0.9", "--length", "200", "--sink", "4", "--opt", "min_window=8"]
    base += ["--cache-dir", str(tmp_path), "--out", str(tmp_path / "p.json")]
    res = invoke([*base, "--calib", str(tmp_path / "nope.txt")])
    assert res.exit_code == 2 and "--calib" in res.output and "nope.txt' does not exist" in res.output
    (tmp_path / "l1.txt").write_bytes("caf\u00e9".encode("latin-1"))
    res = invoke([*base, "--calib", str(tmp_path / "l1.txt")])
    assert res.exit_code == 2 and "l1.txt' is not UTF-8 text" in res.output
    res = invoke(["--method", "uniform", "--calib", str(files[0]), "--out", str(tmp_path / "p.json")])
    assert res.exit_code == 2 and "method uniform uses no calibration data" in res.output and "drop --calib" in res.output
    assert loads == []  # all refused before loading the model
    res = invoke([*base, "--calib", str(files[0]), "--opt", "calib=x.txt"])
    assert res.exit_code == 2 and "calib repeats an option" in res.output
    res = invoke([*base, "--calib", str(files[0]), "--opt", "train_lengths=512"])  # the text holds 450 tokens
    assert res.exit_code == 2 and "a.txt' holds 450 tokens; method duo" in res.output and "at least 512" in res.output
    assert not (tmp_path / "p.json").exists()


def test_suite_disjointness_covers_the_users_calibration_file(files, tmp_path, monkeypatch):
    """A plan made with --calib: the long-context suite's disjointness check reads the recorded file (same
    bytes), finds a suite prompt copied from it, and refuses to call the data disjoint when the file is gone
    or has changed."""
    from types import SimpleNamespace

    from headlab.data.longctx.tasks import SuiteItem
    from headlab.sparsify.eval import suite as S

    monkeypatch.setattr(S, "calibration_texts", lambda tok, plans, defaults=True: {"duo": [], "moa": [], "retrieval": []})
    text = files[0].read_text(encoding="utf-8")

    def item(context):
        return SuiteItem("qa", 0, 0, 512, context, "q?", "a:", ("x",), "string_match_all", 4)

    def plan(path, sha):
        return SimpleNamespace(meta={"method": "duo", "calibration": {"source": {"file": str(path), "sha256": sha}}})

    sha = hashlib.sha256(files[0].read_bytes()).hexdigest()
    clean = S.calibration_check(TOK, [item(files[1].read_text(encoding="utf-8"))], [plan(files[0], sha)])
    assert clean["disjoint"] and clean["user_files"] == [{"file": str(files[0]), "sha256": sha, "checked": True}]
    leak = S.calibration_check(TOK, [item("Intro. " + text[100:400])], [plan(files[0], sha)])
    assert leak["shared_spans"] > 0 and not leak["disjoint"]
    gone = S.calibration_check(TOK, [item("nothing shared")], [plan(tmp_path / "gone.txt", sha)])
    assert not gone["disjoint"] and "cannot read it" in gone["user_files"][0]["reason"]
    moved = S.calibration_check(TOK, [item("nothing shared")], [plan(files[0], "0" * 64)])
    assert not moved["disjoint"] and "bytes changed" in moved["user_files"][0]["reason"]
