"""`RotatedRetinaHeadDistribution`: rotated RetinaNet whose regression branch predicts distributions.

Port of the seed's head onto mmrotate 0.3.4's `RotatedRetinaHead` (method.md §1, §9.3). The only
architectural change is `retina_reg`: A*(reg_max+1)*5 channels instead of A*5. Everything that
consumes box deltas (loss, inference, R3Det-style filtering) first turns the logits into the
usual A*5 delta map through the integrals, then runs the unchanged 0.3.4 code. That keeps the
targets, assignment, NMS and rescaling identical to mmrotate and fixes two seed defects for free:
`reg_decoded_bbox=False` (loss on integral deltas vs encoded targets) and `filter_bboxes`/
`refine_bboxes`, which assumed 5 channels per anchor.
"""

from __future__ import annotations

from mmcv.runner import force_fp32
from mmrotate.models.builder import ROTATED_HEADS
from mmrotate.models.dense_heads.rotated_retina_head import RotatedRetinaHead
from torch import Tensor, nn

from rotld_cli.engine.models.integral import NUM_COORDS, Integral, IntegralAngle, integral_deltas


@ROTATED_HEADS.register_module()
class RotatedRetinaHeadDistribution(RotatedRetinaHead):
    """Rotated RetinaNet head with 5 discrete distributions (reg_max+1 bins) per anchor.

    Initialisation comes from `RotatedRetinaHead`'s init_cfg: every Conv2d (the towers and the
    widened `retina_reg`, which keeps its name) gets Normal(std=0.01, bias=0), and `retina_cls`
    is overridden with the 0.01-prior bias, matching the seed's `init_weights`.
    """

    def __init__(self, num_classes: int, in_channels: int, reg_max: int = 8, **kwargs) -> None:
        self.reg_max = reg_max  # read by _init_layers, which the parent constructor calls
        super().__init__(num_classes, in_channels, **kwargs)
        self.integral = Integral(reg_max)
        self.integral_angle = IntegralAngle(reg_max)

    def _init_layers(self) -> None:
        super()._init_layers()
        self.retina_reg = nn.Conv2d(
            self.feat_channels, self.num_anchors * (self.reg_max + 1) * NUM_COORDS, 3, padding=1
        )

    def deltas_map(self, bbox_pred: Tensor) -> Tensor:
        """(N, A*(reg_max+1)*5, H, W) logits → (N, A*5, H, W) expected deltas, mmrotate's layout."""
        n, _, h, w = bbox_pred.shape
        logits = bbox_pred.permute(0, 2, 3, 1).reshape(-1, (self.reg_max + 1) * NUM_COORDS)
        deltas = integral_deltas(logits, self.integral, self.integral_angle)
        return deltas.reshape(n, h, w, self.num_anchors * NUM_COORDS).permute(0, 3, 1, 2)

    def loss_single(
        self,
        cls_score: Tensor,
        bbox_pred: Tensor,
        anchors: Tensor,
        labels: Tensor,
        label_weights: Tensor,
        bbox_targets: Tensor,
        bbox_weights: Tensor,
        num_total_samples: int,
    ) -> tuple[Tensor, Tensor]:
        """Focal cls loss + box loss on the integral deltas (decoded first if reg_decoded_bbox)."""
        return super().loss_single(
            cls_score,
            self.deltas_map(bbox_pred),
            anchors,
            labels,
            label_weights,
            bbox_targets,
            bbox_weights,
            num_total_samples,
        )

    def _get_bboxes_single(
        self,
        cls_score_list,
        bbox_pred_list,
        mlvl_anchors,
        img_shape,
        scale_factor,
        cfg,
        rescale=False,
        with_nms=True,
    ):
        """Inference: decode each level's logits to deltas, then mmrotate's top-k/decode/NMS."""
        delta_list = [self.deltas_map(pred[None])[0] for pred in bbox_pred_list]
        return super()._get_bboxes_single(
            cls_score_list, delta_list, mlvl_anchors, img_shape, scale_factor, cfg, rescale, with_nms
        )

    @force_fp32(apply_to=("cls_scores", "bbox_preds"))
    def filter_bboxes(self, cls_scores, bbox_preds):
        """R3Det's best-anchor filter, on the integral deltas."""
        return super().filter_bboxes(cls_scores, [self.deltas_map(p) for p in bbox_preds])

    @force_fp32(apply_to=("cls_scores", "bbox_preds"))
    def refine_bboxes(self, cls_scores, bbox_preds):
        """S2ANet's refinement, on the integral deltas."""
        return super().refine_bboxes(cls_scores, [self.deltas_map(p) for p in bbox_preds])
