"""Retrieval score protocol pieces, and a short real-model run (marked)."""

import pytest
import torch

from headlab.engine.context import AttnContext
from headlab.measure.retrieval import NEEDLES, build_case, retrieval_case, rouge1_recall
from headlab.probes.retrieval import ArgmaxProbe, RetrievalProbe


def test_rouge1_recall():
    assert rouge1_recall("Seven purple elephants, dancing!", "seven purple elephants dancing") == 1.0
    assert rouge1_recall("two purple cats", "seven purple elephants dancing") == 0.25
    assert rouge1_recall("anything", "") == 0.0


def test_argmax_probe_keeps_last_query_only():
    p = ArgmaxProbe()
    a = torch.zeros(1, 2, 3, 5)
    a[0, 0, 2, 4] = 1
    a[0, 1, 2, 1] = 1
    a[0, :, 0, 0] = 1
    ctx = AttnContext(3, 4, 2, 1, True, torch.arange(5)[None], torch.arange(2, 5)[None], q_index=torch.arange(3))
    p.update(a, ctx)
    assert p.last[3].tolist() == [[4, 1]]


def test_retrieval_probe_credits_copying_heads_only():
    p = RetrievalProbe()
    p.reset(4, 3)
    prompt = torch.tensor([5, 6, 7, 8, 9, 10])
    p.last = {1: torch.tensor([[2, 3, 0]]), 2: torch.tensor([[4, 2, 2]])}  # top-1 key per head, row 0
    p.credit(prompt, (2, 5), token=7)  # answer span = positions 2..4; generated token 7 sits at position 2
    want = torch.zeros(4, 3)
    want[1, 0] = want[2, 1] = want[2, 2] = 1 / 3  # heads whose top key is position 2 (in span, token 7)
    assert torch.allclose(p.result(), want)
    p.credit(prompt, (2, 5), token=9)  # now position 4 holds the generated token: only L2H0 copies it
    want[2, 0] += 1 / 3
    assert torch.allclose(p.result(), want)
    with pytest.raises(ValueError, match="answer span"):
        p.credit(prompt, (4, 9), token=9)
    assert RetrievalProbe.role.role == "retrieval" and RetrievalProbe.protocol and ArgmaxProbe is RetrievalProbe
    with pytest.raises(RuntimeError, match="before any attention call"):
        RetrievalProbe().credit(prompt, (2, 5), 7)


@pytest.mark.model
def test_needle_span_and_real_retrieval(smollm2):
    model, tok = smollm2
    ids, (s, e), answer = build_case(tok, 300, 0.5, 2)
    assert tok.decode(ids[0, s:e]).strip() == answer
    with pytest.raises(ValueError, match=r"depth must be in \[0, 1\]"):
        build_case(tok, 300, 1.5, 0)
    with pytest.raises(ValueError, match=r"needle must be in 0\.\.2"):
        build_case(tok, 300, 0.5, len(NEEDLES))
    case = retrieval_case(model, tok, 300, 0.5, 2, max_new=12)
    assert case.recall > 0.5, case.answer  # SmolLM2 copies this needle at 300 tokens
    assert float(case.scores.max()) > 0.1  # some heads copied it
    assert case.scores.shape == (30, 9)
