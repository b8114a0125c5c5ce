"""``dual_stream`` (arXiv 2501.12206, text version): the two streams against plain references at awkward sizes, the
selection read from the prompt's forward against a probe of the same forward, the emphasis against ``emphasis`` given
the same tokens (prefill and cached decoding, left padding), identity at alpha = beta = 0, bind and value errors, a
JSON round trip and the ``headlab steer emphasize`` method on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import llama

import headlab
from headlab import edits as E
from headlab.edits.base import Edit
from headlab.edits.dual_stream import local_stream, sink_stream

torch.set_num_threads(1)


def test_local_stream_is_the_top_ratio_with_earlier_ties():
    p = torch.tensor([0.1, 0.5, 0.5, 0.2, 0.05, 0.9, 0.3])
    assert local_stream(p, 0.25).tolist() == [1, 5]  # ceil(0.25 * 7) = 2: 0.9 and the earlier 0.5
    g = torch.Generator().manual_seed(0)
    for n, ratio in ((63, 0.25), (40, 0.1), (3, 0.9)):
        x = torch.rand(n, generator=g)
        k = math.ceil(ratio * n)
        ref = sorted(sorted(range(n), key=lambda i: -float(x[i]))[:k])
        assert local_stream(x, ratio).tolist() == ref


def test_sink_stream_is_the_iqr_outliers():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(63, generator=g) * 0.1
    x[[5, 40]] = torch.tensor([3.0, 2.0])
    q1, q3 = torch.quantile(x.double(), 0.25).item(), torch.quantile(x.double(), 0.75).item()
    ref = [i for i in range(63) if x[i] > q3 + 1.5 * (q3 - q1)]
    assert sink_stream(x).tolist() == ref and {5, 40} <= set(ref)
    assert sink_stream(torch.ones(10)).tolist() == [] and sink_stream(torch.tensor([1.0, 9.0])).tolist() == []


@pytest.fixture(scope="module")
def tiny():
    m = llama(
        vocab_size=61,
        hidden_size=60,
        num_hidden_layers=4,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 61, (2, 19), generator=g)
    am = torch.ones_like(ids)
    am[1, :4] = 0  # row 1 left-padded: its positions count from its first real token
    group = [list(range(2, 13)), list(range(1, 10))]
    return m, ids, am, group


def _logits(m, ids, am, edits, state=None):
    with torch.no_grad(), headlab.attach(m, edits=edits, state=state or {}):
        return m(input_ids=ids, attention_mask=am).logits


def _selection(m, ids, am, group, ratio):
    """Reference streams from a probe of the plain forward: the last row's head-summed attention in layers 0 and 1."""
    from headlab.measure.contrast import LastRowProbe

    out = []
    for b in range(ids.shape[0]):
        real = ids[b][am[b] == 1][None]
        probe = LastRowProbe()
        with torch.no_grad(), headlab.attach(m, probes=[probe]):
            m(input_ids=real)
        rows = probe.result().double().sum(1)  # (L, S) head-summed
        keys = torch.tensor(group[b])
        local = keys[local_stream(rows[0, keys], ratio)].tolist()
        sinks = keys[sink_stream(rows[1, keys])].tolist()
        out.append(([j for j in local if j not in sinks], sinks))
    return out


def test_selection_and_emphasis_equal_emphasis_on_the_reference_tokens(tiny):
    m, ids, am, group = tiny
    sel = _selection(m, ids, am, group, 0.25)
    assert all(emph for emph, _ in sel)
    got = _logits(m, ids, am, [E.dual_stream(group, alpha=0.7, beta=0.3, ratio=0.25)])
    ref = _logits(m, ids, am, [E.emphasis([e for e, _ in sel], sinks=[s for _, s in sel], alpha=0.7, beta=0.3)])
    assert torch.allclose(got, ref, atol=1e-5)
    plain = _logits(m, ids, am, [Edit("all")])
    assert not torch.allclose(got[:, -1], plain[:, -1], atol=1e-4)  # it does something


def test_decoding_keeps_the_prompts_selection(tiny):
    m, ids, am, group = tiny
    sel = _selection(m, ids, am, group, 0.5)

    def gen(edits):
        with torch.no_grad(), headlab.attach(m, edits=edits):
            return m.generate(input_ids=ids, attention_mask=am, max_new_tokens=4, do_sample=False, pad_token_id=0)

    ref = gen([E.emphasis([e for e, _ in sel], sinks=[s for _, s in sel], alpha=2.0, beta=0.3)])
    assert torch.equal(gen([E.dual_stream(group, alpha=2.0, ratio=0.5)]), ref)


def test_zero_alpha_and_beta_is_the_identity(tiny):
    m, ids, am, group = tiny
    ref = _logits(m, ids, am, [Edit("all")])
    assert torch.equal(_logits(m, ids, am, [E.dual_stream(group, alpha=0.0, beta=0.0)]), ref)


def test_named_group_head_weights_and_round_trip(tiny):
    m, ids, am, group = tiny
    e = E.dual_stream("context", alpha=0.5, head_weights={(2, 1): 2.0, (3, 4): 1.0})
    state = {"groups": {"context": group}}
    out = _logits(m, ids, am, [e], state)
    cfg = E.to_config([e])
    again = E.from_config(cfg)
    assert again[0].name == "dual_stream" and again[0].params == e.params
    assert torch.allclose(_logits(m, ids, am, again, state), out, atol=1e-6)
    uniform = _logits(m, ids, am, [E.dual_stream("context", alpha=0.5)], state)
    assert not torch.allclose(out, uniform, atol=1e-5)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: E.dual_stream(ratio=0.0), "ratio"),
        (lambda: E.dual_stream(ratio=1.5), "ratio"),
        (lambda: E.dual_stream(select_layer=-1), "select_layer=-1 must be an int >= 0"),
        (lambda: E.dual_stream(alpha=-1.0), "alpha"),
    ],
)
def test_bad_values_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_selection_layers_must_come_before_the_emphasis(tiny):
    m, ids, am, group = tiny
    with pytest.raises(ValueError, match=r"sink_layer=2 must come before the first emphasised layer 2 \(valid 0..1\)"):
        _logits(m, ids, am, [E.dual_stream(group, sink_layer=2)])
    with pytest.raises(ValueError, match=r"select_layer=1 must come before the first emphasised layer 1"):
        _logits(m, ids, am, [E.dual_stream(group, sites="L1-3", select_layer=1, sink_layer=0)])


def test_steer_emphasize_on_a_tiny_model():
    from conftest import REVIEW_WORDS, word_tokenizer

    from headlab.steer import steer

    tok = word_tokenizer([*REVIEW_WORDS, "Answer", "question", "document", "Question", ":", ".", "?"])
    model = llama(0, vocab_size=len(tok), num_hidden_layers=4)  # layers 2..3 emphasised
    kw = dict(tune_on=2, eval_on=2, batch_size=2, progress=False, model_tok=(model, tok))
    res = steer("emphasize", "squad", **kw)
    trials = {t["candidate"] for t in res["tuning"]["trials"]}
    assert trials == {"baseline", "alpha=0.35", "alpha=0.35, VHD head weights", "alpha=0.7", "alpha=0.7, VHD head weights"}
    assert res["tuning"]["chosen"] in trials and len(res["tuning"]["vhd_top"]) == 10
    assert all(e["edit"] == "dual_stream" for e in res["edits"])
    forced = steer("emphasize", "squad", param=0.7, **kw)
    assert [e["edit"] for e in forced["edits"]] == ["dual_stream"] and forced["edits"][0]["params"]["alpha"] == 0.7
