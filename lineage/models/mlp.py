import math
from collections.abc import Sequence

from torch import nn

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


@register("mlp")
def mlp(
    num_classes: int,
    in_channels: int,
    input_size: tuple[int, int],
    hidden: Sequence[int] = (128, 128),
) -> nn.Module:
    return MLP(in_channels * math.prod(input_size), list(hidden), num_classes)
