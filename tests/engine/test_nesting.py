"""attach inside attach on the same model composes: both runs see every call, inner edits apply after
the outer ones, patterns intersect, and each block restores what it found (also on errors)."""

from __future__ import annotations

import pytest
import torch

from headlab import edits, patterns
from headlab.engine.hf import attach


def _ids(seed=0, n=25):
    return torch.randint(0, 101, (2, n), generator=torch.Generator().manual_seed(seed))


def test_outer_probes_count_calls_made_inside_the_inner_block(tiny_llama):
    ids = _ids()
    with attach(tiny_llama, probes=["entropy"]) as alone:
        tiny_llama(ids)
    with attach(tiny_llama, probes=["entropy"]) as outer:
        with attach(tiny_llama, probes=["sink"]) as inner:
            tiny_llama(ids)
        assert (outer.calls, inner.calls) == (2, 2)
        tiny_llama(ids)  # after the inner block: only the outer run
    assert (outer.calls, inner.calls) == (4, 2)
    torch.testing.assert_close(outer.stats()["entropy"], alone.stats()["entropy"])  # same text twice: same mean
    assert set(inner.stats()) == {"sink"}


def test_inner_edits_apply_after_the_outer_ones(tiny_llama):
    ids = _ids(1)
    add = edits.on_output(lambda o, ctx: o + 1.0, sites="L0H1")
    mul = edits.on_output(lambda o, ctx: o * 3.0, sites="L0H1")
    with attach(
        tiny_llama,
        edits=[edits.on_output(lambda o, ctx: o + 1.0, sites="L0H1"), edits.on_output(lambda o, ctx: o * 3.0, sites="L0H1")],
    ):
        add_then_mul = tiny_llama(ids).logits
    with attach(
        tiny_llama,
        edits=[edits.on_output(lambda o, ctx: o * 3.0, sites="L0H1"), edits.on_output(lambda o, ctx: o + 1.0, sites="L0H1")],
    ):
        mul_then_add = tiny_llama(ids).logits
    assert not torch.allclose(add_then_mul, mul_then_add)  # the order matters, so the test can tell
    with attach(tiny_llama, edits=[add]):
        with attach(tiny_llama, edits=[mul]):
            nested = tiny_llama(ids).logits
        outer_only = tiny_llama(ids).logits
    torch.testing.assert_close(nested, add_then_mul)
    with attach(tiny_llama, edits=[edits.on_output(lambda o, ctx: o + 1.0, sites="L0H1")]):
        torch.testing.assert_close(outer_only, tiny_llama(ids).logits)


def test_nested_patterns_intersect(tiny_llama):
    ids = _ids(2, 40)
    with attach(tiny_llama, pattern=patterns.window(9) & patterns.sink_window(1, 5)):
        want = tiny_llama(ids).logits
    with attach(tiny_llama, pattern=patterns.window(9)), attach(tiny_llama, pattern=patterns.sink_window(1, 5)):
        got = tiny_llama(ids).logits
    torch.testing.assert_close(got, want)


def test_state_inner_first_then_outer(tiny_llama):
    seen = []

    def look(o, ctx):
        seen.append((ctx.state.get("a"), ctx.state.get("b")))
        return o

    with (
        attach(tiny_llama, state={"a": 1, "b": 1}),
        attach(tiny_llama, edits=[edits.on_output(look, sites="L0")], state={"b": 2}),
    ):
        tiny_llama(_ids(3))
    assert seen == [(1, 2)]


def test_model_restored_in_order_also_on_errors(tiny_llama):
    original = tiny_llama.config._attn_implementation
    with attach(tiny_llama, probes=["sink"]):
        outer_impl = tiny_llama.config._attn_implementation
        with pytest.raises(RuntimeError, match="boom"), attach(tiny_llama, probes=["entropy"]):
            assert tiny_llama.config._attn_implementation != outer_impl
            raise RuntimeError("boom")
        assert tiny_llama.config._attn_implementation == outer_impl
    assert tiny_llama.config._attn_implementation == original
    with pytest.raises(RuntimeError, match="boom2"), attach(tiny_llama, probes=["sink"]), attach(tiny_llama, probes=["entropy"]):
        raise RuntimeError("boom2")
    assert tiny_llama.config._attn_implementation == original
    ids = _ids(4)
    plain = tiny_llama(ids).logits
    with attach(tiny_llama) as run:  # still works normally afterwards
        torch.testing.assert_close(tiny_llama(ids).logits, plain, atol=1e-5, rtol=1e-5)
    assert run.calls == 2


def test_out_of_order_exit_restores_the_original(tiny_llama):
    original = tiny_llama.config._attn_implementation
    outer_cm, inner_cm = attach(tiny_llama, probes=["sink"]), attach(tiny_llama, probes=["entropy"])
    outer_cm.__enter__()
    inner_cm.__enter__()
    outer_cm.__exit__(None, None, None)  # closed first, by hand
    inner_cm.__exit__(None, None, None)
    assert tiny_llama.config._attn_implementation == original


def test_same_object_twice_is_refused(tiny_llama):
    e = edits.on_output(lambda o, ctx: o)
    with attach(tiny_llama, edits=[e]), pytest.raises(ValueError, match="already attached"), attach(tiny_llama, edits=[e]):
        pass
    from headlab.probes import EntropyProbe

    p = EntropyProbe()
    with attach(tiny_llama, probes=[p]), pytest.raises(ValueError, match="already attached"), attach(tiny_llama, probes=[p]):
        pass


def test_separate_models_do_not_nest(tiny_llama, tiny_gpt2):
    with attach(tiny_llama, probes=["sink"]) as a, attach(tiny_gpt2, probes=["sink"]) as b:
        tiny_gpt2(_ids(5))
    assert b.calls == 2 and a.calls == 0
