import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ..settings import knob
from .registry import FeaturesHead, ModelConf, register


class MLP(FeaturesHead):
    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int):
        layers: list[nn.Module] = [nn.Flatten()]
        for h in hidden:
            layers += [nn.Linear(in_features, h), nn.ReLU()]
            in_features = h
        super().__init__(nn.Sequential(*layers), in_features, num_classes)


@dataclass
class MLPConf(ModelConf):
    """The `model=mlp` group: its options (defaults and checks, lineage.settings)."""

    name: str = "mlp"
    hidden: list[int] = knob([128, 128])  # the hidden layers' widths


DEFAULT = MLPConf()  # the factory's defaults are its options' (one home)


@register("mlp", MLPConf)
def mlp(
    num_classes: int,
    in_channels: int,
    input_size: tuple[int, int],
    hidden: Sequence[int] = tuple(DEFAULT.hidden),
) -> nn.Module:
    return MLP(in_channels * math.prod(input_size), list(hidden), num_classes)
