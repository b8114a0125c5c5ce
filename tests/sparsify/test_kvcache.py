"""headlab.kv_cache: a compressed KV cache for decoding under a per-head plan, checked against
decoding with a full DynamicCache under the same plan (tiny random Llama models with GQA)."""

from __future__ import annotations

import pytest
import torch
from conftest import _tiny_llama
from transformers import DynamicCache

import headlab
from headlab.patterns import causal, moa, per_head, power, sink_window, window
from headlab.patterns.headplan import kv_span, plan_from_entries
from headlab.sparsify.kvcache.cache import HeadKVLayer, _Part, full_kv_nbytes
from headlab.sparsify.kvcache.spans import FULL, head_key, kept_count, layer_keys, window_at


def _plan(n_kv: int, n_layers: int = 2):
    """A mixed plan: in each layer some KV heads full, the others sink+window or an elastic MoA span."""
    streams = [sink_window(4, 16), moa([[9, 0.125]], sink=3), window(12), sink_window(2, 8)]
    plan = {}
    for layer in range(n_layers):
        heads = []
        for h in range(n_kv):
            heads.append(causal() if (h + layer) % 3 == 0 else streams[(h + 2 * layer) % len(streams)])
        plan[layer] = per_head(heads, kv_per_head=True)
    return plan


def _generate(model, ids, plan, cache, steps):
    with headlab.attach(model, pattern=plan):
        out = model.generate(
            ids,
            cache=cache,
            max_new_tokens=steps,
            min_new_tokens=steps,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
    return out.sequences, torch.stack(out.logits)


def _decodes_like_full_cache(model, ids, plan, steps):
    """Greedy decoding with ``headlab.kv_cache`` gives the tokens, and the logits to 1e-5, of a full
    DynamicCache; returns the compressed cache."""
    ref_seq, ref_logits = _generate(model, ids, plan, DynamicCache(), steps)
    cache = headlab.kv_cache(model, plan)
    seq, logits = _generate(model, ids, plan, cache, steps)
    assert torch.equal(seq, ref_seq)
    assert (logits - ref_logits).abs().max().item() < 1e-5
    return cache


def _count_attend(monkeypatch):
    calls = []
    orig = HeadKVLayer.attend

    def counted(self, *a, **k):
        calls.append(self.layer)
        return orig(self, *a, **k)

    monkeypatch.setattr(HeadKVLayer, "attend", counted)
    return calls


@pytest.mark.parametrize("heads,kv,T", [(6, 2, 63), (6, 3, 130), (6, 3, 70), (4, 4, 65)])
def test_decode_matches_full_cache(monkeypatch, heads, kv, T):
    model = _tiny_llama(heads=heads, kv=kv, d=40, layers=2)
    plan = _plan(kv)
    torch.manual_seed(T)
    ids = torch.randint(1, 101, (1, T))
    steps = 24
    calls = _count_attend(monkeypatch)
    ref_seq, ref_logits = _generate(model, ids, plan, DynamicCache(), steps)
    assert not calls
    cache = headlab.kv_cache(model, plan)
    seq, logits = _generate(model, ids, plan, cache, steps)
    assert torch.equal(seq, ref_seq)
    assert (logits - ref_logits).abs().max().item() < 1e-5
    assert len(calls) == (steps - 1) * 2  # every decode step of every layer went through the compressed path
    n = T + steps - 1
    assert cache.get_seq_length() == n
    kept = cache.kept()
    assert min(min(k) for k in kept) < T  # windows shorter than the prompt: eviction really happened


def test_nbytes_and_kept_match_the_patterns_own_masks():
    """Kept tokens per KV head = keys the pattern lets the last query see (its own rule), bytes exact."""
    kv, d, T, steps = 3, 40, 90, 21
    model = _tiny_llama(heads=6, kv=kv, d=d, layers=2)
    plan = _plan(kv)
    cache = headlab.kv_cache(model, plan)
    _generate(model, torch.randint(1, 101, (1, T)), plan, cache, steps)
    n = T + steps - 1
    expected_bytes = 0
    for layer in range(2):
        row = plan[layer].mask(1, n)[:, 0]  # (Hkv, n): what query n-1 may see per KV head
        want = row.sum(-1).tolist()
        assert cache.kept()[layer] == want
        expected_bytes += sum(want) * d * 2 * 4  # K and V, float32, batch 1
    assert cache.nbytes() == expected_bytes
    assert cache.allocated_nbytes() >= cache.nbytes()


def test_fill_from_a_full_prefill_equals_prefilling_the_compressed_cache():
    model = _tiny_llama(heads=6, kv=3, d=40, layers=2)
    plan = _plan(3)
    ids = torch.randint(1, 101, (1, 77))
    direct, full = headlab.kv_cache(model, plan), DynamicCache()
    with headlab.attach(model, pattern=plan), torch.no_grad():
        model(ids, cache=direct)
        model(ids, cache=full)
        filled = headlab.kv_cache(model, plan).fill(full)
        assert filled.kept() == direct.kept() and filled.get_seq_length() == 77
        nxt = torch.tensor([[7]])
        a = model(nxt, cache=direct).logits
        b = model(nxt, cache=filled).logits
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="empty"):
        filled.fill(full)


def test_all_full_plan_equals_dynamic_cache():
    model = _tiny_llama(heads=6, kv=2, d=40, layers=2)
    ids = torch.randint(1, 101, (1, 67))
    dense = DynamicCache()
    ref = model.generate(
        ids,
        cache=dense,
        max_new_tokens=20,
        min_new_tokens=20,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
    )
    plan = {0: per_head([causal(), causal()], kv_per_head=True)}  # layer 1 absent: dense too
    cache = headlab.kv_cache(model, plan)
    seq, logits = _generate(model, ids, plan, cache, 20)
    assert torch.equal(seq, ref.sequences)
    assert (logits - torch.stack(ref.logits)).abs().max().item() < 1e-5
    assert cache.nbytes() == full_kv_nbytes(dense)


def test_moa_elastic_span_grows_with_length():
    model = _tiny_llama(heads=6, kv=2, d=40, layers=2)
    plan = {i: per_head([moa([[5, 0.5]], sink=2), sink_window(3, 10)], kv_per_head=True) for i in range(2)}
    ids = torch.randint(1, 101, (1, 64))
    cache = _decodes_like_full_cache(model, ids, plan, 22)
    n = 64 + 21
    assert cache.kept()[0] == [2 + round(5 + 0.5 * n), 13]  # the MoA band widened during decoding


def test_batch_of_unpadded_rows_matches_full_cache():
    model = _tiny_llama(heads=6, kv=3, d=40, layers=2)
    plan = _plan(3)
    ids = torch.randint(1, 101, (2, 66))
    _decodes_like_full_cache(model, ids, plan, 20)


def test_decode_step_writes_in_place():
    """A decode step writes one slot per part: the buffers are not reallocated or copied every step."""
    model = _tiny_llama(heads=6, kv=3, d=40, layers=2)
    plan = _plan(3)
    cache = headlab.kv_cache(model, plan)
    with headlab.attach(model, pattern=plan), torch.no_grad():
        model(torch.randint(1, 101, (1, 70)), cache=cache)
        bufs = [p.k for p in cache.layers[0].parts]
        for _ in range(5):
            model(torch.randint(1, 101, (1, 1)), cache=cache)
    assert all(p.k is b for p, b in zip(cache.layers[0].parts, bufs))
    assert cache.get_seq_length() == 75


def test_query_head_plan_keeps_the_union_and_masks_per_query_head():
    """GQA groups whose query heads follow different spans: union kept, each query head masked."""
    model = _tiny_llama(heads=6, kv=2, d=40, layers=2)
    rows = [
        [sink_window(4, 16), causal(), window(9), sink_window(2, 8), sink_window(2, 8), moa([[6, 0.25]], sink=5)],
        [sink_window(3, 12)] * 3 + [causal()] * 3,
    ]
    plan = plan_from_entries(rows, model, length=128, granularity="query_head")
    ids = torch.randint(1, 101, (1, 71))
    cache = _decodes_like_full_cache(model, ids, plan, 22)
    n = 71 + 21
    assert cache.kept() == plan.kept_keys(n)
    assert cache.kept()[0][1] == 5 + round(6 + 0.25 * n)  # largest sink + the widest band of its query heads


def test_head_plan_from_entries_matches_full_cache_and_plan_budget():
    model = _tiny_llama(heads=6, kv=3, d=40, layers=2)
    rows = [
        [causal(), sink_window(4, 16), {"pattern": "moa", "args": {"spans": [[10, 0.1]], "sink": 2}}],
        [sink_window(4, 16), sink_window(4, 16), causal()],
    ]
    plan = plan_from_entries(rows, model, length=100)
    ids = torch.randint(1, 101, (1, 80))
    cache = _decodes_like_full_cache(model, ids, plan, 21)
    assert cache.kept() == plan.kept_keys(100)
    assert cache.nbytes() == sum(map(sum, plan.kept_keys(100))) * 40 * 2 * 4
    other = _tiny_llama(heads=6, kv=3, d=40, layers=3)
    with pytest.raises(ValueError, match="fingerprint"):
        headlab.kv_cache(other, plan)


@pytest.mark.parametrize("p", [sink_window(4, 16), window(7), moa([[3, 0.25]], sink=2), moa([[0.5, 1.0]], sink=0), causal()])
def test_window_matches_headplan_kv_span(p):
    for n in range(1, 300, 7):
        span = kv_span(p, n)
        assert window_at(head_key(p), n) == (None if span is None else span[1])


@pytest.mark.parametrize(
    "key",
    [
        ("window", 4, 16),
        ("window", 0, 5),
        ("window", 9, 3),
        ("moa", 3, 9.0, 0.125),
        ("moa", 2, 1.0, 1.0),
        ("moa", 0, 2.0, 0.5),
        FULL,
        ("union", (("window", 2, 6), ("moa", 4, 1.0, 0.25), ("window", 0, 9))),
        ("union", (("window", 2, 6), FULL)),
    ],
)
@pytest.mark.parametrize("T", [1, 3, 40])
def test_part_keeps_exactly_sink_and_window(key, T):
    """Plain reference: after every step the kept positions are {j < sink} ∪ {j >= n - w(n)}."""
    part = _Part(key, [0, 1])
    pos = torch.arange(T, dtype=torch.float32).view(1, 1, T, 1).expand(1, 2, T, 3).contiguous()
    part.prefill(pos, pos + 0.5)
    for n in range(T, T + 60):
        if n > T:
            x = torch.full((1, 2, 1, 3), float(n - 1))
            part.append(x, x + 0.5, n)
        k, v = part.view()
        got = sorted(k[0, 0, :, 0].tolist())
        assert torch.equal(k[0, 1], k[0, 0]) and torch.equal(v, k + 0.5)
        heads = key[1] if key[0] == "union" else (key,)
        want = [j for j in range(n) if any(_sees(h, n, j) for h in heads)]  # union of what the heads see
        assert got == [float(j) for j in want]
        if part.masked:  # each query head's mask row = its own rule on the slot positions
            m = part.mask(n)[0, 0]
            for r, h in enumerate(heads):
                assert m[r].tolist() == [_sees(h, n, int(j)) for j in k[0, 0, :, 0].tolist()]
        assert part.count == kept_count(key, n)


def _sees(key, n, j):
    """Brute force: may the query at position n-1 see key j under this head's rule?"""
    if key == FULL:
        return True
    w = round(key[2] + key[3] * n) if key[0] == "moa" else key[2]
    return j < key[1] or n - 1 - j < w


def test_head_keys_follow_pattern_rules():
    assert head_key(causal()) == FULL
    assert head_key(sink_window(4, 16)) == ("window", 4, 16)
    assert head_key(window(7)) == ("window", 0, 7)
    assert head_key({"pattern": "moa", "args": {"spans": [[3, 0.25]], "sink": 2}}) == ("moa", 2, 3.0, 0.25)
    # a query-head plan: one key per KV head when its query heads agree, else their union
    q = per_head([causal(), causal(), sink_window(1, 5), sink_window(1, 5)])
    assert layer_keys(q, 0, 4, 2) == [FULL, ("window", 1, 5)]
    q = per_head([causal(), window(3), sink_window(1, 5), sink_window(1, 5)])
    assert layer_keys(q, 0, 4, 2) == [("union", (FULL, ("window", 0, 3))), ("window", 1, 5)]
    assert layer_keys(moa([[4, 0.0], [6, 0.5]], sink=1, kv_per_head=True), 0, 4, 2) == [
        ("moa", 1, 4.0, 0.0),
        ("moa", 1, 6.0, 0.5),
    ]


# ------------------------------------------------------------------------ bad input
def test_needs_attach():
    model = _tiny_llama(heads=6, kv=3, d=40, layers=2)
    with pytest.raises(RuntimeError, match="attach"):
        model.generate(torch.randint(1, 101, (1, 20)), cache=headlab.kv_cache(model, _plan(3)), max_new_tokens=2, pad_token_id=0)


def test_attached_pattern_must_match_plan():
    model = _tiny_llama(heads=6, kv=3, d=40, layers=2)
    other = {i: sink_window(4, 16) for i in range(2)}
    with headlab.attach(model, pattern=other), pytest.raises(ValueError, match="same plan"):
        model.generate(torch.randint(1, 101, (1, 40)), cache=headlab.kv_cache(model, _plan(3)), max_new_tokens=3, pad_token_id=0)


def test_plan_for_another_model_is_refused():
    model = _tiny_llama(heads=6, kv=3, d=40, layers=2)
    with pytest.raises(ValueError, match="layers 0..1"):
        headlab.kv_cache(model, {5: causal()})
    with pytest.raises(ValueError, match="3 KV heads"):
        headlab.kv_cache(model, {0: per_head([causal()] * 2, kv_per_head=True)})
    with pytest.raises(ValueError, match="cannot serve pattern power"):
        headlab.kv_cache(model, {0: power()})
    with pytest.raises(ValueError, match="HeadPlan"):
        headlab.kv_cache(model, [causal()])


def test_padded_batch_is_refused():
    model = _tiny_llama(heads=6, kv=3, d=40, layers=2)
    plan = _plan(3)
    ids = torch.randint(1, 101, (2, 30))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    with headlab.attach(model, pattern=plan), pytest.raises(ValueError, match="padded"):
        model.generate(ids, attention_mask=mask, cache=headlab.kv_cache(model, plan), max_new_tokens=3, pad_token_id=0)


def test_probes_and_second_prompt_are_refused():
    model = _tiny_llama(heads=6, kv=3, d=40, layers=2)
    plan = _plan(3)
    cache = headlab.kv_cache(model, plan)
    with headlab.attach(model, pattern=plan, probes=["entropy"]), pytest.raises(NotImplementedError, match="probes"):
        model.generate(torch.randint(1, 101, (1, 30)), cache=cache, max_new_tokens=3, pad_token_id=0)
    cache = headlab.kv_cache(model, plan)
    with headlab.attach(model, pattern=plan), torch.no_grad():
        model(torch.randint(1, 101, (1, 30)), cache=cache)
        with pytest.raises(NotImplementedError, match="one token per step"):
            model(torch.randint(1, 101, (1, 4)), cache=cache)
