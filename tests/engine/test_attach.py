"""attach() on tiny random Llama (GQA), GPT-2 and BERT: identity, probes vs eager attentions,
padding, decode with a KV cache, restoration, bad input."""

import pytest
import torch
from formulas import METRICS, formulas_from_attentions

import headlab
from headlab.edits.base import Edit
from headlab.engine.sites import parse_sites
from headlab.measure.stats import head_stats


class NoOpWeights(Edit):
    """Touches the weights stage without changing them: forces the chunked eager path."""

    name = "noop"

    def weights(self, a, ctx):
        return a


def _inputs(vocab=101, B=2, T=40, pad=6):
    torch.manual_seed(1)
    ids = torch.randint(0, vocab, (B, T))
    am = torch.ones(B, T, dtype=torch.long)
    am[0, :pad] = 0
    return ids, am


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gpt2", "tiny_bert"])
def test_nothing_attached_is_identical_and_restored(name, request):
    model = request.getfixturevalue(name)
    ids, am = _inputs()
    with torch.no_grad():
        ref = model(ids, attention_mask=am)[0]
        with headlab.attach(model) as run:
            out = model(ids, attention_mask=am)[0]
    assert run.calls == model.config.num_hidden_layers
    assert torch.equal(ref, out)
    assert model.config._attn_implementation == "sdpa"


def test_restored_after_exception(tiny_llama):
    with pytest.raises(RuntimeError, match="boom"), headlab.attach(tiny_llama, probes=["sink"]):
        raise RuntimeError("boom")
    assert tiny_llama.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gpt2", "tiny_bert"])
@pytest.mark.parametrize("force_eager", [False, True])
def test_probes_match_eager_attentions(name, force_eager, request):
    model = request.getfixturevalue(name)
    ids, am = _inputs()
    if name == "tiny_bert":
        am = torch.ones_like(am)
        am[0, -6:] = 0  # right padding for the encoder
    with torch.no_grad():
        edits = [NoOpWeights()] if force_eager else []
        with headlab.attach(model, probes=METRICS, edits=edits) as run:
            logits = model(ids, attention_mask=am)[0]
        model.set_attn_implementation("eager")
        try:
            o = model(ids, attention_mask=am, output_attentions=True)
        finally:
            model.set_attn_implementation("sdpa")
    want = formulas_from_attentions(o.attentions, am, causal=name != "tiny_bert")
    got = run.stats()
    for m in METRICS:
        assert torch.allclose(got[m].double(), want[m], atol=1e-4), (m, got[m], want[m])
    valid = am.bool()
    assert torch.allclose(logits[valid], o[0][valid], atol=1e-4)


def test_padded_batch_equals_separate_rows(tiny_llama):
    ids, am = _inputs(pad=9)
    with headlab.attach(tiny_llama, probes=METRICS) as batched, torch.no_grad():
        tiny_llama(ids, attention_mask=am)
    with headlab.attach(tiny_llama, probes=METRICS) as rows, torch.no_grad():
        tiny_llama(ids[:1, 9:])
        tiny_llama(ids[1:])
    for m in METRICS:
        assert torch.allclose(batched.stats()[m], rows.stats()[m], atol=1e-5), m


@pytest.mark.parametrize("edits", [[], [NoOpWeights()]])
def test_generation_with_cache_matches_plain(tiny_llama, edits):
    ids, am = _inputs(T=12, pad=3)
    kw = dict(attention_mask=am, max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        ref = tiny_llama.generate(ids, **kw)
        with headlab.attach(tiny_llama, probes=["sink", "entropy"], edits=edits) as run:
            out = tiny_llama.generate(ids, **kw)
    assert torch.equal(ref, out)
    assert run.calls == 2 * 6  # 2 layers x (1 prefill + 5 decode steps)
    s = run.stats()["sink"]
    assert s.shape == (2, 3) and torch.isfinite(s).all()


def test_head_stats_api(tiny_llama):
    ids, am = _inputs()
    st = head_stats(tiny_llama, ids, metrics=["sink", "entropy"], attention_mask=am)
    assert set(st) == {"sink", "entropy"} and st["sink"].shape == (2, 3)
    with headlab.attach(tiny_llama, probes=["sink", "entropy"]) as run, torch.no_grad():
        tiny_llama(ids, attention_mask=am)
    assert torch.allclose(run.stats()["sink"], st["sink"])


def test_bad_inputs(tiny_llama):
    with pytest.raises(ValueError, match="unknown metrics"):
        head_stats(tiny_llama, torch.zeros(1, 4, dtype=torch.long), metrics=["sinkk"])
    with pytest.raises(ValueError, match="empty input"):
        head_stats(tiny_llama, torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"valid lengths are 1\.\.256"):
        head_stats(tiny_llama, torch.zeros(1, 300, dtype=torch.long))
    with pytest.raises(ValueError, match=r"0\.\.100"):
        head_stats(tiny_llama, torch.full((1, 4), 500))
    with pytest.raises(ValueError, match=r"layer 7 out of range.*valid layers are 0\.\.1"):
        parse_sites("L7H0", 2, 3)
    with pytest.raises(ValueError, match=r"head 3 out of range: valid heads are 0\.\.2"):
        parse_sites((1, 3), 2, 3)
    with pytest.raises(ValueError, match="unknown probe"), headlab.attach(tiny_llama, probes=["nope"]):
        pass
    with pytest.raises(ValueError, match=r"pattern layer 5 out of range"), headlab.attach(tiny_llama, pattern={5: object()}):
        pass


def test_model_without_attention_interface():
    class Plain(torch.nn.Module):
        config = None

    with pytest.raises(ValueError, match="does not route its attention"), headlab.attach(Plain()):
        pass


def test_sites_parsing():
    assert parse_sites("L1H2,L0", 2, 3) == {0: [0, 1, 2], 1: [2]}
    assert parse_sites({1: [0, 2]}, 2, 3) == {1: [0, 2]}
    assert parse_sites([(0, 1), "L1H0"], 2, 3) == {0: [1], 1: [0]}
    assert parse_sites("all", 1, 2) == {0: [0, 1]}
    with pytest.raises(ValueError, match="bad site"):
        parse_sites("layer3", 2, 3)


@pytest.mark.parametrize("kind", ["window", "kv_strided", "topk"])
def test_pattern_on_padded_batch_equals_unpadded_rows(kind):
    """Patterns see positions from each row's first real token: a left-padded row gives the same
    logits as the same tokens alone (sparse kernel path), for shared, per-KV-head and dynamic patterns."""
    from conftest import _tiny_llama

    from headlab import patterns

    tiny_llama = _tiny_llama(heads=6, kv=3, d=20)  # GQA group 2
    p = {
        "window": patterns.window(5),
        "kv_strided": patterns.strided(block=4, local_blocks=1, stride=2, n_heads=3),
        "topk": patterns.topk_blocks(block=4, k=2),
    }[kind]
    ids, am = _inputs(T=24, pad=7)
    with torch.no_grad(), headlab.attach(tiny_llama, pattern=p):
        batched = tiny_llama(ids, attention_mask=am).logits
        alone0 = tiny_llama(ids[:1, 7:]).logits
        alone1 = tiny_llama(ids[1:]).logits
        dense = None
    with torch.no_grad():
        dense = tiny_llama(ids[1:]).logits
    assert torch.allclose(batched[0, 7:], alone0[0], atol=1e-4)
    assert torch.allclose(batched[1], alone1[0], atol=1e-4)
    assert not torch.allclose(alone1, dense, atol=1e-4)  # the pattern really changed something
