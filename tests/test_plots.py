import struct

import pytest
import torch
from torch import nn

from lineage.errors import LineageError
from lineage.evaluate.closeness import LabelOnly
from lineage.plots import decision_plane, decision_regions, plane


def png_size(path):
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    return struct.unpack(">II", raw[16:24])


class HalfSpace(nn.Module):
    """Class 1 where pixel 0 exceeds 0.5, else class 0."""

    def forward(self, x):
        v = x.flatten(1)[:, 0]
        return torch.stack([0.5 - v, v - 0.5], 1)


def points():
    x1 = torch.zeros(1, 2, 2)
    x2 = x1.clone()
    x2[0, 0, 0] = 1.0  # along pixel 0: crosses the boundary at a = 0.5
    x3 = x1.clone()
    x3[0, 1, 1] = 1.0
    return x1, x2, x3


def test_plane_is_orthonormal_and_places_the_points():
    x1, x2, x3 = points()
    x3 = x3 + 0.5 * (x2 - x1)  # not orthogonal to x2 - x1
    u, v, coords = plane(x1, x2, x3)
    assert abs(u @ v) < 1e-12 and u.norm() == pytest.approx(1) == v.norm()
    assert coords.flatten().tolist() == pytest.approx([0, 0, 1, 0, 0.5, 1])
    with pytest.raises(LineageError, match="one line"):
        plane(x1, x2, 2 * x2)
    with pytest.raises(LineageError, match="same point"):
        plane(x1, x1, x3)


def test_decision_regions_know_the_boundary():
    grid, (a0, a1, b0, b1), _ = decision_regions(HalfSpace(), *points(), resolution=41, padding=0.5)
    a = torch.linspace(a0, a1, 41)
    assert (a0, a1, b0, b1) == pytest.approx((-0.5, 1.5, -0.5, 1.5))
    expected = (a > 0.5).long().expand(41, -1)  # the boundary is the line a = 0.5
    assert torch.equal(grid, expected)
    labels, _, _ = decision_regions(LabelOnly(HalfSpace()), *points(), resolution=41)
    assert torch.equal(labels, grid)


def test_decision_plane_writes_a_png_of_the_expected_size(tmp_path):
    path = decision_plane(
        {"a": HalfSpace(), "b": LabelOnly(HalfSpace()), "c": HalfSpace()},
        *points(),
        tmp_path / "sub" / "plane.png",
        resolution=30,
        panel_size=2.0,
        dpi=50,
        title="three panels",
    )
    assert path.exists() and png_size(path) == (3 * 2 * 50, 2 * 50)
    one = decision_plane([HalfSpace()], *points(), tmp_path / "one.png", dpi=40)
    assert png_size(one) == (120, 120)
    with pytest.raises(LineageError, match="no models"):
        decision_plane({}, *points(), tmp_path / "none.png")
