"""Trainable attention mechanisms and attention-based pooling heads, one file each.

Every module documents its paper, formula and shapes; :mod:`headlab.modules.registry` maps mechanism
names to factories with one signature for :func:`headlab.lab.tiny_lm`.
"""

from .attsets import AttSets
from .deconstruct import EmbeddingTap, layer_stack
from .gated import GatedAttention
from .linear import LinearAttention, hebbian_read, hebbian_write, linear_attention_parallel, linear_attention_recurrent
from .miras import MirasMemory
from .mltp import MultiLayerTrainablePooling, last_token_states
from .moh import MoHAttention
from .pointer import PointerHead
from .ponet import PoNetMixer
from .probing import EfficientProbing
from .random_features import RandomFeatureAttention
from .registry import MECHANISMS, make_mechanism, register
from .sigmoid import SigmoidAttention, sigmoid_attention
from .softmax import MultiHeadAttention, softmax_weights
from .ssm import SelectiveSSM

__all__ = [
    "AttSets",
    "EfficientProbing",
    "GatedAttention",
    "LinearAttention",
    "MECHANISMS",
    "MoHAttention",
    "MultiHeadAttention",
    "MultiLayerTrainablePooling",
    "PoNetMixer",
    "PointerHead",
    "RandomFeatureAttention",
    "EmbeddingTap",
    "MirasMemory",
    "SelectiveSSM",
    "layer_stack",
    "SigmoidAttention",
    "hebbian_read",
    "hebbian_write",
    "last_token_states",
    "linear_attention_parallel",
    "linear_attention_recurrent",
    "make_mechanism",
    "register",
    "sigmoid_attention",
    "softmax_weights",
]
