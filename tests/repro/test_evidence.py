"""Evidence labels computed from the history, and provenance recorded at the start of a run."""

from __future__ import annotations

import pytest

from headlab_repro import evidence as E
from headlab_repro import provenance as P


@pytest.fixture
def history(monkeypatch):
    """A linear history c0 < c1 < ... < c5; claim 'a' registered in c1, its first output in c2."""
    order = {f"c{i}": i for i in range(6)}
    monkeypatch.setattr(E, "commit_order", lambda: order)
    monkeypatch.setattr(E, "registrations", lambda: {"a": "c1", "seen": "c1", "late": "c3"})
    monkeypatch.setattr(E, "first_outputs", lambda: {"a": "c2", "seen": "c2", "late": "c3"})
    monkeypatch.setitem(E.SEEN_BEFORE, "seen", "numbers in README before the rule")


def test_confirmatory_needs_every_condition(history):
    ok = {"name": "a", "started_commit": "c1", "git_commit": "c2", "tree": {"same_commit": False}}
    assert E.label({**ok, "tree": {"same_commit": True}}) == {"evidence": "confirmatory", "registered_commit": "c1", "why": []}
    assert E.label(ok)["why"] == ["HEAD moved while the run was going"]
    assert E.label({"name": "a", "started_commit": "c0", "tree": {"same_commit": True}})["why"] == [
        "the run started before its rule was committed"
    ]
    assert "uncommitted" in E.label({"name": "a", "started_commit": "c1+dirty"})["why"][0]
    legacy = E.label({"name": "a", "git_commit": "c3"})  # written before the start commit was recorded
    assert legacy["evidence"] == "exploratory" and "start commit was not recorded" in legacy["why"][0]


def test_seen_numbers_outputs_with_the_rule_smoke_and_unregistered(history):
    assert E.label({"name": "seen", "started_commit": "c1", "tree": {"same_commit": True}})["why"] == [
        "numbers in README before the rule"
    ]
    late = E.label({"name": "late", "started_commit": "c3", "tree": {"same_commit": True}})
    assert late["why"] == ["outputs of this design were committed with or before its rule"]
    assert E.label({"name": "a", "smoke": True})["evidence"] == "smoke"
    assert "no registration commit" in E.label({"name": "zz", "started_commit": "c1"})["why"][0]
    busy = E.label({"name": "a", "started_commit": "c1", "tree": {"same_commit": True}, "invalid": "invalid: machine busy"})
    assert busy["evidence"] == "exploratory" and busy["why"] == ["invalid: machine busy"]


def test_real_history_registers_every_committed_claim():
    from headlab_repro.claims import all_claims
    from headlab_repro.record import results_root

    reg, order = E.registrations(), E.commit_order()
    for name in all_claims():
        if (results_root() / name / "result.json").exists():
            assert reg.get(name) in order, name


def test_cpu_watch_sees_this_process_and_not_itself_as_other():
    w = P.CpuWatch()
    x = 0
    for i in range(2_000_000):
        x += i
    out = w.stop()
    assert out["own_cpu_s"] >= 0 and out["wall_s"] > 0
    assert out["other_share"] is None or out["other_share"] >= 0


def test_tree_state_lists_untracked_code(monkeypatch):
    calls = {
        ("rev-parse", "HEAD"): "abc\n",
        ("status", "--porcelain", "--untracked-files=no"): "",
        ("status", "--porcelain", "--untracked-files=all", "--", *P.WATCHED): "?? src/headlab/new_kernel.py\n",
    }
    monkeypatch.setattr(P, "_git", lambda *a: calls.get(a, ""))
    st = P.tree_state()
    assert st["dirty"] and st["changed"] == ["src/headlab/new_kernel.py"] and P.commit_label(st) == "abc+dirty"


def test_full_runs_refuse_a_dirty_tree(monkeypatch, tmp_path):
    from headlab_repro import runner

    monkeypatch.setattr(runner, "tree_state", lambda: {"commit": "abc", "dirty": True, "changed": ["src/x.py"], "diff": "+x"})
    with pytest.raises(ValueError, match="uncommitted changes .*src/x.py.*--allow-dirty"):
        runner.reproduce("memory-capacity", tmp_path / "o", log=lambda s: None)
