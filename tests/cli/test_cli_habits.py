"""CLI habits: --version, --json output (scan, steer), --quiet, errors on stderr with exit code 2, and
`steer --task FILE` / `scan --texts FILE` on your own data (a tiny model saved to a folder)."""

from __future__ import annotations

import json

import pytest
from conftest import REVIEW_WORDS, llama, word_tokenizer
from typer.testing import CliRunner

import headlab.cli as cli
from headlab.cli import app
from headlab.version import __version__

WORDS = [
    *REVIEW_WORDS,
    "no",
    "yes",
    "capital",
    "of",
    "france",
    "paris",
    "sky",
    "blue",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = word_tokenizer(WORDS, split="whitespace_split")
    model = llama(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=48,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=1,
        eos_token_id=1,
        bos_token_id=1,
    )
    d = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _run(args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_version():
    r = _run(["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"headlab {__version__}"


def test_scan_json_quiet_on_a_jsonl_texts_file(model_dir, tmp_path):
    texts = tmp_path / "texts.jsonl"
    texts.write_text(
        "".join(
            json.dumps({"id": i, "body": s}) + "\n" for i, s in enumerate(["the film was great fun", "the plot is dull and bad"])
        ),
        encoding="utf-8",
    )
    out = tmp_path / "scan"
    r = _run(
        [
            "scan",
            "--model",
            model_dir,
            "--texts",
            texts,
            "--text-field",
            "body",
            "--metrics",
            "sink,entropy",
            "--max-tokens",
            64,
            "--out",
            out,
            "--json",
            "--quiet",
        ]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # stdout is exactly one JSON document
    assert len(doc["records"]) == 2 * 4 and doc["meta"]["metrics"] == ["sink", "entropy"]
    assert [t["n_tokens"] for t in doc["meta"]["texts"]] == [5, 6]
    assert (out / "heads.json").is_file() and str(out / "heads.json") in doc["files"]
    assert r.stderr == ""  # quiet: no progress, no closing message


def test_scan_errors_go_to_stderr_with_exit_2(model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": 3}\n', encoding="utf-8")
    r = _run(["scan", "--model", model_dir, "--texts", bad, "--out", tmp_path / "o"])
    assert r.exit_code == 2 and "line 2" in r.stderr and r.stdout == ""
    r = _run(["scan", "--model", model_dir, "--texts", tmp_path / "none.txt"])
    assert r.exit_code == 2 and "does not exist" in r.stderr and r.stdout == ""


def test_steer_task_file_json(model_dir, tmp_path):
    rows = [
        {"prompt": f"the film was {w}", "choices": [" no", " yes"], "label": i % 2}
        for i, w in enumerate(["great", "awful", "good", "bad", "fun", "dull"])
    ]
    f = tmp_path / "mine.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    r = _run(
        [
            "steer",
            "ablate",
            "--sites",
            "L1H2",
            "--mode",
            "zero",
            "--task",
            f,
            "--tune-on",
            0,
            "--eval-on",
            6,
            "--model",
            model_dir,
            "--out",
            tmp_path / "mine.json",
            "--json",
            "--quiet",
        ]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "mine.json").is_file() and (tmp_path / "mine.items.jsonl").is_file()
    doc = json.loads(r.stdout)
    assert doc["task"] == "mine" and doc["eval_on"] == 6
    assert doc["results"]["stats"]["baseline"]["n"] == 6 and doc["edits"][0]["sites"] == [[1, 2]]


def test_steer_generation_task_from_csv_with_field_names(model_dir, tmp_path):
    f = tmp_path / "qa.csv"
    f.write_text("question,gold\ncapital of france,paris\nthe sky is,blue|sky\nthe film,film\n", encoding="utf-8")
    r = _run(
        [
            "steer",
            "ablate",
            "--sites",
            "L0",
            "--mode",
            "uniform",
            "--task",
            f,
            "--prompt-field",
            "question",
            "--answers-field",
            "gold",
            "--tune-on",
            0,
            "--eval-on",
            3,
            "--model",
            model_dir,
            "--save",
            tmp_path / "qa.json",
            "--json",
            "--quiet",
        ]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "qa.json").is_file()  # --save: the older spelling of --out
    doc = json.loads(r.stdout)
    assert doc["task"] == "qa" and doc["results"]["stats"]["steered"]["n"] == 3


def _steer(args):
    from headlab.cli.steer import app as steer_app

    return CliRunner().invoke(steer_app, [str(a) for a in args])


def test_steer_errors_go_to_stderr_with_exit_2(model_dir, tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(
        '{"prompt": "a", "choices": [" no", " yes"], "label": 0}\n{"prompt": "b", "choices": [" no", " yes"], "label": 5}\n',
        encoding="utf-8",
    )
    r = _steer(
        [
            "ablate",
            "--sites",
            "L0",
            "--task",
            f,
            "--tune-on",
            0,
            "--eval-on",
            1,
            "--model",
            model_dir,
            "--out",
            tmp_path / "x.json",
        ]
    )
    assert r.exit_code == 2 and "bad.jsonl, line 2" in r.stderr and r.stdout == ""
    r = _steer(["inject", "--icl-shots", "-1"])
    assert r.exit_code == 2 and "--icl-shots must be >= 0" in r.stderr and r.stdout == ""
    r = _steer(["magic", "--task", "sst2", "--model", model_dir])
    assert r.exit_code == 2 and "unknown steering method 'magic'" in r.stderr


def test_main_turns_uncaught_bad_input_into_stderr_and_exit_2(monkeypatch, capsys):
    def boom(**kw):
        raise ValueError("lengths must be [256, 8192], got 3")  # brackets: no rich markup eaten

    monkeypatch.setattr(cli, "app", boom)
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 2
    cap = capsys.readouterr()
    assert "lengths must be [256, 8192], got 3" in cap.err and cap.out == ""


def test_sparsify_eval_offers_json_and_quiet():
    r = _run(["sparsify", "eval", "--help"])
    assert r.exit_code == 0 and "--json" in r.stdout and "--quiet" in r.stdout
