"""RULER-style long-context tasks (Hsieh et al., "RULER: What's the Real Context Size of Your Long-Context
Language Models?", arXiv 2404.06654), generated offline and exactly from a seed.

Tasks (``TASKS``; the suite ``long`` is all of them; ``passkey`` is extra, for ``headlab bench kv``):

* ``niah_single`` — one needle "One of the special magic numbers for KEY is: VALUE." in RULER's Paul Graham
  essays; asked for its value (RULER ``niah_single_2``).
* ``niah_multikey`` — four needles with different keys; one is asked for (``niah_multikey_1``).
* ``niah_multivalue`` — one key with four values; all four are asked for (``niah_multivalue``).
* ``niah_multiquery`` — four keys; all four are asked for (``niah_multiquery``).
* ``vt`` — variable tracking: a chain VAR A = 12345, VAR B = VAR A, ... (4 hops) hidden among RULER's
  repeated noise sentences, with one worked example first (RULER's one-shot ``vt``); asked for every variable
  holding the value.
* ``fwe`` — frequent-words extraction: coded 6-letter words with Zipf (alpha 2) frequencies, the most frequent
  replaced by dots; asked for the three most frequent words (``fwe``).
* ``qa`` — a SQuAD question over its gold paragraph hidden among distractor paragraphs, first those of the
  same article (``qa_1``).
* ``passkey`` — a 5-digit pass key in the essays at a seed-spread depth (Mohtashami & Jaggi, arXiv 2305.16300).

Each item is a pure function of (task, index, suite seed, length, tokenizer): its own seed is a hash of
(seed, task, index), and the amount of filler is fitted to the length with the tokenizer (RULER: prompt tokens
+ tokens to generate <= length). The prompt has RULER's template split the way NVIDIA's kvpress pipeline
splits it (github.com/NVIDIA/kvpress): the *context* (instruction and document), then the *question* and the
*answer prefix* after it, so the same item can be asked with the question after the compressed context or
inside it. Needle keys are word pairs from CPython's help vocabulary (RULER uses adjective-noun pairs).
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from .sources import essay_window, key_words, passage_hash, split_sentences, squad_docs, squad_questions

#: needle depths RULER samples from (percent of the document's sentences)
DEPTHS = tuple(int(round(100 * i / 39)) for i in range(40))
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # "niah" | "vt" | "fwe" | "qa" | "passkey"
    metric: str  # "all" (RULER string_match_all) | "part" (string_match_part)
    max_new: int  # RULER's tokens to generate
    keys: int = 1
    values: int = 1
    queries: int = 1
    ruler: str = ""  # the RULER task it follows


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("niah_single", "niah", "all", 128, 1, 1, 1, "niah_single_2"),
        TaskSpec("niah_multikey", "niah", "all", 128, 4, 1, 1, "niah_multikey_1"),
        TaskSpec("niah_multivalue", "niah", "all", 128, 1, 4, 1, "niah_multivalue"),
        TaskSpec("niah_multiquery", "niah", "all", 128, 4, 1, 4, "niah_multiquery"),
        TaskSpec("vt", "vt", "all", 30, ruler="vt"),
        TaskSpec("fwe", "fwe", "all", 50, ruler="fwe"),
        TaskSpec("qa", "qa", "part", 32, ruler="qa_1"),
        TaskSpec("passkey", "passkey", "all", 16, ruler="(passkey, arXiv 2305.16300)"),
    )
}
#: the tasks of ``--suite long``, in report order
SUITE_TASKS = tuple(t for t in TASKS if t != "passkey")
SUITES = {"long": SUITE_TASKS}
MIN_LENGTH = 512


@dataclass(frozen=True)
class SuiteItem:
    """One prompt: ``context`` (instruction + document), ``question``, ``answer_prefix``; scored against
    ``answers`` by RULER's ``metric``; ``sources``: the hash of every source passage it reads."""

    task: str
    index: int
    seed: int  # the item's own seed
    length: int  # the length it was fitted to (prompt + max_new <= length)
    context: str
    question: str
    answer_prefix: str
    answers: tuple[str, ...]
    metric: str
    max_new: int
    sources: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["answers"], d["sources"] = list(self.answers), list(self.sources)
        return d


@dataclass(frozen=True)
class Encoded:
    """Token ids of an item as kvpress's pipeline makes them: ``context_ids`` (chat template up to the end of
    the context) are prefilled and compressed; ``question_ids`` (question, end of the user turn, answer prefix)
    are fed after. With ``question_inside`` the question is part of the context (the query-aware upper bound)."""

    context_ids: tuple[int, ...]
    question_ids: tuple[int, ...]
    question_inside: bool

    @property
    def n_tokens(self) -> int:
        return len(self.context_ids) + len(self.question_ids)


def chat_split(tokenizer, user_text: str) -> tuple[str, str]:
    """(text up to and including ``user_text``, the rest of the turn up to the assistant's answer): the chat
    template around a user turn cut where the user's text ends (kvpress's separator trick); without a chat
    template, (BOS + text, newline)."""
    if getattr(tokenizer, "chat_template", None):
        sep = "#" * (len(user_text) + 10)
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text + sep}], add_generation_prompt=True, tokenize=False
        )
        pre, suffix = text.split(sep)
        return pre, suffix
    return (getattr(tokenizer, "bos_token", None) or "") + user_text, "\n"


def encode(item: SuiteItem, tokenizer, question_inside: bool = False) -> Encoded:
    """Token ids of ``item`` (see :class:`Encoded`)."""
    ctx = item.context + item.question if question_inside else item.context
    pre, suffix = chat_split(tokenizer, ctx)
    q_text = ("" if question_inside else item.question) + suffix + item.answer_prefix
    enc = lambda s: tuple(int(i) for i in tokenizer.encode(s, add_special_tokens=False))  # noqa: E731
    return Encoded(enc(pre), enc(q_text), question_inside)


# ---------------------------------------------------------------------------------------------- seeds
def item_seed(seed: int, task: str, index: int) -> int:
    """The seed of one item: 8 bytes of sha256 over (suite seed, task, index)."""
    return int(hashlib.sha256(f"{seed}/{task}/{index}".encode()).hexdigest()[:16], 16)


def _check(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------- builders
Build = Callable[[int], SuiteItem]


def _join_list(xs: Sequence[str]) -> str:
    return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + ", and " + xs[-1]


def _insert_sentences(doc: str, needles: Sequence[str], rng: random.Random) -> str:
    """Put each needle between sentences at a RULER depth (sorted, distinct depths)."""
    sents = split_sentences(doc)
    cuts = sorted(int(len(sents) * d / 100) for d in rng.sample(DEPTHS, len(needles)))
    out, last = [], 0
    for cut, needle in zip(cuts, needles):
        out += sents[last:cut] + [needle]
        last = cut
    out += sents[last:]
    return " ".join(out)


def _niah(spec: TaskSpec, seed: int, index: int, length: int) -> Build:
    rng0 = random.Random(seed)
    vocab = key_words()
    keys: list[str] = []
    while len(keys) < spec.keys:
        k = "-".join(rng0.sample(vocab, 2))
        if k not in keys:
            keys.append(k)
    values: list[list[str]] = []
    seen: set[str] = set()
    for _ in keys:
        row = []
        while len(row) < spec.values:
            v = str(rng0.randint(1_000_000, 9_999_999))
            if v not in seen:
                seen.add(v)
                row.append(v)
        values.append(row)
    needles = [f"One of the special magic numbers for {k} is: {v}." for k, row in zip(keys, values) for v in row]
    rng0.shuffle(needles)
    asked = rng0.sample(range(spec.keys), spec.queries)
    query = _join_list([keys[i] for i in asked])
    answers = tuple(v for i in asked for v in values[i])
    state = rng0.getstate()
    single = spec.queries * spec.values == 1
    if single:
        intro = "A special magic number is hidden within the following text. Make sure to memorize it. I will quiz you about the number afterwards."
        question = f"What is the special magic number for {query} mentioned in the provided text?"
        prefix = f"The special magic number for {query} mentioned in the provided text is"
    else:
        intro = "Some special magic numbers are hidden within the following text. Make sure to memorize it. I will quiz you about the numbers afterwards."
        question = f"What are all the special magic numbers for {query} mentioned in the provided text?"
        prefix = f"The special magic numbers for {query} mentioned in the provided text are"

    def build(n_words: int) -> SuiteItem:
        rng = random.Random()
        rng.setstate(state)
        hay, start = essay_window(rng, n_words)
        doc = _insert_sentences(hay, needles, rng)
        return SuiteItem(
            spec.name,
            index,
            seed,
            length,
            f"{intro}\n{doc}\n",
            question,
            prefix,
            answers,
            spec.metric,
            spec.max_new,
            (passage_hash(hay),),
            {"haystack": "essays", "essay_start_word": start, "essay_words": n_words, "keys": keys, "asked": asked},
        )

    return build


def _vt_text(rng: random.Random, n_noise: int, hops: int = 4) -> tuple[str, int, list[str]]:
    """(document, value, variables) of one variable-tracking chain among ``n_noise`` noise lines."""
    names: list[str] = []
    while len(names) < hops + 1:
        v = "".join(rng.choices(string.ascii_uppercase, k=5))
        if v not in names:
            names.append(v)
    value = rng.randint(10_000, 99_999)
    chain = [f"VAR {names[0]} = {value}"] + [f"VAR {names[j + 1]} = VAR {names[j]} " for j in range(hops)]
    total = n_noise + len(chain)
    slots = set(rng.sample(range(total), len(chain)))  # the chain keeps its order, at random lines
    it = iter(chain)
    lines = [next(it) if i in slots else NOISE + "\n" for i in range(total)]
    return " ".join(lines).replace(". \n", ".\n"), value, names


_VT_INTRO = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"


def _vt_question(value: int) -> tuple[str, str]:
    return (
        f"Question: Find all variables that are assigned the value {value} in the text above.",
        f"Answer: According to the chain(s) of variable assignment in the text above, 5 variables are assigned the value {value}, they are:",
    )


def _vt(spec: TaskSpec, seed: int, index: int, length: int) -> Build:
    icl_doc, icl_value, icl_names = _vt_text(random.Random(seed ^ 0x5EED), 12)
    q, p = _vt_question(icl_value)
    example = f"{_VT_INTRO}{icl_doc}\n{q} {p} {' '.join(icl_names)}\n\n"

    def build(n_noise: int) -> SuiteItem:
        rng = random.Random(seed)
        doc, value, names = _vt_text(rng, n_noise)
        question, prefix = _vt_question(value)
        return SuiteItem(
            spec.name,
            index,
            seed,
            length,
            f"{example}{_VT_INTRO}{doc}\n",
            question,
            prefix,
            tuple(names),
            spec.metric,
            spec.max_new,
            (),
            {"noise_lines": n_noise, "value": value},
        )

    return build


def _zeta(alpha: float) -> float:
    """Riemann zeta(alpha) for alpha > 1: partial sum + the integral tail (error < 1e-9 for alpha >= 1.5)."""
    n = 100_000
    return sum(k**-alpha for k in range(1, n)) + n ** (1 - alpha) / (alpha - 1) + 0.5 * n**-alpha


def _fwe(spec: TaskSpec, seed: int, index: int, length: int, alpha: float = 2.0) -> Build:
    rng0 = random.Random(seed)
    size = max(20, length // 50)
    vocab: set[str] = set()
    while len(vocab) < size:
        vocab.add("".join(rng0.choices(string.ascii_lowercase, k=6)))
    words = sorted(vocab)
    rng0.shuffle(words)
    words[0] = "..."  # the most frequent "word" is noise (RULER)
    z = _zeta(alpha)
    state = rng0.getstate()

    def build(n_words: int) -> SuiteItem:
        rng = random.Random()
        rng.setstate(state)
        counts = [int(n_words * (k**-alpha) / z) for k in range(1, len(words) + 1)]
        seq = [w for w, c in zip(words, counts) for _ in range(c)]
        rng.shuffle(seq)
        return SuiteItem(
            spec.name,
            index,
            seed,
            length,
            "Read the following coded text and track the frequency of each coded word. Find the three most frequently "
            f"appeared coded words. {' '.join(seq)}\n",
            "Question: Do not provide any explanation. Please ignore the dots '....'. What are the three most frequently "
            "appeared words in the above coded text?",
            "Answer: According to the coded text above, the three most frequently appeared words are:",
            tuple(words[1:4]),
            spec.metric,
            spec.max_new,
            (),
            {"words": n_words, "vocab": len(words), "counts": counts[:5]},
        )

    return build


_QA_INSTR = "Answer the question based on the given documents. Only give me the answer and do not output any other words."


def _qa(spec: TaskSpec, seed: int, index: int, length: int, suite_seed: int) -> Build:
    qs, docs = squad_questions(), squad_docs()
    order = list(range(len(qs)))
    random.Random(f"{suite_seed}/qa/order").shuffle(order)
    q = qs[order[index % len(order)]]
    rng0 = random.Random(seed)
    more = list(q.more)
    rng0.shuffle(more)
    taken = {q.doc, *q.more}
    others = [i for i in rng0.sample(range(len(docs)), min(len(docs), 600)) if i not in taken]
    pool = more + others
    state = rng0.getstate()

    def build(n_docs: int) -> SuiteItem:
        rng = random.Random()
        rng.setstate(state)
        chosen = [q.doc] + pool[: max(0, n_docs - 1)]
        rng.shuffle(chosen)
        body = "\n\n".join(f"Document {i + 1}:\n{docs[d]}" for i, d in enumerate(chosen))
        return SuiteItem(
            spec.name,
            index,
            seed,
            length,
            f"{_QA_INSTR}\n\nThe following are given documents.\n\n{body}\n\n",
            f"{_QA_INSTR}\n\nQuestion: {q.question}",
            "Answer:",
            q.answers,
            spec.metric,
            spec.max_new,
            tuple(passage_hash(docs[d]) for d in chosen),
            {"documents": len(chosen), "gold_document": chosen.index(q.doc) + 1, "squad_doc": q.doc},
        )

    return build


_PK_INTRO = (
    "There is an important pass key hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the pass key."
)


def passkey_depth(index: int) -> float:
    """Needle depth of passkey item ``index``: spread over 10-90 % by the golden ratio (any prefix is spread)."""
    return 0.1 + 0.8 * ((index * 0.6180339887498949) % 1.0)


def _passkey(spec: TaskSpec, seed: int, index: int, length: int) -> Build:
    rng0 = random.Random(seed)
    key = str(rng0.randint(10_000, 99_999))
    depth = passkey_depth(index)
    state = rng0.getstate()
    needle = f"The pass key is {key}. Remember it. {key} is the pass key."

    def build(n_words: int) -> SuiteItem:
        rng = random.Random()
        rng.setstate(state)
        hay, start = essay_window(rng, n_words)
        sents = split_sentences(hay)
        cut = int(round(depth * len(sents)))
        doc = " ".join(sents[:cut] + [needle] + sents[cut:])
        return SuiteItem(
            spec.name,
            index,
            seed,
            length,
            f"{_PK_INTRO}\n\n{doc}\n\n",
            "What is the pass key?",
            "The pass key is",
            (key,),
            spec.metric,
            spec.max_new,
            (passage_hash(hay),),
            {"haystack": "essays", "essay_start_word": start, "essay_words": n_words, "depth": depth},
        )

    return build


#: first guess of filler units per token of room (essay words, noise lines, coded words, documents)
_PER_TOKEN = {"niah": 0.72, "passkey": 0.72, "vt": 1 / 24, "fwe": 0.4, "qa": 1 / 170}


def _fit(build: Build, tokenizer, length: int, kind: str) -> SuiteItem:
    """The item with (nearly) the most filler whose prompt tokens + max_new fit in ``length``: a secant guess,
    then bisection between the largest filler that fits and the smallest that does not (a pure function of the
    builder, the tokenizer and the length: the same arguments always take the same steps)."""
    sizes: dict[int, int] = {}
    items: dict[int, SuiteItem] = {}

    def size(units: int) -> int:
        if units not in sizes:
            items[units] = build(units)
            sizes[units] = encode(items[units], tokenizer).n_tokens + items[units].max_new
        return sizes[units]

    base = size(1)
    if base > length:
        raise ValueError(
            f"length {length} is too short for task {items[1].task!r}: its prompt with the least filler takes "
            f"{base - items[1].max_new} tokens + {items[1].max_new} to generate"
        )
    tol = max(8, length // 200)
    guess = max(2, int((length - base) * _PER_TOKEN[kind]))
    rate = max(size(guess) - base, 1) / (guess - 1)  # tokens per filler unit
    lo, hi = 1, None
    units = max(1, 1 + int((length - base) / rate))
    for _ in range(40):
        if size(units) <= length:
            lo = max(lo, units)
        else:
            hi = units if hi is None else min(hi, units)
        if length - size(lo) <= tol or (hi is not None and hi - lo <= 1):
            break
        if hi is None:
            units = lo + max(1, int((length - size(lo)) / rate))
        else:
            units = (lo + hi) // 2
    return items[lo]


def make_item(task: str, index: int, tokenizer, length: int = 4096, seed: int = 0) -> SuiteItem:
    """Item ``index`` of ``task`` at ``length`` tokens (prompt + tokens to generate) for suite seed ``seed``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    _check("index", index, 0)
    _check("length", length, MIN_LENGTH)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    spec = TASKS[task]
    s = item_seed(seed, task, index)
    if spec.kind == "niah":
        build = _niah(spec, s, index, length)
    elif spec.kind == "vt":
        build = _vt(spec, s, index, length)
    elif spec.kind == "fwe":
        build = _fwe(spec, s, index, length)
    elif spec.kind == "qa":
        build = _qa(spec, s, index, length, seed)
    else:
        build = _passkey(spec, s, index, length)
    item = _fit(build, tokenizer, length, spec.kind)
    if spec.kind == "fwe":
        c = item.meta["counts"]
        if not c[1] > c[2] > c[3] > c[4]:
            raise ValueError(f"length {length} is too short for task 'fwe': the top words' counts {c[1:5]} are not distinct")
    return item


def make_suite(tokenizer, length: int = 4096, n: int = 20, seed: int = 0, tasks: Sequence[str] | str = "long") -> list[SuiteItem]:
    """``n`` items of every task (``tasks``: a suite name in ``SUITES`` or task names), task by task."""
    names = list(SUITES[tasks]) if isinstance(tasks, str) and tasks in SUITES else list(tasks)
    if isinstance(tasks, str) and tasks not in SUITES:
        raise ValueError(f"unknown suite {tasks!r}; valid suites: {', '.join(SUITES)} (or a list of tasks)")
    if not names or len(set(names)) != len(names):
        raise ValueError(f"tasks must be distinct names among {', '.join(TASKS)}, got {names!r}")
    for t in names:
        if t not in TASKS:
            raise ValueError(f"unknown task {t!r}; valid tasks: {', '.join(TASKS)}")
    _check("n", n, 1)
    return [make_item(t, i, tokenizer, length, seed) for t in names for i in range(n)]


def item_key(item: SuiteItem) -> str:
    """16 hex digits of sha256 over the item's canonical JSON (a changed item is a new trial)."""
    text = json.dumps(item.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def suite_digest(items: Sequence[SuiteItem]) -> str:
    """16 hex digits of sha256 over the items' canonical JSON: equal digests, byte-identical prompts."""
    text = json.dumps([it.to_dict() for it in items], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
