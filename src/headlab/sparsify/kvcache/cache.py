"""A compressed KV cache for decoding under a per-head plan: ``headlab.kv_cache(model, plan)``.

Full heads keep every key and value; streaming heads keep only their sink and recent window
(StreamingLLM, arXiv 2309.17453; MoA's elastic spans, arXiv 2406.14909; the full/streaming split of
DuoAttention-style plans). Usage::

    cache = headlab.kv_cache(model, plan)
    with headlab.attach(model, pattern=plan):
        out = model.generate(ids, cache=cache, max_new_tokens=64, do_sample=False)
    cache.nbytes()          # bytes of the keys and values it holds

Decoding gives the same tokens (and logits up to float rounding) as ``attach(model, pattern=plan)``
with a full ``DynamicCache``: the same attention, with less memory and less work per step.

Design (where heads with different kept lengths meet HF's attention call):
  * Each layer stores its KV heads in *parts*: one buffer (B, Hf, cap, d) for the full heads, and
    one buffer per distinct streaming span (heads with equal spans share a buffer). Buffers grow in
    chunks, so a decode step writes one slot per part instead of copying the cache.
  * Streaming parts keep positions [0, sink) ∪ [n - w(n), n); a key that leaves the window frees
    its slot and the next key reuses it (at most one per step, see ``spans``), so the kept keys
    always fill slots 0..count-1 and attention reads one contiguous view, in slot order (softmax
    does not care about key order; RoPE is already applied to cached keys).
  * When the query heads of one KV head follow different spans (a query-head plan), the KV head
    keeps the union of their needs and the part records each slot's position, so every query head
    masks the kept keys down to its own span.
  * Prefill (empty cache): ``update`` returns the prompt's own keys and values, so the prompt goes
    through the plan's pattern as usual (the sparse kernel); afterwards only the kept keys stay.
    With ``prefill="dense"`` the prompt's keys come back tagged instead (see decode), and ``attend`` runs
    full causal attention over the whole prompt: the contract of a KV-cache *press* (NVIDIA's kvpress,
    github.com/NVIDIA/kvpress; SnapKV, arXiv 2404.14469): prefill dense, then keep only each head's planned
    keys for decoding.
  * Decode (one new token): ``update`` returns the full heads' (or first part's) K/V views, tagged
    with the attribute ``headlab_kv`` = this layer. headlab's attention function
    (``engine.hf``) sees the tag and calls ``layer.attend(query, ...)``, which runs one SDPA per
    part over that part's kept keys only, with the GQA group folded into the query axis.
  * The cache refuses to run unless the model is inside ``attach`` (checked at every update), and
    its attention checks that the attached pattern keeps the same spans as the cache's plan.
Not supported (clear errors): padded batches, models with their own sliding window (their decode
mask hides keys), several new tokens on a non-empty cache (chunked prefill, speculative decoding),
probes or edits during decode, ``crop``.
"""

from __future__ import annotations

import weakref
from collections import deque

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, CacheLayerMixin

from ...engine.hf import model_shape
from ...engine.masks import to_bool_mask
from .spans import FULL, is_full, kept_positions, layer_keys, plan_keys, sink_of, window_at

#: extra slots added when a buffer grows: max(GROW_MIN, capacity // GROW_DIV)
GROW_MIN = 256
GROW_DIV = 8
TAG = "headlab_kv"
#: how the prompt is attended: through the plan's pattern ("sparse") or with full attention ("dense")
PREFILLS = ("sparse", "dense")


def _sel(heads: list[int]):
    """A slice when the heads are consecutive (views, no copy), else an index tensor."""
    if heads == list(range(heads[0], heads[-1] + 1)):
        return slice(heads[0], heads[-1] + 1)
    return torch.tensor(heads)


def _take(x: torch.Tensor, sel) -> torch.Tensor:
    return x[:, sel] if isinstance(sel, slice) else x.index_select(1, sel.to(x.device))


def _check_attached(model, layer: int) -> None:
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if not (isinstance(impl, str) and impl.startswith("headlab_")):
        raise RuntimeError(
            f"headlab.kv_cache needs the model inside `with headlab.attach(model, pattern=plan):` (layer {layer} "
            f"ran with attention implementation {impl!r}); its streaming heads drop keys that other attention "
            "functions would read"
        )


class _Part:
    """KV heads of one layer that keep the same positions: buffers (B, h, cap, d)."""

    def __init__(self, key: tuple, heads: list[int]):
        self.key = key
        self.heads = heads
        self.sel = _sel(heads)
        self.full = is_full(key)
        self.sink = 0 if self.full else sink_of(key)
        self.masked = key[0] == "union"  # query heads of a KV head keep different spans: mask per query head
        self.k = self.v = None
        self.pos = None  # (cap,) long position of each slot (masked parts only)
        self.count = 0  # filled slots 0..count-1
        self.lo = 0  # first kept window position (streaming parts)
        self.order: deque[int] = deque()  # slots of the kept window positions, oldest first

    def _alloc(self, like_k, like_v, cap: int) -> None:
        B, h = like_k.shape[0], len(self.heads)
        k = like_k.new_empty(B, h, cap, like_k.shape[-1])
        v = like_v.new_empty(B, h, cap, like_v.shape[-1])
        if self.k is not None:
            k[:, :, : self.count] = self.k[:, :, : self.count]
            v[:, :, : self.count] = self.v[:, :, : self.count]
        self.k, self.v = k, v
        if self.masked:
            pos = torch.zeros(cap, dtype=torch.long, device=like_k.device)
            if self.pos is not None:
                pos[: self.count] = self.pos[: self.count]
            self.pos = pos

    def _limit(self) -> int | None:
        """Most slots this part can ever need (None: unbounded)."""
        keys = self.key[1] if self.masked else (self.key,)
        if all(k[0] == "window" for k in keys):
            return max(k[1] for k in keys) + max(k[2] for k in keys)
        return None

    def _capacity(self, need: int) -> int:
        cap = need + max(GROW_MIN, need // GROW_DIV)
        lim = self._limit()
        return cap if lim is None else max(need, min(cap, lim))

    def prefill(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Keep what this part keeps of a prompt's k/v (B, Hkv, T, d)."""
        T = k.shape[2]
        k, v = _take(k, self.sel), _take(v, self.sel)
        s, lo = kept_positions(self.key, T)
        self.count = s + (T - lo)
        self._alloc(k, v, self._capacity(self.count))
        self.k[:, :, :s], self.v[:, :, :s] = k[:, :, :s], v[:, :, :s]
        self.k[:, :, s : self.count], self.v[:, :, s : self.count] = k[:, :, lo:], v[:, :, lo:]
        self.lo = lo
        self.order = deque(range(s, self.count))
        if self.masked:
            self.pos[: self.count] = torch.cat([torch.arange(s), torch.arange(lo, T)])

    def append(self, k: torch.Tensor, v: torch.Tensor, n: int) -> None:
        """Add the key at position n-1 (k/v (B, Hkv, 1, d)); evict what leaves the window at n keys."""
        p = n - 1
        free: list[int] = []
        if not self.full and p >= self.sink:
            _, lo = kept_positions(self.key, n)
            if lo < self.lo:
                raise RuntimeError(f"span {self.key} moved back from {self.lo} to {lo}: evicted keys would be needed")
            free = [self.order.popleft() for _ in range(min(lo - self.lo, len(self.order)))]
            self.lo = lo
        if len(free) > 1:
            raise RuntimeError(f"span {self.key} dropped {len(free)} keys in one step; only one can be replaced")
        if free:
            slot = free[0]
        else:
            slot = self.count
            if self.k is None or slot >= self.k.shape[2]:
                self._alloc(k, v, self._capacity(slot + 1))
            self.count += 1
        self.k[:, :, slot : slot + 1] = _take(k, self.sel)
        self.v[:, :, slot : slot + 1] = _take(v, self.sel)
        if not self.full and p >= self.sink:
            self.order.append(slot)
        if self.masked:
            self.pos[slot] = p

    def view(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[:, :, : self.count], self.v[:, :, : self.count]

    def mask(self, n: int) -> torch.Tensor | None:
        """(1, 1, g, count) bool: which kept keys each query head of the group sees at n keys (masked parts)."""
        if not self.masked:
            return None
        pos = self.pos[: self.count]
        rows = []
        for key in self.key[1]:
            w = window_at(key, n)
            rows.append(torch.ones_like(pos, dtype=torch.bool) if w is None else (pos < key[1]) | (pos >= n - w))
        return torch.stack(rows)[None, None]

    def nbytes(self) -> int:
        if self.k is None:
            return 0
        B, h = self.k.shape[:2]
        return B * h * self.count * (self.k.shape[-1] * self.k.element_size() + self.v.shape[-1] * self.v.element_size())

    def allocated(self) -> int:
        return 0 if self.k is None else self.k.nbytes + self.v.nbytes

    def apply(self, fn) -> None:
        if self.k is not None:
            self.k, self.v = fn(self.k), fn(self.v)


class HeadKVLayer(CacheLayerMixin):
    """One layer of :class:`HeadKVCache`: its KV heads grouped into parts by kept span."""

    is_sliding = False
    is_croppable = False
    supports_early_init = False

    def __init__(self, layer: int, keys: list[tuple], n_heads: int, model_ref, prefill: str = "sparse") -> None:
        super().__init__()
        self.layer = layer
        self.prefill = prefill
        self._prompt: tuple[torch.Tensor, torch.Tensor] | None = None  # dense prefill: the prompt's k/v until attended
        self.span_keys = keys
        self.n_heads = n_heads
        self.n_kv = len(keys)
        self._model = model_ref  # weakref.ref to the model (copies of the cache share it)
        groups: dict[tuple, list[int]] = {}
        for h, key in enumerate(keys):
            groups.setdefault(key, []).append(h)
        full = groups.pop(FULL, None)
        self.parts = ([_Part(FULL, full)] if full else []) + [_Part(k, hs) for k, hs in groups.items()]
        self.n = 0  # tokens seen (the logical length)
        self._checked: dict[int, object] = {}  # id -> attached pattern already checked against the plan

    # ---------------------------------------------------------------- HF cache-layer API
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device, self.dtype = key_states.device, key_states.dtype
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Store k/v (B, Hkv, T, d); return what the attention call needs (see the module doc)."""
        _check_attached(self._model(), self.layer)
        B, Hkv, T, _ = key_states.shape
        if Hkv != self.n_kv:
            raise ValueError(
                f"layer {self.layer}: keys have {Hkv} KV heads, the cache's plan has {self.n_kv}: "
                f"key_states {tuple(key_states.shape)} (B, Hkv, T, d)"
            )
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.n == 0:
            for part in self.parts:
                part.prefill(key_states, value_states)
            self.n = T
            if self.prefill == "dense":  # the attention call comes back to attend() for a full causal pass
                self._prompt = (key_states, value_states)
                k = key_states.view_as(key_states)  # a fresh tensor object, so the tag stays off the caller's
                setattr(k, TAG, self)
                return k, value_states
            return key_states, value_states
        if T != 1:
            raise NotImplementedError(
                f"layer {self.layer}: {T} new tokens on a cache that already holds {self.n}: a compressed KV cache "
                "takes one prompt, then one token per step (no chunked prefill or speculative decoding)"
            )
        if self.parts[0].k.shape[0] != B:
            raise ValueError(f"layer {self.layer}: batch size changed from {self.parts[0].k.shape[0]} to {B}")
        self.n += 1
        for part in self.parts:
            part.append(key_states, value_states, self.n)
        k, v = self.parts[0].view()
        setattr(k, TAG, self)
        return k, v

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.n + query_length, 0

    def get_seq_length(self) -> int:
        return self.n

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        for part in self.parts:
            part.k = part.v = None
            part.count, part.lo, part.order, part.pos = 0, 0, deque(), None
        self.n = 0
        self._prompt = None
        self.is_initialized = False

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove:
            raise NotImplementedError("a compressed KV cache cannot crop: streaming heads have dropped old keys")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        for part in self.parts:
            part.apply(lambda x: x.index_select(0, beam_idx.to(x.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        for part in self.parts:
            part.apply(lambda x: x.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        for part in self.parts:
            part.apply(lambda x: x[indices])

    # ---------------------------------------------------------------- headlab
    def nbytes(self) -> int:
        return sum(p.nbytes() for p in self.parts)

    def kept(self) -> list[int]:
        """Kept tokens per KV head."""
        out = [0] * self.n_kv
        for p in self.parts:
            for h in p.heads:
                out[h] = p.count
        return out

    def _check_pattern(self, pattern) -> None:
        if self._checked.get(id(pattern)) is pattern:
            return
        try:
            keys = layer_keys(pattern, self.layer, self.n_heads, self.n_kv)
        except ValueError as e:
            raise ValueError(f"layer {self.layer}: the attached pattern does not match the KV cache's plan: {e}") from None
        if keys != self.span_keys:
            raise ValueError(
                f"layer {self.layer}: the attached pattern keeps spans {keys} per KV head, but the KV cache "
                f"was built for {self.span_keys}; pass the same plan to attach() and kv_cache()"
            )
        self._checked[id(pattern)] = pattern

    def attend(
        self, query: torch.Tensor, attention_mask=None, scaling: float | None = None, pattern=None, edits=(), probes=()
    ) -> tuple[torch.Tensor, None]:
        """Decode-step attention of query (B, H, 1, d) over each part's kept keys; returns (B, 1, H, d_v).
        Under ``prefill="dense"`` the prompt's query (B, H, T, d) comes here first: full causal attention over
        the prompt's own keys, returns (B, T, H, d_v)."""
        if edits or probes:
            raise NotImplementedError(
                "probes and edits cannot run on a compressed KV cache's decode steps or its dense prefill "
                "(their keys are partly evicted); decode with a full cache to use them"
            )
        self._check_pattern(pattern)
        if self._prompt is not None:
            return self._dense_prefill(query, attention_mask, scaling)
        if attention_mask is not None:
            ok = attention_mask.all() if attention_mask.dtype == torch.bool else (attention_mask == 0).all()
            if not bool(ok):
                raise ValueError(
                    "a compressed KV cache does not support padded batches or models with their own sliding "
                    f"window: the attention mask hides keys (mask {tuple(attention_mask.shape)}); decode "
                    "unpadded rows of a full-attention model (batch size 1 always works)"
                )
        B, H, T, d = query.shape
        if T != 1 or self.n_heads != H:
            raise ValueError(f"decode query {tuple(query.shape)} must be (B, {self.n_heads}, 1, d)")
        g = H // self.n_kv
        q = query.reshape(B, self.n_kv, g, d)  # the g query heads of a KV head become g queries
        if len(self.parts) == 1:
            k, v = self.parts[0].view()
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.parts[0].mask(self.n), scale=scaling)
        else:
            out = q.new_empty(B, self.n_kv, g, self.parts[0].v.shape[-1])
            for part in self.parts:
                k, v = part.view()
                res = F.scaled_dot_product_attention(_take(q, part.sel), k, v, attn_mask=part.mask(self.n), scale=scaling)
                if isinstance(part.sel, slice):
                    out[:, part.sel] = res
                else:
                    out.index_copy_(1, part.sel.to(out.device), res)
        return out.reshape(B, H, 1, -1).transpose(1, 2), None

    def _dense_prefill(self, query: torch.Tensor, attention_mask, scaling: float | None) -> tuple[torch.Tensor, None]:
        """Full causal attention of the prompt's queries over the prompt's keys (GQA grouped), as SDPA would."""
        assert self._prompt is not None
        k, v = self._prompt
        self._prompt = None
        B, H, T, _ = query.shape
        if k.shape[2] != T:
            raise RuntimeError(f"layer {self.layer}: dense prefill of {T} queries over {k.shape[2]} prompt keys")
        g = H // self.n_kv
        if g > 1:
            k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        mask = to_bool_mask(attention_mask)
        if mask is None:
            out = F.scaled_dot_product_attention(query, k, v, is_causal=True, scale=scaling)
        else:
            out = F.scaled_dot_product_attention(query, k, v, attn_mask=mask[..., -k.shape[2] :], scale=scaling)
            out = torch.nan_to_num(out, nan=0.0)  # fully padded query rows
        return out.transpose(1, 2).contiguous(), None


class HeadKVCache(Cache):
    """A ``transformers`` Cache that keeps, per layer and KV head, only what a per-head plan attends to.

    Build it with :func:`kv_cache`. ``nbytes()``: bytes of the keys and values held;
    ``allocated_nbytes()``: bytes of the buffers (with growth room); ``kept()``: tokens per
    [layer][KV head]; ``span_keys``: what each head keeps (see ``headlab.sparsify.kvcache.spans``).
    """

    def __init__(self, model, plan, prefill: str = "sparse") -> None:
        if prefill not in PREFILLS:
            raise ValueError(f"prefill must be one of {PREFILLS}, got {prefill!r}")
        n_layers, n_heads, n_kv = model_shape(model)
        check = getattr(plan, "check_model", None)
        if callable(check):
            check(model)
        self.span_keys = plan_keys(plan, n_layers, n_heads, n_kv)
        self.prefill = prefill
        ref = weakref.ref(model)
        super().__init__(layers=[HeadKVLayer(i, keys, n_heads, ref, prefill) for i, keys in enumerate(self.span_keys)])

    def fill(self, full_cache) -> HeadKVCache:
        """Keep, from a full cache's prompt (e.g. a ``DynamicCache`` prefilled under the same plan),
        what each head keeps; the same state a prefill into this cache gives. Returns self."""
        if self.get_seq_length():
            raise ValueError(f"fill needs an empty cache, this one holds {self.get_seq_length()} tokens")
        src = list(full_cache.layers)
        if len(src) != len(self.layers):
            raise ValueError(f"the full cache has {len(src)} layers, the plan {len(self.layers)}")
        for layer, other in zip(self.layers, src):
            k, v = other.keys, other.values  # (B, Hkv, n, d)
            if k is None or k.shape[1] != layer.n_kv:
                raise ValueError(
                    f"layer {layer.layer}: full cache keys {None if k is None else tuple(k.shape)} "
                    f"must be (B, {layer.n_kv}, n, d)"
                )
            layer.lazy_initialization(k, v)
            for part in layer.parts:
                part.prefill(k, v)
            layer.n = k.shape[2]
        return self

    def nbytes(self) -> int:
        """Bytes of the key and value entries the cache holds (kept tokens x heads x head dim x dtype size)."""
        return sum(layer.nbytes() for layer in self.layers)

    def allocated_nbytes(self) -> int:
        """Bytes of the buffers behind them, including the room left to grow."""
        return sum(p.allocated() for layer in self.layers for p in layer.parts)

    def kept(self) -> list[list[int]]:
        """Kept tokens per [layer][KV head]."""
        return [layer.kept() for layer in self.layers]


def kv_cache(model, plan, prefill: str = "sparse") -> HeadKVCache:
    """A compressed KV cache for ``model`` under ``plan`` (a HeadPlan, {layer: pattern} or one Pattern).

    Full (``causal``) heads keep every key; ``sink_window`` / ``window`` / one-head ``moa`` heads keep
    their sink and recent window. Use it inside ``attach(model, pattern=plan)`` with the same plan.
    ``prefill``: "sparse" (default) runs the prompt through the plan's pattern; "dense" runs it with full
    causal attention and then keeps only each head's planned keys for decoding (the contract of a kvpress
    press, so a plan compares with one like for like).
    """
    return HeadKVCache(model, plan, prefill=prefill)


def full_kv_nbytes(cache) -> int:
    """Bytes held by a ``DynamicCache`` (the dense baseline), for comparisons."""
    return sum(0 if layer.keys is None else layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


__all__ = ["PREFILLS", "HeadKVCache", "HeadKVLayer", "kv_cache", "full_kv_nbytes", "window_at"]
