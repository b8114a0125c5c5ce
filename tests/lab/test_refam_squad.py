"""``refam-squad`` (RefAM, arXiv 2509.22650, adapted to text): the answer-token matching, the global-sink rule, the
per-layer grounding map with sinks zeroed, the registered rule on synthetic numbers, and (model) a tiny run."""

from __future__ import annotations

import pytest
import torch

from headlab.lab import refam_squad as rs
from headlab_repro import claims as C


def test_answer_tokens_find_every_occurrence_inside_the_passage():
    text = "Q: Paris? Passage: Paris is big. Paris! Answer: Paris"
    span = (text.index("Passage: ") + 9, text.index(" Answer"))
    # one token per word (character offsets), plus an empty special token
    offsets, i = [], 0
    for w in text.split(" "):
        offsets.append((i, i + len(w)))
        i += len(w) + 1
    offsets.append((0, 0))
    got = rs.answer_tokens(offsets, text, span, ["Paris"])
    words = text.split(" ")
    assert [words[t] for t in got] == ["Paris", "Paris!"]  # the two in the passage, not the question's or the answer's
    assert rs.answer_tokens(offsets, text, span, ["London", ""]) == []


def test_global_sinks_follow_the_probe_rule():
    t = 6
    a = torch.full((2, t, t), 0.0)
    a[:, :, 0] = 0.5  # key 0: high for every (head, query) pair
    a[0, 3:, 4] = 0.5  # key 4: high for 3 of 12 pairs
    a[:, 2:, 2] = 0.2  # key 2: high for 8 of 12 pairs
    assert rs.global_sinks(a, 0.1, 0.5).tolist() == [0, 2]
    assert rs.global_sinks(a, 0.1, 0.9).tolist() == [0]
    assert rs.global_sinks(a, 0.6, 0.5).tolist() == []


def test_layer_map_zeroes_sinks_and_renormalises():
    a = torch.zeros(1, 4, 4)
    a[0, 2:, :] = torch.tensor([0.1, 0.6, 0.2, 0.1])
    queries, passage = torch.tensor([2, 3]), torch.tensor([0, 1, 2])
    raw = rs.layer_map(a, queries, passage, None)
    assert torch.allclose(raw, torch.tensor([0.1, 0.6, 0.2]) / 0.9)
    sup = rs.layer_map(a, queries, passage, torch.tensor([1, 3]))
    assert torch.allclose(sup, torch.tensor([1 / 3, 0.0, 2 / 3]))
    empty = rs.layer_map(a, queries, passage, passage)
    assert torch.allclose(empty, torch.full((3,), 1 / 3))  # nothing left: uniform


def test_refam_rule_on_synthetic_numbers():
    c = C.get("refam-squad")

    def raw(raw_k, sup_k, only_sup, only_raw, chance=0.05, n=300):
        from headlab.stats import mcnemar_exact, proportion

        a = [1] * only_sup + [0] * only_raw
        b = [0] * only_sup + [1] * only_raw
        mc = mcnemar_exact(a, b)
        return {
            "measured": {
                "items": n,
                "raw": proportion(raw_k, n),
                "suppressed": proportion(sup_k, n),
                "suppressed_vs_raw": {"only_suppressed": mc.only_a, "only_raw": mc.only_b, "mcnemar_p": mc.pvalue},
                "chance": chance,
                "items_with_passage_sinks": 40,
            }
        }

    assert c.judge(c.summarize(raw(60, 80, 22, 2)))["rule_met"]
    assert not c.judge(c.summarize(raw(60, 63, 5, 2)))["rule_met"]  # not significant
    assert not c.judge(c.summarize(raw(20, 40, 22, 2, chance=0.1)))["rule_met"]  # 0.133 < 2 x chance
    assert "no number" in c.summarize(raw(60, 80, 22, 2))["hit_suppressed"]["paper"]


def test_bad_settings():
    with pytest.raises(ValueError, match="items >= 1"):
        rs.run(items=0, quiet=True)


@pytest.mark.model
def test_tiny_run_on_smollm2():
    res = rs.run(items=3, max_chars=700, quiet=True)
    m = res.measured
    assert 1 <= m["items"] <= 3 and 0 <= m["raw"]["value"] <= 1 and 0 < m["chance"] < 1
    assert m["layers"] == [15, 29] and len(res.records) == m["items"]
