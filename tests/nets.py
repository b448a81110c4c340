"""Models and data that only the tests define: the public API must take them as they are.

Nothing here has `.features`, `.head` or an `.arch` record: the head is found in the graph,
the permutation groups come from torch.fx, and the data from a plain function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN plus an identity shortcut."""

    def __init__(self, c: int):
        super().__init__()
        self.conv_a = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(c)
        self.conv_b = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(c)

    def forward(self, x):
        h = F.relu(self.bn_a(self.conv_a(x)))
        return F.relu(x + self.bn_b(self.conv_b(h)))


class ResCNN(nn.Module):
    """A small residual CNN with BatchNorm, a channel concatenation and a head called
    `classifier`, for 1x8x8 images."""

    def __init__(self, num_classes: int = 10, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width))
        self.blocks = nn.Sequential(Block(width), Block(width))
        self.side = nn.Conv2d(width, width // 2, 1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.hidden = nn.Linear((width + width // 2) * 4, 32)
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x):
        h = self.blocks(F.relu(self.stem(x)))
        h = torch.cat([h, F.relu(self.side(h))], 1)  # channels side by side
        h = torch.flatten(self.pool(h), 1)
        return self.classifier(F.relu(self.hidden(h)))


class TabMLP(nn.Module):
    """An MLP for standardised tabular features: three hidden layers with LayerNorm."""

    def __init__(self, in_features: int = 30, num_classes: int = 2, hidden: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(3):
            layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.ReLU()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.out(self.body(x))


def tab_mlp(num_classes: int, in_features: int, hidden: int = 64) -> nn.Module:
    """A factory in the `_target_` convention: the data fills in its task arguments."""
    return TabMLP(in_features, num_classes, hidden)


def blobs(n: int = 600, features: int = 6, classes: int = 3, seed: int = 0):
    """A data `_target_`: Gaussian blobs as (x_train, y_train, x_test, y_test) tensors."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, features, generator=g) * 2.5
    y = torch.randint(classes, (n,), generator=g)
    x = centres[y] + torch.randn(n, features, generator=g)
    k = n * 4 // 5
    return x[:k], y[:k], x[k:], y[k:]


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    """A plain training loop (Adam, batches of 64): the test's own, not the project's."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()
