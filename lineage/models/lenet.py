from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ..settings import knob
from .registry import FeaturesHead, ModelConf, register


class LeNet(FeaturesHead):
    """LeNet-5 with padded 5x5 convs, so 8x8, 28x28 and 32x32 inputs all work:
    each pool halves the side (8->4->2, 28->14->7, 32->16->8)."""

    def __init__(
        self,
        in_channels: int,
        input_size: tuple[int, int],
        num_classes: int,
        channels: Sequence[int],
        hidden: Sequence[int],
    ):
        c1, c2 = channels
        h1, h2 = hidden
        h, w = input_size[0] // 4, input_size[1] // 4
        features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * h * w, h1),
            nn.ReLU(),
            nn.Linear(h1, h2),
            nn.ReLU(),
        )
        super().__init__(features, h2, num_classes)


@dataclass
class LeNetConf(ModelConf):
    """The `model=lenet` group: its options (defaults and checks, lineage.settings)."""

    name: str = "lenet"
    channels: list[int] = knob([6, 16])  # the two convolutions' channels
    hidden: list[int] = knob([120, 84])  # the two hidden Linear layers' widths


DEFAULT = LeNetConf()  # the factory's defaults are its options' (one home)


@register("lenet", LeNetConf)
def lenet(
    num_classes: int,
    in_channels: int,
    input_size: tuple[int, int],
    channels: Sequence[int] = tuple(DEFAULT.channels),
    hidden: Sequence[int] = tuple(DEFAULT.hidden),
) -> nn.Module:
    return LeNet(in_channels, input_size, num_classes, list(channels), list(hidden))
