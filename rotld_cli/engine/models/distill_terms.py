"""The LD and KD terms of one FPN level (or one batch of RoIs), shared by every student head.

Every family distils the same way (method.md §3.4), only its region differs:

    L_ld = w_ld · Σ_a r_a · Σ_j KD_T(s_aj, t_aj) / N_r      (j over the 5 box distributions)
    L_kd = w_kd · Σ_a r_a · KD_T(s_a, t_a) / N_r            (softmax KL of the class logits)
    N_r  = max(#{a : r_a > 0}, 1)

with r the region's weight per anchor, point or RoI: the seed's valuable localization region
(rotated RetinaNet), or the head's own positives (rotated FCOS and ATSS, Oriented R-CNN's
positive RoIs). `KD_T` is the loss module given (mmdet's `KnowledgeDistillationKLDivLoss`: KL
averaged over the bins, × T²).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rotld_cli.engine.models.integral import NUM_COORDS

KD_REGIONS = ("ld", "all")
"""Where a dense student's KD applies: its LD region (`ld`: the valuable localization region, or the
positives) or every anchor/point the assigner does not ignore (`all`, / the number of positives)."""


def checked_kd_region(kd_region: str) -> str:
    """`kd_region` if it is one of `KD_REGIONS` (ValueError otherwise: a head built outside a recipe)."""
    if kd_region not in KD_REGIONS:
        raise ValueError(f"kd_region must be one of {', '.join(KD_REGIONS)}, got {kd_region!r}")
    return kd_region


def term_enabled(cfg: dict | None) -> bool:
    """A distillation term runs when its loss config is given with a weight > 0."""
    return cfg is not None and float(cfg.get("loss_weight", 1.0)) > 0


def flat_scores(score_map: Tensor, channels: int) -> Tensor:
    """(N, A*channels, H, W) → (N*H*W*A, channels), the flattened anchor order (n, h, w, a)."""
    return score_map.permute(0, 2, 3, 1).reshape(-1, channels)


def region_count(region: Tensor) -> Tensor:
    """N_r = max(#{region > 0}, 1): the per-level normaliser of LD and KD."""
    return torch.clamp((region > 0).sum().float(), min=1.0)


def positive_region(labels: Tensor, num_classes: int) -> Tensor:
    """The head's own positives as a 0/1 region: label in [0, num_classes) (background is num_classes)."""
    return ((labels >= 0) & (labels < num_classes)).float().reshape(-1)


def ld_term(loss_ld: nn.Module, student: Tensor, teacher: Tensor, region: Tensor, bins: int) -> Tensor:
    """L_ld of (M, 5*bins) student and teacher logits (each row: the 5 distributions one after another)."""
    region = region.reshape(-1)
    weight = region[:, None].expand(-1, NUM_COORDS).reshape(-1)
    return loss_ld(student.reshape(-1, bins), teacher.reshape(-1, bins), weight=weight, avg_factor=region_count(region))


def kd_term(loss_kd: nn.Module, student: Tensor, teacher: Tensor, region: Tensor) -> Tensor:
    """L_kd of (M, C) student and teacher class logits."""
    region = region.reshape(-1)
    return loss_kd(student, teacher, weight=region, avg_factor=region_count(region))


def region_kd_term(loss_kd: nn.Module, student: Tensor, teacher: Tensor, region: Tensor, kd_region: str,
                   num_pos: float, kept: Tensor | None = None) -> Tensor:
    """KD by `kd_region`: `kd_term` on the region ('ld'), or on every row `kept` (all when None: no row is
    ignored) divided by the number of positives over all levels, the detector's own normaliser ('all')."""
    if kd_region == "all":
        return loss_kd(student, teacher, weight=kept, avg_factor=num_pos)
    return kd_term(loss_kd, student, teacher, region)
