"""Integral projections: the distribution head's 9-bin logits → expected box deltas (method.md §1.3).

The head predicts, per anchor, five discrete distributions over fixed bins (dx, dy, dw, dh, dθ).
The expected value under the softmax is the delta that the usual `DeltaXYWHAOBBoxCoder` decodes.
The bins are fixed buffers named `project`, so fork checkpoints (`bbox_head.integral.project`,
`bbox_head.integral_angle.project`) load unchanged. Neither range scales with `reg_max`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NUM_COORDS = 5  # dx, dy, dw, dh, dθ (FCOS: left, top, right, bottom, θ), in this order in each block of logits
ANGLE_RANGES = {"oc": (0.0, math.pi / 2), "le90": (-math.pi / 2, math.pi / 2), "le135": (-math.pi / 4, 3 * math.pi / 4)}
"""The angle convention's range of θ: the bins of the FCOS angle distribution (it predicts θ itself)."""


class _ProjectedSoftmax(nn.Module):
    """softmax over the last dim of (K, reg_max+1) logits, dotted with the fixed bins → (K,).

    The bins are linspace(low, high, reg_max+1): the class's range unless `low`/`high` are given
    (the FCOS and Oriented R-CNN heads use their own ranges: `ANGLE_RANGES`, `families.ORCNN_BINS`)."""

    low: float = 0.0
    high: float = 0.0

    def __init__(self, reg_max: int = 8, low: float | None = None, high: float | None = None) -> None:
        super().__init__()
        self.reg_max = reg_max
        low = self.low if low is None else low
        high = self.high if high is None else high
        self.register_buffer("project", torch.linspace(low, high, reg_max + 1))

    def forward(self, logits: Tensor) -> Tensor:
        return F.linear(F.softmax(logits, dim=-1), self.project.type_as(logits))


class Integral(_ProjectedSoftmax):
    """Bins linspace(-2, 2, reg_max+1) for the four box deltas dx, dy, dw, dh."""

    low, high = -2.0, 2.0


class IntegralAngle(_ProjectedSoftmax):
    """Bins linspace(-5, 2, reg_max+1) (radians) for dθ; asymmetric exactly as in the seed."""

    low, high = -5.0, 2.0


def integral_deltas(logits: Tensor, integral: Integral, integral_angle: IntegralAngle) -> Tensor:
    """(M, 5*(reg_max+1)) logits laid out dx|dy|dw|dh|dθ → (M, 5) expected deltas."""
    bins = integral.reg_max + 1
    xywh = integral(logits[:, : 4 * bins].reshape(-1, bins)).reshape(-1, 4)
    angle = integral_angle(logits[:, 4 * bins :].reshape(-1, bins))
    return torch.cat([xywh, angle[:, None]], dim=1)
