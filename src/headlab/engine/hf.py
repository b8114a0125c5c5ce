"""``attach(model, probes=..., edits=..., pattern=...)``: route every attention layer of a Hugging
Face model through headlab's engine, via transformers' ``AttentionInterface`` and
``AttentionMaskInterface``; the model's own implementation is restored on exit, also on errors.
"""

from __future__ import annotations

import contextlib
import itertools
import weakref
from collections import ChainMap
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .attend import attend, make_context
from .context import AttnContext
from .frames import stats_frame
from .masks import shift_positions, to_bool_mask
from .plugins import EDITS, EXTENSIONS, PATTERNS, compressed_of, make_probe, per_head, run_view
from .view import HtmlView

_counter = itertools.count()

#: keyword arguments from HF that change attention semantics and that headlab does not implement
#: (sliding_window, softcap and s_aux are implemented: ``headlab.engine.scores``)
_UNSUPPORTED_KW = ("position_bias",)


def model_shape(model) -> tuple[int, int, int]:
    """(layers, query heads, key/value heads) from a HF config."""
    cfg = model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    n_layers = cfg.num_hidden_layers
    n_heads = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    return int(n_layers), int(n_heads), int(n_kv)


def _resolve_probes(probes) -> list:
    return [make_probe(p) if isinstance(p, str) else p for p in probes]


def _by_name(kind: str, registry, name: str):
    """A plug-in built from its registry name with its default arguments (``attach(model, pattern="causal")``)."""
    factory = registry.get(name)
    try:
        return factory()
    except TypeError as exc:
        raise ValueError(
            f"{kind} {name!r} cannot be built from its name alone ({exc}); build it with its arguments and pass the object"
        ) from None


def _resolve_edits(edits) -> list:
    return [_by_name("edit", EDITS, e) if isinstance(e, str) else e for e in edits]


def _resolve_pattern(pattern, n_layers: int, n_heads: int, n_kv: int) -> dict[int, Any]:
    if pattern is None:
        return {}
    if isinstance(pattern, str):
        pattern = _by_name("pattern", PATTERNS, pattern)
    if isinstance(pattern, Mapping):
        out = {}
        for layer, p in pattern.items():
            if not isinstance(layer, int) or not 0 <= layer < n_layers:
                raise ValueError(f"pattern layer {layer!r} out of range: valid layers are 0..{n_layers - 1}")
            if isinstance(p, Sequence) and not isinstance(p, str):
                if len(p) not in (n_heads, n_kv):
                    raise ValueError(
                        f"per-head pattern list for layer {layer} has {len(p)} entries; give one per query head "
                        f"({n_heads}) or one per KV head ({n_kv}, saves KV memory)"
                    )
                p = per_head(
                    [_by_name("pattern", PATTERNS, x) if isinstance(x, str) else x for x in p],
                    kv_per_head=len(p) == n_kv and n_kv != n_heads,
                )
            elif isinstance(p, str):
                p = _by_name("pattern", PATTERNS, p)
            out[layer] = p
        return out
    return {layer: pattern for layer in range(n_layers)}


class Run:
    """What ``attach`` yields: collected statistics and the shared state."""

    def __init__(self, model, probes, edits, patterns, state) -> None:
        self.model = model
        self.probes = probes
        self.edits = edits
        self.patterns = patterns
        self.state = state
        self.calls = 0

    def stats(self) -> dict[str, torch.Tensor]:
        """{probe name: (layers, heads) tensor}, averaged over every call so far."""
        if not self.calls:
            raise RuntimeError("no attention call went through headlab: run the model inside the `with attach(...)` block")
        return {p.name: p.result() for p in self.probes}

    def to_frame(self):
        """pandas DataFrame of ``stats()``, one row per (layer, head) (needs ``headlab[frames]``)."""
        return stats_frame(self.stats())

    def show(self, head=None, metric: str | None = None, tokens=None) -> HtmlView:
        """The head grid and one head up close (with its map when a HeadMapProbe recorded it): HTML that a
        notebook renders (``str(view)`` is the source)."""
        return HtmlView(run_view(self, head=head, metric=metric, tokens=tokens))

    def _repr_html_(self) -> str | None:
        if EXTENSIONS.run_view is None:  # no view set (headlab.report not loaded)
            return None
        return str(self.show())


def _make_fn(run: Run, n_layers: int):
    order: dict[int, int] = {}
    last: dict[int, Any] = {}  # positions per recent mask: HF hands one mask per layer type to every layer

    def headlab_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        for kw in _UNSUPPORTED_KW:
            if kwargs.get(kw) is not None:
                raise NotImplementedError(
                    f"headlab does not implement attention with {kw} (e.g. T5's relative position "
                    "bias); models that pass it cannot be attached"
                )
        causal = bool(getattr(module, "is_causal", True))
        # model variants: the window also arrives in the mask (harmless to apply twice); cap and sinks do not
        variant = {
            "window": kwargs.get("sliding_window") if causal else None,
            "softcap": kwargs.get("softcap"),
            "sinks": kwargs.get("s_aux"),
        }
        layer = getattr(module, "layer_idx", None)
        if layer is None:
            layer = order.setdefault(id(module), len(order))
        run.calls += 1
        pattern = run.patterns.get(layer)
        kv = compressed_of(key)  # decode step of a compressed cache (headlab.kv_cache): it attends itself
        if kv is not None:
            if variant["softcap"] is not None or variant["sinks"] is not None:
                raise NotImplementedError("headlab's compressed KV cache does not implement soft-capping or sink logits")
            return kv.attend(query, attention_mask, scaling, pattern=pattern, edits=run.edits, probes=run.probes)
        if not run.probes and not run.edits and pattern is None:
            if variant["softcap"] is None and variant["sinks"] is None:
                return sdpa_attention_forward(
                    module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
                )
            out = attend(
                query,
                key,
                value,
                scale=scaling,
                causal=causal,
                attn_mask=to_bool_mask(attention_mask),
                path="sdpa",
                window=variant["window"],
                softcap=variant["softcap"],
                sinks=variant["sinks"],
            )  # exact: SDPA + log-sum-exp for sinks, chunked loop for the cap
            return torch.nan_to_num(out, nan=0.0).transpose(1, 2).contiguous(), None
        bmask = to_bool_mask(attention_mask)
        # HF hands the same mask object (one per layer type) to every layer of a forward pass: derive
        # positions once per mask (kept referenced, so an identity match cannot be a reused address)
        shapes = (tuple(query.shape), tuple(key.shape))
        hit = last.get(id(attention_mask))
        if hit is None or hit[0] is not attention_mask or hit[1] != shapes:
            c = make_context(query, key, causal, bmask)
            if len(last) >= 4:
                last.clear()
            hit = last[id(attention_mask)] = (attention_mask, shapes, (c.key_pos, c.query_pos))
        kp, qp = hit[2]
        pid, win = kwargs.get("position_ids"), variant["window"]
        if (
            win is not None
            and key.shape[2] == win - 1 + query.shape[2]
            and isinstance(pid, torch.Tensor)
            and pid.dim() == 2
            and pid.shape[-1] == query.shape[2]
        ):
            kp, qp = shift_positions(kp, qp, pid)  # a full sliding cache (W - 1 kept keys) may have dropped tokens
        ctx = AttnContext(layer, n_layers, query.shape[1], key.shape[1], causal, kp, qp, state=run.state)
        out = attend(
            query,
            key,
            value,
            scale=scaling,
            causal=causal,
            attn_mask=bmask,
            pattern=pattern,
            edits=run.edits,
            probes=run.probes,
            ctx=ctx,
            window=variant["window"],
            softcap=variant["softcap"],
            sinks=variant["sinks"],
        )
        out = torch.nan_to_num(out, nan=0.0)  # fully padded query rows
        return out.transpose(1, 2).contiguous(), None

    return headlab_attention


#: per model, the attach blocks open on it, outermost first: (run, registered name, implementation before it)
_OPEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Nested:
    """What the attention function of an inner ``attach`` reads: every open run on the model, outer
    first. Probes of all runs see each call; edits apply outer ones first, then the inner ones
    (inside); a layer with patterns from both gets their intersection; ``ctx.state`` reads the
    inner state, then the outer ones; each run's call count goes up with every call."""

    def __init__(self, runs: list[Run]) -> None:
        self.runs = runs
        self.probes = [p for r in runs for p in r.probes]
        self.edits = [e for r in runs for e in r.edits]
        self.state = ChainMap(*(r.state for r in reversed(runs)))
        self.patterns: dict[int, Any] = {}
        for r in runs:
            for layer, p in r.patterns.items():
                q = self.patterns.get(layer)
                if q is None:
                    self.patterns[layer] = p
                    continue
                try:
                    self.patterns[layer] = q & p
                except (TypeError, ValueError) as exc:
                    raise ValueError(
                        f"nested attach: the outer and the inner block both set a pattern for layer {layer} "
                        f"and they cannot be intersected ({exc}); set one pattern in one attach"
                    ) from None

    @property
    def calls(self) -> int:
        return self.runs[-1].calls

    @calls.setter
    def calls(self, value: int) -> None:
        step = value - self.runs[-1].calls
        for r in self.runs:
            r.calls += step


def _check_nesting(outer: list[Run], run: Run) -> None:
    for kind in ("probes", "edits"):
        seen = {id(x) for r in outer for x in getattr(r, kind)}
        twice = [x for x in getattr(run, kind) if id(x) in seen]
        if twice:
            raise ValueError(
                f"nested attach: {twice[0]!r} is already attached by an enclosing block on this model; "
                f"the outer block's {kind} already see every call inside, so pass a separate object"
            )


@contextlib.contextmanager
def attach(model, probes: Sequence = (), edits: Sequence = (), pattern=None, state: dict | None = None) -> Iterator[Run]:
    """Route ``model``'s attention through headlab for the duration of the block.

    probes: names ("sink", "entropy", ...) or Probe objects; edits: Edit objects or registry names
    (applied in list order at each stage); pattern: a Pattern or registry name for all layers,
    ``{layer: Pattern}``, or ``{layer: [Pattern per query head]}``; state: dict visible to plug-ins
    as ``ctx.state``.

    Nesting: an ``attach`` inside another on the same model composes with it: the outer run's
    probes still see every call, its edits apply first and the inner edits after them (inside),
    patterns on the same layer intersect; on exit each block restores what it found, also on errors.
    Attaching the same probe or edit object twice raises ``ValueError``.
    """
    if not getattr(model, "_supports_attention_backend", False):
        raise ValueError(
            f"{type(model).__name__} does not route its attention through transformers' AttentionInterface; "
            "headlab can only attach to models that do (Llama, Qwen, Mistral, GPT-2, BERT, ... in transformers >= 5)"
        )
    n_layers, n_heads, n_kv = model_shape(model)
    probes = _resolve_probes(probes)
    for p in probes:
        p.reset(n_layers, n_heads)
    edits = _resolve_edits(edits)
    for e in edits:
        e.bind(n_layers, n_heads)
    run = Run(model, probes, edits, _resolve_pattern(pattern, n_layers, n_heads, n_kv), dict(state or {}))
    check_model = getattr(pattern, "check_model", None)
    if callable(check_model):  # e.g. a per-head plan made for one model
        check_model(model)
    stack = _OPEN.setdefault(model, [])
    outer = [entry[0] for entry in stack]
    _check_nesting(outer, run)
    name = f"headlab_{next(_counter)}"
    AttentionInterface.register(name, _make_fn(_Nested([*outer, run]) if outer else run, n_layers))  # pyright: ignore[reportArgumentType]
    AttentionMaskInterface.register(name, sdpa_mask)
    entry = [run, name, model.config._attn_implementation]
    try:
        model.set_attn_implementation(name)
        stack.append(entry)
        yield run
    finally:
        i = next((k for k, e in enumerate(stack) if e is entry), None)
        if i is not None:
            if i + 1 < len(stack):  # closed before a block opened inside it: that one restores what we found
                stack[i + 1][2] = entry[2]
            else:
                model.set_attn_implementation(entry[2])
            del stack[i]
        else:
            model.set_attn_implementation(entry[2])
        AttentionInterface._global_mapping.pop(name, None)
        AttentionMaskInterface._global_mapping.pop(name, None)
