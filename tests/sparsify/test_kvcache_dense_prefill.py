"""``headlab.kv_cache(model, plan, prefill="dense")``: full attention over the prompt, then each head keeps only
its planned keys for decoding (the contract of a kvpress press). Checked against a reference that prefills with
plain full attention into a DynamicCache and masks every decode step to the plan's kept positions (the plan's
own pattern over the full cache: sink + window of each streaming head, everything for full heads)."""

from __future__ import annotations

import pytest
import torch
from conftest import _tiny_llama
from transformers import DynamicCache

import headlab
from headlab.patterns import causal, moa, per_head, sink_window, window
from headlab.sparsify.kvcache import PREFILLS


def _plan(n_kv: int, n_layers: int = 2):
    streams = [sink_window(4, 16), moa([[9, 0.125]], sink=3), window(12), sink_window(2, 8)]
    return {
        layer: per_head(
            [causal() if (h + layer) % 3 == 0 else streams[(h + 2 * layer) % len(streams)] for h in range(n_kv)],
            kv_per_head=True,
        )
        for layer in range(n_layers)
    }


def _greedy(model, ids, steps, cache, plan=None, prefill_attached=True):
    """Prefill ``ids`` then ``steps`` greedy single-token steps; returns (tokens, logits per step). The prefill runs
    inside ``attach(plan)`` when ``prefill_attached``, else with the model's own attention; steps always attached."""
    T = ids.shape[1]
    logits = []
    if prefill_attached:
        with headlab.attach(model, pattern=plan):
            out = model(input_ids=ids, position_ids=torch.arange(T)[None], cache=cache, use_cache=True)
    else:
        out = model(input_ids=ids, position_ids=torch.arange(T)[None], cache=cache, use_cache=True)
    logits.append(out.logits[0, -1])
    nxt = out.logits[0, -1].argmax()
    toks = [int(nxt)]
    with headlab.attach(model, pattern=plan):
        for s in range(steps):
            out = model(input_ids=nxt.view(1, 1), position_ids=torch.tensor([[T + s]]), cache=cache, use_cache=True)
            logits.append(out.logits[0, -1])
            nxt = out.logits[0, -1].argmax()
            toks.append(int(nxt))
    return toks, torch.stack(logits)


@pytest.mark.parametrize("heads,kv", [(6, 3), (4, 4), (6, 2)])
def test_dense_prefill_then_plan_decode_matches_masked_reference(heads, kv):
    model = _tiny_llama(heads=heads, kv=kv, d=16, layers=2, vocab=97)
    plan = _plan(kv)
    ids = torch.randint(0, 97, (1, 57), generator=torch.Generator().manual_seed(1))
    ref_toks, ref_logits = _greedy(model, ids, 12, DynamicCache(), plan, prefill_attached=False)
    cache = headlab.kv_cache(model, plan, prefill="dense")
    toks, logits = _greedy(model, ids, 12, cache, plan)
    assert toks == ref_toks
    assert (logits - ref_logits).abs().max().item() < 1e-5
    # the prompt's logits are the dense model's, not the sparse plan's
    with torch.no_grad():
        dense = model(input_ids=ids).logits[0, -1]
    assert (logits[0] - dense).abs().max().item() < 1e-5
    # after the prefill each head kept exactly its planned positions (those a full cache's fill keeps)
    fresh = headlab.kv_cache(model, plan, prefill="dense")
    _greedy(model, ids, 0, fresh, plan)
    assert fresh.kept() == headlab.kv_cache(model, plan).fill(_prefilled(model, ids)).kept()


def _prefilled(model, ids):
    c = DynamicCache()
    with torch.no_grad():
        model(input_ids=ids, cache=c, use_cache=True)
    return c


def test_sparse_prefill_stays_the_default_and_differs():
    model = _tiny_llama(heads=6, kv=3, d=16, layers=2, vocab=97)
    plan = _plan(3)
    ids = torch.randint(0, 97, (1, 57), generator=torch.Generator().manual_seed(2))
    assert headlab.kv_cache(model, plan).prefill == "sparse"
    _, sparse = _greedy(model, ids, 2, headlab.kv_cache(model, plan), plan)
    _, dense = _greedy(model, ids, 2, headlab.kv_cache(model, plan, prefill="dense"), plan)
    assert (sparse[0] - dense[0]).abs().max().item() > 1e-4  # the plan's pattern did change the prompt's pass


def test_dense_prefill_with_generate_and_reset():
    model = _tiny_llama(heads=6, kv=3, d=16, layers=2, vocab=97)
    plan = _plan(3)
    ids = torch.randint(0, 97, (1, 40), generator=torch.Generator().manual_seed(3))
    cache = headlab.kv_cache(model, plan, prefill="dense")
    with headlab.attach(model, pattern=plan):
        out = model.generate(ids, cache=cache, max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=0)
    ref, _ = _greedy(model, ids, 4, DynamicCache(), plan, prefill_attached=False)
    assert out[0, 40:].tolist() == ref
    cache.reset()
    assert cache.get_seq_length() == 0


def test_bad_prefill_value():
    model = _tiny_llama(heads=6, kv=3, d=16, layers=2, vocab=97)
    with pytest.raises(ValueError, match="prefill must be one of"):
        headlab.kv_cache(model, _plan(3), prefill="full")
    assert PREFILLS == ("sparse", "dense")


def test_dense_prefill_refuses_probes():
    model = _tiny_llama(heads=6, kv=3, d=16, layers=2, vocab=97)
    plan = _plan(3)
    cache = headlab.kv_cache(model, plan, prefill="dense")
    with headlab.attach(model, pattern=plan, probes=["entropy"]), pytest.raises(NotImplementedError, match="dense prefill"):
        model(input_ids=torch.zeros(1, 8, dtype=torch.long), cache=cache, use_cache=True)
