"""Registry of token-mixing mechanisms for :func:`headlab.lab.tiny_lm` and the lab experiments.

Every entry is a factory with one signature ``factory(d_model, n_heads) -> nn.Module`` whose module maps
x (B, T, D) -> (B, T, D) causally and accepts ``return_weights=True`` (then returns (y, A (B,H,T,T))).
Modules may expose ``aux_loss`` (a scalar added to the training loss with weight β, see MoH).
Add a mechanism with :func:`register`; never branch on names elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from ..registry import Registry
from .deconstruct import SIMPLE as DECONSTRUCT
from .gated import GatedAttention
from .linear import LinearAttention
from .miras import MirasMemory
from .moh import MoHAttention
from .random_features import RandomFeatureAttention
from .sigmoid import SigmoidAttention
from .softmax import MultiHeadAttention
from .ssm import SelectiveSSM

Factory = Callable[[int, int], nn.Module]


def moh_factory(active: float, router: str = "trainable") -> Factory:
    """MoH with a quarter of the heads shared and routed heads filling ``active`` (0-1] of all heads."""
    if not 0 < active <= 1:
        raise ValueError(f"active={active} must be in (0, 1]")

    def make(d_model: int, n_heads: int) -> nn.Module:
        n_shared = max(1, n_heads // 4)
        n_active = max(n_shared, min(n_heads, round(active * n_heads)))
        return MoHAttention(d_model, n_heads, n_shared=n_shared, top_k=n_active - n_shared, router=router)

    return make


#: mechanism name -> factory (a :class:`headlab.registry.Registry`)
MECHANISMS: Registry[Factory] = Registry(
    "mechanism",
    {
        "softmax": lambda d, h: MultiHeadAttention(d, h),
        "sigmoid": lambda d, h: SigmoidAttention(d, h, normalize="none"),
        "sigmoid-norm": lambda d, h: SigmoidAttention(d, h, normalize="sum"),
        "gated": lambda d, h: GatedAttention(d, h, gate="elementwise"),
        "gated-headwise": lambda d, h: GatedAttention(d, h, gate="headwise"),
        "moh": moh_factory(0.75),
        "moh-50": moh_factory(0.50),
        "moh-75": moh_factory(0.75),
        "moh-90": moh_factory(0.90),
        "linear": lambda d, h: LinearAttention(d, h),
        "random-qk": lambda d, h: RandomFeatureAttention(d, h),
        "ssm": lambda d, h: SelectiveSSM(d, h),
        **{v: partial(MirasMemory, variant=v) for v in ("delta", "moneta", "yaad", "memora")},  # noqa: B023 (partial binds v now)
        **{n: f for n, f in DECONSTRUCT.items() if n != "softmax"},
    },
)


def register(name: str, factory: Factory) -> None:
    """Add a mechanism (``factory(d_model, n_heads) -> nn.Module``) under ``name`` (taken names raise)."""
    MECHANISMS.register(name, factory)


def make_mechanism(name: str, d_model: int, n_heads: int) -> nn.Module:
    """Build a registered mechanism; unknown names raise a ValueError listing the valid ones."""
    return MECHANISMS.get(name)(d_model, n_heads)
