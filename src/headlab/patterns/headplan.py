"""Per-head sparsity plans: one sparse pattern per (layer, KV head) of a model, stored as JSON.

Retrieval-head work (Wu et al., arXiv 2404.15574) finds that a few heads do the long-range
copying while the rest attend locally; MoA (Fu et al., arXiv 2406.14909) gives each head its own
elastic span; DuoAttention (Xiao et al., arXiv 2410.10819) keeps full KV only for the retrieval
heads and sink + window for the streaming heads (StreamingLLM, arXiv 2309.17453). A plan records
such a per-head choice as registry names plus factory arguments, so any planner can write it and
``attach(model, pattern=plan)`` can run it:

    {"format": "headlab-plan/1", "name": ..., "model": {"name", "fingerprint", "n_layers", "n_heads",
     "n_kv_heads", "max_positions"}, "length": 8192, "method": ..., "budget": 0.35,
     "kv_fraction": ..., "density": ..., "granularity": "kv_head" | "query_head",
     "calibration": {...}, "seed": 0, "seconds": ..., "headlab_version": ...,
     "layers": [[{"pattern": "causal", "args": {}}, {"pattern": "sink_window", "args": {...}}, ...], ...],
     "scores": [[...], ...] | null}

``layers`` holds n_layers lists with one entry per KV head (granularity "kv_head") or per query
head ("query_head"). A "full" head is ``causal``; a streaming head is ``sink_window(sink, size)``,
``window(size)`` or a one-head ``moa([[alpha, beta]], sink)`` (band alpha + beta * N at N keys).

``HeadPlan`` is a read-only mapping {layer: per_head pattern}; layers whose heads are all causal
are left out, so they take the plain SDPA path.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import Pattern
from .causal import Causal
from .compose import per_head
from .moa import MoA
from .window import SinkWindow, Window

FORMAT = "headlab-plan/1"
GRANULARITIES = ("kv_head", "query_head")
#: folder of the plans shipped with headlab (loadable by name); tests may point it elsewhere
PLANS_DIR = Path(__file__).resolve().parent.parent / "plans"
#: tolerance when comparing a plan's reported kv_fraction / density with its entries
_TOL = 1e-5
_FINGERPRINT_FIELDS = (
    "model_type",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_size",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
)


# ---------------------------------------------------------------------------------------------- model
def _text_config(model_or_config):
    cfg = getattr(model_or_config, "config", model_or_config)
    return getattr(cfg, "text_config", None) or cfg


def model_fingerprint(model_or_config) -> str:
    """First 16 hex digits of sha256 over the attention-shape fields of the (text) config."""
    cfg = _text_config(model_or_config)
    fields: dict[str, Any] = {}
    for key in _FINGERPRINT_FIELDS:
        value = cfg.get(key) if isinstance(cfg, Mapping) else getattr(cfg, key, None)
        if key == "num_key_value_heads" and value is None:
            value = fields.get("num_attention_heads")
        if value is None and key in ("head_dim", "max_position_embeddings", "model_type"):
            continue  # "if any"
        fields[key] = value if key == "model_type" or value is None else int(value)
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def model_info(model_or_config, name: str | None = None) -> dict:
    """The plan's ``model`` block for a HF model or config."""
    cfg = _text_config(model_or_config)
    n_heads = int(cfg.num_attention_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    maxpos = getattr(cfg, "max_position_embeddings", None)
    if name is None:
        name = (
            getattr(model_or_config, "name_or_path", None)
            or getattr(cfg, "_name_or_path", None)
            or getattr(cfg, "model_type", None)
            or "model"
        )
        name = str(name)
    return {
        "name": name,
        "fingerprint": model_fingerprint(cfg),
        "n_layers": int(cfg.num_hidden_layers),
        "n_heads": n_heads,
        "n_kv_heads": n_kv,
        "max_positions": None if maxpos is None else int(maxpos),
    }


# ---------------------------------------------------------------------------------------------- spans
def _build(entry) -> Pattern:
    from . import REGISTRY

    if isinstance(entry, Pattern):
        return entry
    if not isinstance(entry, Mapping) or not isinstance(entry.get("pattern"), str):
        raise ValueError(f"a plan entry must be {{'pattern': name, 'args': {{...}}}}, got {entry!r}")
    name, args = entry["pattern"], entry.get("args") or {}
    if name not in REGISTRY:
        raise ValueError(f"unknown pattern {name!r}; valid names are {sorted(REGISTRY)}")
    if not isinstance(args, Mapping):
        raise ValueError(f"'args' of pattern {name!r} must be an object of factory arguments, got {args!r}")
    return REGISTRY[name](**args)


def kv_span(entry_or_pattern, n: int) -> tuple[int, int] | None:
    """(sink, window) a head keeps at ``n`` keys, or None for a full (causal) head.

    sink_window(sink, size) -> (sink, size); window(size) -> (0, size); a one-head
    moa([[alpha, beta]], sink) -> (sink, round(alpha + beta * n)); causal -> None.
    Any other pattern raises ValueError (its KV needs are not a sink plus a window).
    """
    n = int(n)
    if n <= 0:
        raise ValueError(f"length n must be positive, got {n}")
    p = _build(entry_or_pattern)
    if isinstance(p, Causal):
        return None
    if isinstance(p, SinkWindow):
        return p.sink, p.size
    if isinstance(p, Window):
        return 0, p.size
    if isinstance(p, MoA) and p.n_heads == 1:
        p.check(1, n)
        return p.sink, int(p.widths(n)[0])
    raise ValueError(
        f"pattern {p.describe()} has no (sink, window) span: plans' heads must be causal, sink_window, window or a one-head moa"
    )


def _kept(span: tuple[int, int] | None, n: int) -> int:
    """Keys a head must keep at length n (decoding with a compressed cache)."""
    return n if span is None else min(n, span[0] + span[1])


def _span_density(span: tuple[int, int] | None, n: int) -> float:
    """Density among causal pairs at q_len = kv_len = n: query i sees min(i + 1, sink + window) keys."""
    if span is None:
        return 1.0
    c = span[0] + span[1]
    total = n * (n + 1) / 2
    allowed = total if c >= n else c * (c + 1) / 2 + (n - c) * c
    return allowed / total


# ---------------------------------------------------------------------------------------------- plan
def _check_int(what: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{what} must be an integer >= {lo}, got {value!r}")
    return value


def _check_unit(what: str, value, lo_open: bool = True) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{what} must be a number in {'(0' if lo_open else '[0'}, 1], got {value!r}")
    if not ((value > 0) if lo_open else (value >= 0)) or value > 1:
        raise ValueError(f"{what} must be in {'(0' if lo_open else '[0'}, 1], got {value}")
    return float(value)


class HeadPlan(Mapping):
    """A validated plan: ``{layer: per_head pattern}`` for ``attach`` plus the plan's metadata.

    ``HeadPlan(data)`` validates ``data`` (the JSON dict); use ``load_plan`` for files and shipped
    names and ``plan_from_entries`` to build one from per-head entries.
    """

    def __init__(self, data: Mapping, source: str | None = None):
        where = f"plan {source}: " if source else "plan: "
        try:
            self._data = self._validate(data)
        except ValueError as exc:
            raise ValueError(where + str(exc)) from None
        self.source = source

    # ------------------------------------------------------------------ validation
    def _validate(self, data) -> dict:
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        data = json.loads(json.dumps(data))  # private deep copy, JSON types only
        fmt = data.get("format")
        if fmt != FORMAT:
            raise ValueError(f"format must be {FORMAT!r}, got {fmt!r}")
        m = data.get("model")
        if not isinstance(m, Mapping):
            raise ValueError(f"'model' must be an object with n_layers, n_heads, n_kv_heads, got {m!r}")
        L = _check_int("model.n_layers", m.get("n_layers"), 1)
        H = _check_int("model.n_heads", m.get("n_heads"), 1)
        Hkv = _check_int("model.n_kv_heads", m.get("n_kv_heads"), 1)
        if H % Hkv:
            raise ValueError(f"model.n_heads={H} must be a multiple of model.n_kv_heads={Hkv}")
        maxpos = m.get("max_positions")
        if maxpos is not None:
            _check_int("model.max_positions", maxpos, 1)
        gran = data.get("granularity", "kv_head")
        if gran not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {gran!r}")
        data["granularity"] = gran
        length = _check_int("length", data.get("length"), 1)
        if maxpos is not None and length > maxpos:
            raise ValueError(f"length {length} is beyond the model's context: valid lengths are 1..{maxpos}")
        _check_unit("budget", data.get("budget"))
        width = Hkv if gran == "kv_head" else H
        layers = data.get("layers")
        if not isinstance(layers, list) or len(layers) != L:
            got = len(layers) if isinstance(layers, list) else type(layers).__name__
            raise ValueError(f"'layers' must be a list of n_layers={L} lists, got {got}")
        self._layer_patterns: list[Pattern] = []
        self._spans: list[list] = []
        for li, row in enumerate(layers):
            if not isinstance(row, list) or len(row) != width:
                got = len(row) if isinstance(row, list) else type(row).__name__
                raise ValueError(f"layer {li} must list {width} heads (one per {gran.replace('_', ' ')}), got {got}")
            pats = []
            for hi, entry in enumerate(row):
                try:
                    p = _build(entry)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"layer {li} head {hi} ({entry!r}): {exc}") from None
                entry.setdefault("args", {})
                pats.append(p)
            try:
                self._layer_patterns.append(per_head(pats, kv_per_head=(gran == "kv_head")))
            except ValueError as exc:
                raise ValueError(f"layer {li}: {exc}") from None
            self._spans.append(pats)
        scores = data.get("scores")
        if scores is not None:
            if (
                not isinstance(scores, list)
                or len(scores) != L
                or any(not isinstance(r, list) or len(r) != width for r in scores)
            ):
                raise ValueError(f"'scores' must be null or {L} lists of {width} numbers (the shape of 'layers')")
            for r in scores:
                for i, v in enumerate(r):
                    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                        raise ValueError(f"'scores' entries must be numbers or null, got {v!r}")
                    if isinstance(v, float) and math.isnan(v):
                        r[i] = None  # JSON has no NaN: unscored heads are null
        self._data = data
        for key, fn in (("kv_fraction", self.kv_fraction), ("density", self.density)):
            reported = _check_unit(key, data.get(key), lo_open=False)
            if reported is None:
                continue
            try:
                actual = fn(length)
            except ValueError:
                continue  # heads without a (sink, window) span: nothing to compare
            if abs(actual - reported) > _TOL:
                raise ValueError(
                    f"reports {key} {reported} but its heads give {actual:.6f} at length {length} "
                    f"(hand-edited? fix the field or set it to null)"
                )
        return data

    # ------------------------------------------------------------------ mapping: {layer: pattern}
    def _active(self) -> list[int]:
        return [li for li, row in enumerate(self._spans) if not all(isinstance(p, Causal) for p in row)]

    def __getitem__(self, layer: int) -> Pattern:
        if layer not in self._active():
            raise KeyError(layer)
        return self._layer_patterns[layer]

    def __iter__(self):
        return iter(self._active())

    def __len__(self) -> int:
        return len(self._active())

    def layer_pattern(self, layer: int) -> Pattern:
        """The per_head pattern of ``layer`` (also for all-causal layers, which the mapping omits)."""
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer {layer} out of range: valid layers are 0..{self.n_layers - 1}")
        return self._layer_patterns[layer]

    # ------------------------------------------------------------------ metadata
    @property
    def meta(self) -> dict:
        """The plan's fields except 'layers' (a copy)."""
        return {k: json.loads(json.dumps(v)) for k, v in self._data.items() if k != "layers"}

    @property
    def entries(self) -> list[list[dict]]:
        """Per layer, the list of {'pattern', 'args'} head entries (a copy)."""
        return json.loads(json.dumps(self._data["layers"]))

    @property
    def n_layers(self) -> int:
        return self._data["model"]["n_layers"]

    @property
    def n_heads(self) -> int:
        return self._data["model"]["n_heads"]

    @property
    def n_kv_heads(self) -> int:
        return self._data["model"]["n_kv_heads"]

    @property
    def granularity(self) -> str:
        return self._data["granularity"]

    @property
    def length(self) -> int:
        return self._data["length"]

    @property
    def name(self) -> str | None:
        return self._data.get("name")

    # ------------------------------------------------------------------ budget
    def spans(self, n: int | None = None) -> list[list[tuple[int, int] | None]]:
        """Per layer and head (plan numbering): (sink, window) at length n, or None for full heads."""
        n = self.length if n is None else n
        return [[kv_span(p, n) for p in row] for row in self._spans]

    def kept_keys(self, n: int | None = None) -> list[list[int]]:
        """Per layer and KV head: keys the KV cache must keep at length n (all n for full heads).

        With query-head granularity a KV head keeps the union of its query heads' needs: all n
        if any is full, else the largest sink plus the largest window (nested sets)."""
        n = self.length if n is None else int(n)
        out = []
        for row in self.spans(n):
            if self.granularity == "kv_head":
                out.append([_kept(s, n) for s in row])
                continue
            g = self.n_heads // self.n_kv_heads
            kept = []
            for kv in range(self.n_kv_heads):
                group = row[kv * g : (kv + 1) * g]
                spans = [s for s in group if s is not None]
                if len(spans) < len(group):
                    kept.append(n)
                else:
                    kept.append(min(n, max(s[0] for s in spans) + max(s[1] for s in spans)))
            out.append(kept)
        return out

    def kv_fraction(self, n: int | None = None) -> float:
        """Mean over (layer, KV head) of kept keys / n at length n (default: the plan's length)."""
        n = self.length if n is None else int(n)
        kept = self.kept_keys(n)
        return sum(sum(r) for r in kept) / (n * self.n_layers * self.n_kv_heads)

    def density(self, n: int | None = None) -> float:
        """Attention density among causal pairs at q_len = kv_len = n, mean over layers x query heads.

        Closed form for causal / sink_window / window / moa heads (query i sees min(i + 1, sink +
        window) keys); other patterns use their own ``density``."""
        n = self.length if n is None else int(n)
        if n <= 0:
            raise ValueError(f"length n must be positive, got {n}")
        total = 0.0
        for row in self._spans:
            for p in row:
                try:
                    total += _span_density(kv_span(p, n), n)
                except ValueError:
                    total += p.density(n, n)
        return total / (self.n_layers * len(self._spans[0]))

    def full_heads(self) -> list[list[int]]:
        """Per layer, the indices (plan numbering) of full (causal) heads."""
        return [[h for h, p in enumerate(row) if isinstance(p, Causal)] for row in self._spans]

    # ------------------------------------------------------------------ model / IO
    def check_model(self, model) -> None:
        """Raise ValueError if this plan was made for another model (fingerprint or head shapes)."""
        mine = self._data["model"]
        theirs = model_info(model, name="")
        shape = (mine["n_layers"], mine["n_heads"], mine["n_kv_heads"])
        other = (theirs["n_layers"], theirs["n_heads"], theirs["n_kv_heads"])
        fp = mine.get("fingerprint")
        if shape != other or (fp and fp != theirs["fingerprint"]):
            raise ValueError(
                f"plan {self.name or self.source or ''!s} is for model {mine.get('name')!r} "
                f"(fingerprint {fp}, layers/heads/KV heads {shape}), but this model has fingerprint "
                f"{theirs['fingerprint']} and layers/heads/KV heads {other}; make a plan for it with "
                "`headlab sparsify plan`"
            )
        maxpos = theirs["max_positions"]
        if maxpos is not None and self.length > maxpos:
            raise ValueError(f"plan length {self.length} is beyond the model's context: valid lengths are 1..{maxpos}")

    def to_dict(self) -> dict:
        """The whole plan as a JSON-ready dict (a copy)."""
        return json.loads(json.dumps(self._data))

    def with_meta(self, **fields) -> HeadPlan:
        """A copy with top-level fields replaced (not 'layers'); revalidated."""
        if "layers" in fields:
            raise ValueError("with_meta cannot replace 'layers'; build a new plan with plan_from_entries")
        d = self.to_dict()
        d.update(fields)
        return HeadPlan(d, self.source)

    def __repr__(self) -> str:
        full = sum(len(r) for r in self.full_heads())
        total = self.n_layers * len(self._spans[0])
        return (
            f"<HeadPlan {self.name or self._data.get('method') or ''} for {self._data['model'].get('name')}: "
            f"{full}/{total} full heads, kv_fraction {self.kv_fraction():.3f} at {self.length}>"
        )


# ---------------------------------------------------------------------------------------------- build / IO
def _clean_scores(scores):
    if scores is None:
        return None
    if hasattr(scores, "tolist"):
        scores = scores.tolist()
    return [[None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in row] for row in scores]


def plan_from_entries(entries, model, **meta) -> HeadPlan:
    """Build a plan for ``model`` (model or config) from per-layer head entries.

    ``entries``: n_layers lists of {'pattern', 'args'} dicts or Pattern objects of causal /
    sink_window / window / one-head moa (one per KV head, or per query head with
    ``granularity="query_head"``). ``meta``: length (default: the model's context), name, method,
    budget, calibration, seed, seconds, scores, model_name, and any extra fields to record.
    ``kv_fraction`` and ``density`` are computed at ``length``.
    """
    from ..version import __version__

    info = model_info(model, name=meta.pop("model_name", None))
    layers = []
    for row in entries:
        out = []
        for e in row:
            out.append(_entry_of(e) if isinstance(e, Pattern) else {"pattern": e["pattern"], "args": dict(e.get("args") or {})})
        layers.append(out)
    length = meta.pop("length", None) or info["max_positions"]
    if length is None:
        raise ValueError("length is required: the model's config has no max_position_embeddings")
    data = {
        "format": FORMAT,
        "name": meta.pop("name", None),
        "model": info,
        "length": length,
        "method": meta.pop("method", None),
        "budget": meta.pop("budget", None),
        "kv_fraction": None,
        "density": None,
        "granularity": meta.pop("granularity", "kv_head"),
        "calibration": meta.pop("calibration", None),
        "seed": meta.pop("seed", None),
        "seconds": meta.pop("seconds", None),
        "headlab_version": meta.pop("headlab_version", __version__),
    }
    scores = _clean_scores(meta.pop("scores", None))
    data.update(meta)
    data["layers"] = layers
    data["scores"] = scores
    plan = HeadPlan(data)
    plan._data["kv_fraction"] = round(plan.kv_fraction(), 6)
    plan._data["density"] = round(plan.density(), 6)
    return plan


def _entry_of(p: Pattern) -> dict:
    """The registry entry of a causal / sink_window / window / one-head moa pattern object."""
    if isinstance(p, Causal):
        return {"pattern": "causal", "args": {}}
    if isinstance(p, SinkWindow):
        return {"pattern": "sink_window", "args": {"sink": p.sink, "size": p.size}}
    if isinstance(p, Window):
        return {"pattern": "window", "args": {"size": p.size}}
    if isinstance(p, MoA) and p.n_heads == 1:
        return {"pattern": "moa", "args": {"spans": [[float(p.alpha[0]), float(p.beta[0])]], "sink": p.sink}}
    raise ValueError(f"cannot store pattern {p.describe()} in a plan; give it as {{'pattern': name, 'args': {{...}}}}")


def available_plans() -> list[str]:
    """Names of the plans shipped with headlab (``load_plan(name)``)."""
    return sorted(p.stem for p in Path(PLANS_DIR).glob("*.json"))


def _resolve(path_or_name) -> Path:
    text = os.fspath(path_or_name)
    p = Path(text).expanduser()
    if p.is_file():
        return p
    looks_like_name = os.sep not in text and "/" not in text and not text.endswith(".json")
    if looks_like_name:
        shipped = Path(PLANS_DIR) / f"{text}.json"
        if shipped.is_file():
            return shipped
        names = available_plans()
        raise ValueError(
            f"no plan file {text!r} and no shipped plan of that name; shipped plans: {', '.join(names) if names else '(none)'}"
        )
    raise ValueError(f"plan file {text!r} does not exist")


def load_plan(path_or_name, model=None) -> HeadPlan:
    """Read and validate a plan from a JSON file or a shipped name; check it against ``model``."""
    path = _resolve(path_or_name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"plan file {str(path)!r} is not valid JSON ({exc})") from None
    plan = HeadPlan(data, source=str(path))
    if model is not None:
        plan.check_model(model)
    return plan


def save_plan(plan_or_dict, path) -> Path:
    """Validate and write a plan atomically (nothing is written if it is invalid)."""
    from ..io import atomic_write_json

    plan = plan_or_dict if isinstance(plan_or_dict, HeadPlan) else HeadPlan(plan_or_dict)
    return atomic_write_json(path, plan.to_dict())
