"""Hugging Face classifiers built locally from a small config: no hub download.

`vit` is a Vision Transformer (ViTForImageClassification) for small images, e.g. 2 layers
of width 32 on 8x8 digits; `Logits` makes it answer the logits tensor, so training,
modifications and both kinds of evidence treat it like any other module. Needs the
optional extra: pip install 'lineage[hf]'. `hf_vit` in conf/model selects it: a
`_target_` model (this factory, imported by name like any other), whose options ViTConf
types and defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ..adapters import Logits
from ..errors import LineageError
from ..settings import knob
from .registry import ModelConf, register


@dataclass
class ViTConf(ModelConf):
    """The `model=hf_vit` group: its options (defaults and checks, lineage.settings)."""

    name: str = "hf_vit"
    hidden_size: int = knob(32, lo=1)  # the transformer's width
    layers: int = knob(2, lo=1)  # transformer blocks
    heads: int = knob(2, lo=1)  # attention heads (divide hidden_size)
    mlp: int = knob(64, lo=1)  # each block's MLP width
    patch: int = knob(2, lo=1)  # the patch side, in pixels (divides the image side)


@register("hf_vit", ViTConf)  # a registered name: its files load with no --arch
def vit(
    num_classes: int,
    in_channels: int,
    input_size: Sequence[int],
    hidden_size: int = ViTConf.hidden_size,  # the factory's defaults are its options'
    layers: int = ViTConf.layers,
    heads: int = ViTConf.heads,
    mlp: int = ViTConf.mlp,
    patch: int = ViTConf.patch,
) -> nn.Module:
    try:
        from transformers import ViTConfig, ViTForImageClassification
    except ImportError:
        raise LineageError("model hf_vit needs transformers: pip install 'lineage[hf]'") from None
    h, w = input_size
    if h != w or h % patch:
        raise LineageError(f"hf_vit: needs square images whose side divides by patch={patch}")
    config = ViTConfig(  # type: ignore[call-arg]
        image_size=h,
        patch_size=patch,
        num_channels=in_channels,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=mlp,
        num_labels=num_classes,
    )
    return Logits(ViTForImageClassification(config))
