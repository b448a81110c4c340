from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ..settings import knob
from .registry import FeaturesHead, ModelConf, register

VGG11: list[int | str] = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


class VGG(FeaturesHead):
    """VGG-11 with BatchNorm. Pools that would shrink the map below 1x1 are skipped,
    so small inputs (8x8 digits) work too. `channels` overrides the 8 conv widths."""

    def __init__(
        self,
        in_channels: int,
        input_size: tuple[int, int],
        num_classes: int,
        channels: Sequence[int],
    ):
        layers: list[nn.Module] = []
        side = min(input_size)
        widths = iter(channels)
        cin = in_channels
        for v in VGG11:
            if v == "M":
                if side >= 2:
                    layers.append(nn.MaxPool2d(2))
                    side //= 2
                continue
            cout = next(widths)
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
            cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        super().__init__(nn.Sequential(*layers), cin, num_classes)


@dataclass
class VGGConf(ModelConf):
    """The `model=vgg11` group: its options (defaults and checks, lineage.settings)."""

    name: str = "vgg11"
    width: float = knob(0.25, lo=0, ends="()")  # times VGG-11's channels
    channels: list[int] | None = knob(None)  # the 8 conv widths (overrides width)


@register("vgg11", VGGConf)
def vgg11(
    num_classes: int,
    in_channels: int,
    input_size: tuple[int, int],
    width: float = VGGConf.width,  # the factory's defaults are its options' (one home)
    channels: Sequence[int] | None = VGGConf.channels,
) -> nn.Module:
    if channels is None:
        channels = [max(1, int(round(v * width))) for v in VGG11 if isinstance(v, int)]
    return VGG(in_channels, input_size, num_classes, list(channels))
