"""Options that pick items no earlier run used: ``headlab steer --needle-seed``, ``circuits attribution --offset
--seed`` and ``circuits importance --seed``."""

from __future__ import annotations

import pytest
from conftest import word_tokenizer
from typer.testing import CliRunner

from headlab.data import prose
from headlab.data.tasks import load_task
from headlab.data.tasks.needle import make
from headlab.measure.attribution import item_indices


def test_needle_seed_gives_other_needles():
    tok = word_tokenizer(["the", "pass", "key", "is"])
    a, b = make(tok, n=16, n_tokens=128, seed=0), make(tok, n=60, n_tokens=128, seed=1)
    assert not {it.answers[0] for it in a.items} & {it.answers[0] for it in b.items}
    assert not {it.prompt for it in a.items} & {it.prompt for it in b.items}
    assert [it.prompt for it in make(tok, n=16, n_tokens=128).items] == [it.prompt for it in a.items]  # default = 0


def test_steer_passes_the_needle_seed_to_the_task(monkeypatch, tmp_path):
    import headlab.steer.run as run
    from headlab.cli import app

    seen = {}

    def fake(method, task, **kw):
        seen.update(kw["task_kw"] or {})
        raise ValueError("stop here")

    monkeypatch.setattr(run, "steer", fake)
    argv = ["steer", "ablate", "--sites", "L0H0", "--task", "needle", "--tune-on", "0", "--eval-on", "3"]
    r = CliRunner().invoke(app, [*argv, "--needle-seed", "4", "--length", "128", "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and seen == {"n_tokens": 128, "n": 3, "seed": 4}
    r = CliRunner().invoke(app, [*argv, "--needle-seed", "-1", "--out", str(tmp_path / "y.json")])
    assert r.exit_code == 2 and "--needle-seed" in r.output


def test_attribution_offset_and_seed_follow_the_steer_split():
    assert item_indices(10, 3) == [0, 1, 2] and item_indices(10, 3, offset=4) == [4, 5, 6]
    task = load_task("sst2")
    _, ev = task.split(591, 5, 0)
    idx = item_indices(len(task.items), 5, offset=591, seed=0)
    assert [task.items[i].meta["idx"] for i in idx] == [it.meta["idx"] for it in ev]
    with pytest.raises(ValueError, match="exceeds"):
        item_indices(10, 3, offset=8)
    with pytest.raises(ValueError, match="offset"):
        item_indices(10, 3, offset=-1)


def test_importance_seed_starts_at_other_paragraphs():
    a = prose.documents(8, min_chars=288, seed=0)
    b = prose.documents(12, min_chars=288, seed=1)
    assert not {p for p in prose.texts() if any(p in d for d in a)} & {p for p in prose.texts() if any(p in d for d in b)}
