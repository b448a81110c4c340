import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ..settings import knob
from .registry import register


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for h in hidden:
            layers += [nn.Linear(in_features, h), nn.ReLU()]
            in_features = h
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(in_features, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


@dataclass
class MLPConf:
    """The `model=mlp` group: its options (defaults and checks, lineage.settings)."""

    _target_: str | None = knob(None)  # an importable factory replaces the registered name
    name: str = "mlp"
    hidden: list[int] = knob([128, 128])  # the hidden layers' widths


@register("mlp", MLPConf)
def mlp(
    num_classes: int,
    in_channels: int,
    input_size: tuple[int, int],
    hidden: Sequence[int] = (128, 128),
) -> nn.Module:
    return MLP(in_channels * math.prod(input_size), list(hidden), num_classes)
