"""Each detector family's part of the compiled `model`: detector type, neck, heads, train/test cfg.

Engine-free (plain dicts, like `config.compile_recipe`, which calls it). The constants a recipe
does not expose are MMRotate 0.3.4's own configs' values: `rotated_retinanet_hbb_r50_fpn_1x_dota_oc`
with the seed's distribution head (retinanet), `rotated_atss_hbb_r50_fpn_1x_dota_oc` (atss),
`rotated_fcos_kld_r50_fpn_1x_dota_le90` (fcos) and `oriented_rcnn_r50_fpn_1x_dota_le90` (orcnn);
the distribution heads replace their regression branches (`engine/models`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rotld_cli.recipes import Recipe

INF = 1e8  # mmrotate's FCOS "no upper bound" of the last regress range
BBOX_LOSSES = {
    "gwd": lambda weight: dict(type="GDLoss", loss_type="gwd", loss_weight=weight),
    "kld": lambda weight: dict(type="GDLoss_v1", loss_type="kld", fun="log1p", tau=1.0, loss_weight=weight),
}
ORCNN_BINS = ((-4.0, 4.0), (-8.0, 8.0))
"""Bins of the Oriented R-CNN RoI head's distributions: dx, dy, dw, dh (normalised by the coder's stds
0.1, 0.1, 0.2, 0.2: a positive RoI, IoU ≥ 0.5, lies within ±3.5) and dθ (std 0.1; the coder's edge
swap keeps |dθ| ≤ π/4, i.e. ±7.9)."""


@dataclass(frozen=True)
class FamilyModel:
    """How a family compiles: its detector types, its student head per `distill.method`, its parts."""

    detector: str
    student_detector: str
    student_heads: dict[str, str]
    parts: Callable[[Recipe, int], dict[str, Any]]
    distilled_head: tuple[str, ...] = ("bbox_head",)
    """Where the head that a student's `distill` arguments go to sits in the model dict."""
    student_roi_head: str | None = None
    """A two-stage student's RoI head type (it runs the teacher's RoI head on the student's RoIs)."""


def _focal(recipe: Recipe) -> dict[str, Any]:
    get = recipe.get
    return dict(
        type="FocalLoss",
        use_sigmoid=True,
        gamma=get("model.head.loss_cls.gamma"),
        alpha=get("model.head.loss_cls.alpha"),
        loss_weight=get("model.head.loss_cls.weight"),
    )


def _test_cfg(recipe: Recipe) -> dict[str, Any]:
    get = recipe.get
    return dict(
        nms_pre=get("model.test.nms_pre"),
        min_bbox_size=get("model.test.min_bbox_size"),
        score_thr=get("model.test.score_thr"),
        nms=dict(iou_thr=get("model.test.nms_iou_thr")),
        max_per_img=get("model.test.max_per_img"),
    )


def anchor_head(recipe: Recipe, width: int, head_type: str) -> dict[str, Any]:
    """The seed's distribution head (RetinaNet or ATSS): 'oc' coder without edge swap, hbb assignment."""
    get = recipe.get
    angle = get("model.angle_version")
    head = dict(
        type=head_type,
        num_classes=len(recipe.classes),
        in_channels=width,
        stacked_convs=get("model.head.stacked_convs"),
        feat_channels=get("model.head.feat_channels"),
        reg_max=get("model.head.reg_max"),
        reg_decoded_bbox=get("model.head.reg_decoded_bbox"),
        assign_by_circumhbbox=angle,
        anchor_generator=dict(
            type="RotatedAnchorGenerator",
            octave_base_scale=get("model.anchors.octave_base_scale"),
            scales_per_octave=get("model.anchors.scales_per_octave"),
            ratios=list(get("model.anchors.ratios")),
            strides=list(get("model.anchors.strides")),
        ),
        bbox_coder=dict(
            type="DeltaXYWHAOBBoxCoder",
            angle_range=angle,
            norm_factor=None,
            edge_swap=False,
            proj_xy=False,
            target_means=(0.0, 0.0, 0.0, 0.0, 0.0),
            target_stds=(1.0, 1.0, 1.0, 1.0, 1.0),
        ),
        loss_cls=_focal(recipe),
        loss_bbox=BBOX_LOSSES[get("model.head.loss_bbox.type")](get("model.head.loss_bbox.weight")),
    )
    if get("model.head.norm_groups", 0):  # the seed's head has no norm; a from-scratch one needs it
        head["norm_cfg"] = dict(type="GN", num_groups=get("model.head.norm_groups"), requires_grad=True)
    return head


def _anchor_family(recipe: Recipe, width: int, head_type: str, assigner: dict[str, Any]) -> dict[str, Any]:
    """RetinaNet and ATSS: the same FPN (extra levels on the input), head and test settings; their assigners
    differ. Both assigners compute IoUs with `SparseRBboxOverlaps2D` (mmrotate's values, only the pairs
    that can overlap)."""
    assigner = dict(assigner, iou_calculator=dict(type="SparseRBboxOverlaps2D"))
    return dict(
        neck=dict(start_level=1, add_extra_convs="on_input"),
        bbox_head=anchor_head(recipe, width, head_type),
        train_cfg=dict(assigner=assigner, allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=_test_cfg(recipe),
    )


def _retinanet(recipe: Recipe, width: int) -> dict[str, Any]:
    get = recipe.get
    assigner = dict(type="MaxIoUAssigner", pos_iou_thr=get("model.assigner.pos_iou_thr"),
                    neg_iou_thr=get("model.assigner.neg_iou_thr"), min_pos_iou=get("model.assigner.min_pos_iou"),
                    ignore_iof_thr=-1)  # fmt: skip
    return _anchor_family(recipe, width, "RotatedRetinaHeadDistribution", assigner)


def _atss(recipe: Recipe, width: int) -> dict[str, Any]:
    assigner = dict(type="RotatedATSSAssigner", topk=recipe.get("model.atss.topk"))
    return _anchor_family(recipe, width, "RotatedATSSHeadDistribution", assigner)


def _fcos(recipe: Recipe, width: int) -> dict[str, Any]:
    get = recipe.get
    feat = get("model.head.feat_channels")
    bounds = [-1, *get("model.fcos.regress_ranges"), INF]
    head = dict(
        type="RotatedFCOSHeadDistribution",
        num_classes=len(recipe.classes),
        in_channels=width,
        stacked_convs=get("model.head.stacked_convs"),
        feat_channels=feat,
        reg_max=get("model.head.reg_max"),
        strides=list(get("model.fcos.strides")),
        regress_ranges=[[lo, hi] for lo, hi in zip(bounds, bounds[1:])],
        center_sampling=get("model.fcos.center_sampling"),
        center_sample_radius=get("model.fcos.center_sample_radius"),
        norm_on_bbox=True,
        centerness_on_reg=get("model.fcos.centerness_on_reg"),
        separate_angle=False,
        scale_angle=True,
        # GN with 32 groups as mmrotate's config (or the recipe's norm_groups); narrower towers keep ≥ 2
        # channels per group, since a group of one channel has no statistics on a 1×1 map (the top level of
        # a 128² patch) with batch 1
        norm_cfg=dict(type="GN", num_groups=get("model.head.norm_groups", 0) or math.gcd(32, feat // 2),
                      requires_grad=True),
        bbox_coder=dict(type="DistanceAnglePointCoder", angle_version=get("model.angle_version")),
        loss_cls=_focal(recipe),
        loss_bbox=BBOX_LOSSES[get("model.head.loss_bbox.type")](get("model.head.loss_bbox.weight")),
        loss_centerness=dict(
            type="CrossEntropyLoss", use_sigmoid=True, loss_weight=get("model.fcos.centerness_weight")
        ),
    )
    return dict(
        neck=dict(start_level=1, add_extra_convs="on_output", relu_before_extra_convs=True),
        bbox_head=head,
        train_cfg=None,
        test_cfg=_test_cfg(recipe),
    )


def _orcnn(recipe: Recipe, width: int) -> dict[str, Any]:
    get = recipe.get
    angle = get("model.angle_version")
    proposals = get("model.rpn.proposals")
    proposal_cfg = dict(
        nms_pre=proposals,
        max_per_img=proposals,
        nms=dict(type="nms", iou_threshold=get("model.rpn.nms_iou_thr")),
        min_bbox_size=0,
    )
    strides = list(get("model.rpn.strides"))
    rpn_head = dict(
        type="OrientedRPNHead",
        in_channels=width,
        feat_channels=get("model.rpn.feat_channels"),
        version=angle,
        anchor_generator=dict(
            type="AnchorGenerator",
            scales=list(get("model.rpn.anchor_scales")),
            ratios=list(get("model.rpn.anchor_ratios")),
            strides=strides,
        ),
        bbox_coder=dict(
            type="MidpointOffsetCoder",
            angle_range=angle,
            target_means=[0.0] * 6,
            target_stds=[1.0, 1.0, 1.0, 1.0, 0.5, 0.5],
        ),
        loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type="SmoothL1Loss", beta=1.0 / 9.0, loss_weight=1.0),
    )
    (low, high), (angle_low, angle_high) = ORCNN_BINS
    bbox_head = dict(
        type="RotatedShared2FCBBoxHeadDistribution",
        in_channels=width,
        fc_out_channels=get("model.roi_head.fc_out_channels"),
        roi_feat_size=7,
        num_classes=len(recipe.classes),
        reg_max=get("model.roi_head.reg_max"),
        bins=[low, high, angle_low, angle_high],
        bbox_coder=dict(
            type="DeltaXYWHAOBBoxCoder",
            angle_range=angle,
            norm_factor=None,
            edge_swap=True,
            proj_xy=True,
            target_means=(0.0, 0.0, 0.0, 0.0, 0.0),
            target_stds=(0.1, 0.1, 0.2, 0.2, 0.1),
        ),
        reg_class_agnostic=True,
        loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type="SmoothL1Loss", beta=1.0, loss_weight=1.0),
    )
    roi_head = dict(
        type="OrientedStandardRoIHead",
        bbox_roi_extractor=dict(
            type="RotatedSingleRoIExtractor",
            roi_layer=dict(type="RoIAlignRotated", out_size=7, sample_num=2, clockwise=True),
            out_channels=width,
            featmap_strides=strides[:4],
        ),
        bbox_head=bbox_head,
    )
    pos_iou = get("model.roi_head.pos_iou_thr")
    train_cfg = dict(
        rpn=dict(
            assigner=dict(
                type="MaxIoUAssigner",
                pos_iou_thr=0.7,
                neg_iou_thr=0.3,
                min_pos_iou=0.3,
                match_low_quality=True,
                ignore_iof_thr=-1,
            ),
            sampler=dict(
                type="RandomSampler",
                num=get("model.rpn.num_samples"),
                pos_fraction=0.5,
                neg_pos_ub=-1,
                add_gt_as_proposals=False,
            ),
            allowed_border=0,
            pos_weight=-1,
            debug=False,
        ),
        rpn_proposal=dict(proposal_cfg),
        rcnn=dict(
            assigner=dict(
                type="MaxIoUAssigner",
                pos_iou_thr=pos_iou,
                neg_iou_thr=pos_iou,
                min_pos_iou=pos_iou,
                match_low_quality=False,
                iou_calculator=dict(type="RBboxOverlaps2D"),
                ignore_iof_thr=-1,
            ),
            sampler=dict(
                type="RRandomSampler",
                num=get("model.roi_head.num_samples"),
                pos_fraction=get("model.roi_head.pos_fraction"),
                neg_pos_ub=-1,
                add_gt_as_proposals=True,
            ),
            pos_weight=-1,
            debug=False,
        ),
    )
    return dict(
        neck=dict(),
        rpn_head=rpn_head,
        roi_head=roi_head,
        train_cfg=train_cfg,
        test_cfg=dict(rpn=dict(proposal_cfg), rcnn=_test_cfg(recipe)),
    )


ONE_STAGE_STUDENT = "KnowledgeDistillationRotatedSingleStageDetector"
FAMILY_MODELS = {
    "retinanet": FamilyModel(
        "RotatedRetinaNet", ONE_STAGE_STUDENT,
        {"ld": "LDRotatedRetinaHead", "crosskd": "CrossKDRotatedRetinaHead", "bckd": "BCKDRotatedRetinaHead"},
        _retinanet,
    ),
    "atss": FamilyModel(
        "RotatedRetinaNet", ONE_STAGE_STUDENT,
        {"ld": "LDRotatedATSSHead", "crosskd": "CrossKDRotatedATSSHead", "bckd": "BCKDRotatedATSSHead"},
        _atss,
    ),
    "fcos": FamilyModel(
        "RotatedFCOS", ONE_STAGE_STUDENT,
        {"ld": "LDRotatedFCOSHead", "crosskd": "CrossKDRotatedFCOSHead", "bckd": "BCKDRotatedFCOSHead"},
        _fcos,
    ),
    "orcnn": FamilyModel(
        "OrientedRCNN", "KnowledgeDistillationOrientedRCNN", {"ld": "LDRotatedShared2FCBBoxHead"}, _orcnn,
        distilled_head=("roi_head", "bbox_head"), student_roi_head="KDOrientedStandardRoIHead",
    ),
}  # fmt: skip
