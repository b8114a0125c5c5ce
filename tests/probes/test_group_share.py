import pytest
import torch

import headlab
from headlab.probes.group_share import GroupShareProbe


def test_group_share_matches_direct_formula():
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(2, 3, 63, 40, generator=g),
        torch.randn(2, 1, 63, 40, generator=g),
        torch.randn(2, 1, 63, 40, generator=g),
    )
    _, a = headlab.reference_attention(q, k, v, return_weights=True)
    doc, rest = range(0, 20), range(20, 63)
    p = GroupShareProbe({"doc": doc, "rest": rest}, queries=range(40, 63))
    headlab.attend(q, k, v, probes=[p], path="eager", chunk=9)
    r = p.results()
    share = a[:, :, 40:, :20].sum(-1).double()  # (B, H, 23)
    assert torch.allclose(r["share:doc"][0].double(), share.mean((0, 2)), atol=1e-5)
    visible = torch.arange(41, 64).double()  # query i sees i+1 keys
    aei = share / (20 / visible)
    assert torch.allclose(r["aei:doc"][0].double(), aei.mean((0, 2)), atol=1e-4)
    assert torch.allclose(r["share:doc"] + r["share:rest"], torch.ones(1, 3), atol=1e-5)
    dom = p.dominance("doc", "rest")
    assert dom.shape == (1, 3)
    with pytest.raises(ValueError, match="unknown group"):
        p.dominance("doc", "nope")


def test_group_share_bad_groups():
    with pytest.raises(ValueError, match="at least one token group"):
        GroupShareProbe({})
    with pytest.raises(ValueError, match="non-empty"):
        GroupShareProbe({"x": []})
