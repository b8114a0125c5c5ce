"""The paper table (docs/papers.json, rendered into docs/papers.md): all 52 seed papers, valid statuses with their
reasons, only registered claims, statuses that agree with the committed outcomes, and the rendered page."""

from __future__ import annotations

import re

from headlab_repro import paper_claims as PC
from headlab_repro.claims import all_claims
from headlab_repro.record import repo_root, results_root
from headlab_repro.render import _load, render_block, render_text

ARXIV = re.compile(r"^\d{4}\.\d{4,5}$")


def test_every_seed_paper_once_with_a_status_and_reason():
    papers = PC.load_papers()
    assert len(papers) == 52
    assert len({p["title"] for p in papers}) == 52
    for p in papers:
        assert p["status"] in PC.STATUSES and len(p["reason"]) > 20, p["title"]
        assert p["arxiv"] is None or ARXIV.match(p["arxiv"]), p["title"]
    out = [p for p in papers if p["status"] == "out of scope"]
    assert len(out) == 6 and all(not p["claims"] for p in out)


def test_claims_named_are_registered_and_every_paper_claim_has_its_paper():
    claims = all_claims()
    named = {n for p in PC.load_papers() for n in p["claims"]}
    assert named <= set(claims), sorted(named - set(claims))
    mine = {n for n, c in claims.items() if c.table == PC.TABLE}
    assert mine <= named, sorted(mine - named)


def test_statuses_agree_with_the_committed_outcomes():
    root = results_root()
    for p in PC.load_papers():
        results = {n: _load(root, n) for n in p["claims"]}
        if p["status"] in ("reproduced", "adapted"):  # shown as met only with a committed met result for every claim
            assert results and all(r is not None and r["rule_met"] for r in results.values()), p["title"]
        if p["status"] == "partial":  # some measured part, or the reason says that nothing is measured
            assert any(r is not None for r in results.values()) or "no measured claim" in p["reason"], p["title"]
        if p["status"] == "not reproduced":
            assert any(r is not None and r["rule_met"] is False for r in results.values()), p["title"]
        if p["status"] == "not yet" and p["claims"]:
            assert any(r is None for r in results.values()), p["title"]


def test_rendered_page_lists_every_paper_and_its_commands():
    text = render_block("papers")
    assert text.startswith("52 papers: ")
    for p in PC.load_papers():
        assert p["title"].replace("|", "\\|") in text
        for n in p["claims"]:
            assert f"`headlab reproduce {n}`" in text
    assert "pointer-hull" in text and "1506.03134" in text


def test_committed_page_is_the_rendering():
    """docs/papers.md is generated: its marker block equals the rendering of docs/papers.json + the registry + results/."""
    root = repo_root()
    assert root is not None
    page = (root / "docs" / "papers.md").read_text(encoding="utf-8")
    assert "<!-- results:papers -->" in page
    assert render_text(page, results_root()) == page, "run `headlab reproduce --render`"
