from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from ..settings import knob
from .registry import FeaturesHead, ModelConf, register


class BasicBlock(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(FeaturesHead):
    """CIFAR-style ResNet-18: 3x3 stem, no max-pool, four stages of two BasicBlocks.
    `mid` optionally sets each block's inner width (8 numbers), which structured pruning
    shrinks without touching the residual stream."""

    def __init__(self, in_channels: int, num_classes: int, width: float, mid: Sequence[int] | None):
        stages = [max(1, int(round(c * width))) for c in (64, 128, 256, 512)]
        widths = [s for s in stages for _ in range(2)]
        mids = list(mid) if mid is not None else widths
        blocks: list[nn.Module] = []
        cin = stages[0]
        for i, cout in enumerate(widths):
            stride = 2 if i in (2, 4, 6) else 1
            blocks.append(BasicBlock(cin, mids[i], cout, stride))
            cin = cout
        features = nn.Sequential(
            nn.Conv2d(in_channels, stages[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(stages[0]),
            nn.ReLU(),
            *blocks,
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        super().__init__(features, cin, num_classes)


@dataclass
class ResNetConf(ModelConf):
    """The `model=resnet18` group: its options (defaults and checks, lineage.settings)."""

    name: str = "resnet18"
    width: float = knob(1.0, lo=0, ends="()")  # times (64, 128, 256, 512) channels per stage
    mid: list[int] | None = knob(None)  # each block's inner width (8 numbers; pruning sets it)


@register("resnet18", ResNetConf)
def resnet18(
    num_classes: int,
    in_channels: int,
    input_size: tuple[int, int],
    width: float = ResNetConf.width,  # the factory's defaults are its options' (one home)
    mid: Sequence[int] | None = ResNetConf.mid,
) -> nn.Module:
    return ResNet18(in_channels, num_classes, width, mid)
