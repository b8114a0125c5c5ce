"""The layer-matched random null of a head selection (``matched:<selector>[:seed]``, headlab.edits.select)."""

from __future__ import annotations

import pytest

from headlab.edits import select as E

#: retrieval grows with layer then head: the top-5 are L5H0-3 and L4H3
ATLAS = [{"layer": l, "head": h, "retrieval": float(l * 10 + h), "roles": []} for l in range(6) for h in range(4)]


def _per_layer(sites: dict[int, list[int]]) -> dict[int, int]:
    return {l: len(hs) for l, hs in sites.items()}


def _pairs(sites: dict[int, list[int]]) -> set[tuple[int, int]]:
    return {(l, h) for l, hs in sites.items() for h in hs}


def test_matched_null_has_the_same_heads_per_layer_and_none_of_the_selection():
    ref = E.resolve("L5H3,L4H3,L4H2,L1H0", 6, 4)
    draws = set()
    for seed in range(20):
        got = E.matched_random_sites(ref, 4, seed)
        assert _per_layer(got) == _per_layer(ref) and not _pairs(got) & _pairs(ref)
        draws.add(str(got))
    assert E.matched_random_sites(ref, 4, 3) == E.matched_random_sites(ref, 4, 3) and len(draws) > 1


def test_a_layer_with_too_many_selected_heads_cannot_be_matched():
    with pytest.raises(ValueError, match="layer 5 has 4 of its 4 heads"):
        E.resolve("matched:retrieval:top5", 6, 4, ATLAS)


def test_matched_selector_through_resolve_and_an_atlas():
    atlas = [{"layer": l, "head": h, "retrieval": float((l * 7 + h * 3) % 11), "roles": []} for l in range(6) for h in range(6)]
    ref = E.resolve("retrieval:top6", 6, 6, atlas)
    got = E.resolve("matched:retrieval:top6:1", 6, 6, atlas)
    assert _per_layer(got) == _per_layer(ref) and sum(map(len, got.values())) == 6
    assert not _pairs(got) & _pairs(ref)
    assert E.resolve("matched:retrieval:top6", 6, 6, atlas) == E.resolve("matched:retrieval:top6:0", 6, 6, atlas)
    # a plain one-term selector needs no atlas (a comma separates terms, so the inner selector is one term)
    assert _per_layer(E.resolve("matched:L2H0:5", 6, 6)) == {2: 1}
