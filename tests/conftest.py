"""Shared fixtures: tiny random models (from_config) and the real embedded models (marked)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


#: the tiny random Llama every test starts from: 3 query heads on 1 KV head, d = 40, 2 layers
TINY_LLAMA = dict(
    vocab_size=101,
    hidden_size=120,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=3,
    num_key_value_heads=1,
    max_position_embeddings=256,
)


def llama(seed: int | None = 0, **config):
    """A random ``LlamaForCausalLM`` in eval mode: :data:`TINY_LLAMA` with ``config`` overriding any LlamaConfig
    field, built after ``torch.manual_seed(seed)`` (``None``: the current random state)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if seed is not None:
        torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, **config})).eval()


#: the start of the tiny test vocabularies: a few words of movie reviews
REVIEW_WORDS = ["the", "a", "film", "movie", "was", "is", "great", "awful", "good", "bad", "fun", "dull", "plot"]


def word_tokenizer(words, split: str = "whitespace"):
    """A word-level tokenizer over "[UNK]", "[PAD]" (also the EOS token) and ``words``; ``split``: "whitespace"
    (punctuation apart) or "whitespace_split" (on spaces only)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", *words])}
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace() if split == "whitespace" else pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]", pad_token="[PAD]", eos_token="[PAD]")


def _tiny_llama(heads=3, kv=1, d=40, layers=2, vocab=101):
    return llama(
        vocab_size=vocab, hidden_size=heads * d, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv
    )


@pytest.fixture
def tiny_llama():
    return _tiny_llama()


@pytest.fixture
def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=101, n_embd=48, n_layer=2, n_head=3, n_positions=128)
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture
def tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=101,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return BertModel(cfg).eval()


class FakeClock:
    """A clock for headlab.timing that only moves when a test advances ``t`` (process time runs at half speed)."""

    def __init__(self):
        self.t = 0.0

    def perf_counter(self):
        return self.t

    def process_time(self):
        return self.t / 2


@pytest.fixture
def fake_clock(monkeypatch):
    """headlab.timing (and every benchmark timed by it) on a :class:`FakeClock`."""
    from headlab import timing

    clock = FakeClock()
    monkeypatch.setattr(timing, "time", clock)
    return clock


@pytest.fixture(scope="session")
def smollm2():
    from headlab.models import DEFAULT_MODEL, load

    return load(DEFAULT_MODEL)


def save_tiny_llama(folder, seed: int = 0):
    """A tiny random Llama (3 query heads on 1 KV head, d = 40) with a word-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    llama(seed, architectures=["LlamaForCausalLM"]).save_pretrained(folder)
    vocab = {f"w{i}": i for i in range(100)} | {"[UNK]": 100}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]").save_pretrained(folder)
    return folder
