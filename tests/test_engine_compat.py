"""Each torch-2.x shim in rotld_cli.engine.compat: the unpatched code fails, the patched code works."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.engine

torch = pytest.importorskip("torch")
pytest.importorskip("mmrotate")

from rotld_cli.engine import compat, load_engine  # noqa: E402

load_engine()


def _retina_head(num_classes: int = 2):
    from mmrotate.models import build_head

    return build_head(
        dict(
            type="RotatedRetinaHead",
            num_classes=num_classes,
            in_channels=8,
            stacked_convs=1,
            feat_channels=8,
            anchor_generator=dict(
                type="RotatedAnchorGenerator",
                octave_base_scale=4,
                scales_per_octave=3,
                ratios=[1.0, 0.5, 2.0],
                strides=[8, 16],
            ),
            bbox_coder=dict(
                type="DeltaXYWHAOBBoxCoder",
                angle_range="oc",
                norm_factor=None,
                edge_swap=False,
                proj_xy=False,
                target_means=(0.0, 0.0, 0.0, 0.0, 0.0),
                target_stds=(1.0, 1.0, 1.0, 1.0, 1.0),
            ),
        )
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="the unpatched failure shows only without a GPU")
def test_get_anchors_unpatched_builds_on_cuda():
    head = _retina_head()
    original = compat.ORIGINALS["RotatedAnchorHead.get_anchors"]
    with pytest.raises((RuntimeError, AssertionError), match="NVIDIA|CUDA"):
        original(head, [(4, 4), (2, 2)], [dict(pad_shape=(32, 32, 3))], device="cpu")


def test_get_anchors_patched_on_requested_device():
    head = _retina_head()
    anchors, flags = head.get_anchors([(4, 4), (2, 2)], [dict(pad_shape=(32, 32, 3))] * 2, device="cpu")
    assert len(anchors) == len(flags) == 2
    # 9 anchors (3 scales x 3 ratios) per location, (cx, cy, w, h, theta=0)
    assert [a.shape for a in anchors[0]] == [(4 * 4 * 9, 5), (2 * 2 * 9, 5)]
    assert all(a.device.type == "cpu" and a.dtype == torch.float32 for a in anchors[0])
    first = anchors[0][0][0].tolist()
    # level 0, location (0, 0), first base anchor: ratio 1.0, scale 4 * 2**0 * stride 8 = 32
    assert first == pytest.approx([0.0, 0.0, 32.0, 32.0, 0.0])
    # pad 32x32 with stride 8 -> every one of the 4x4 locations is valid
    assert bool(flags[0][0].all()) and flags[0][0].shape == (4 * 4 * 9,)
