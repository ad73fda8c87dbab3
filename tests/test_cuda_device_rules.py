"""GPU-only torch-2 bugs caught on the CPU: the engine's paths under CUDA's device rules (tests/fake_gpu.py).

Each shim of this class is shown failing unpatched (through `compat.ORIGINALS`) under the fake
GPU, and the whole inference and training paths (teacher, LD student) are run on it.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.engine
torch = pytest.importorskip("torch")
pytest.importorskip("mmrotate")

from fake_gpu import FakeGpuTensor, fake_gpu, on_fake_gpu, to_fake_gpu  # noqa: E402

from rotld_cli.engine import compat, load_engine  # noqa: E402

load_engine()

from mmcv import ConfigDict  # noqa: E402


def test_the_fake_gpu_refuses_what_cuda_refuses():
    gpu = to_fake_gpu(torch.arange(4.0))
    cpu = torch.ones(4)
    assert gpu.device == torch.device("cuda", 0) and gpu.is_cuda
    with pytest.raises(RuntimeError, match="same device"):
        gpu + cpu
    with pytest.raises(RuntimeError, match="indices should be either on cpu"):
        cpu[gpu.long()]
    with pytest.raises(TypeError, match=r"Use Tensor\.cpu"):
        gpu.numpy()
    assert on_fake_gpu(gpu * torch.tensor(2.0))  # a CPU scalar is fine, as on CUDA
    assert on_fake_gpu(gpu[torch.tensor([0, 2])])  # CPU indices into a GPU tensor are fine
    assert not on_fake_gpu(gpu.cpu()) and np.array_equal(gpu.cpu().numpy(), [0, 1, 2, 3])
    with fake_gpu():
        assert on_fake_gpu(torch.zeros(2, device=gpu.device))
        assert not on_fake_gpu(torch.zeros(2))
        assert on_fake_gpu(cpu.to(gpu)) and on_fake_gpu(cpu.cuda())


def _nms_inputs(device_tensor=lambda t: t):
    torch.manual_seed(0)
    centres = torch.rand(30, 2) * 100
    sizes = torch.rand(30, 2) * 20 + 5
    boxes = torch.cat([centres, sizes, torch.rand(30, 1)], 1).repeat(1, 3)
    scores = torch.cat([torch.rand(30, 3), torch.zeros(30, 1)], 1)
    return device_tensor(boxes), device_tensor(scores)


def test_multiclass_nms_rotated_keeps_labels_on_the_scores_device():
    from mmrotate.core import multiclass_nms_rotated

    cfg = ConfigDict(iou_thr=0.1)
    want_dets, want_labels = multiclass_nms_rotated(*_nms_inputs(), 0.05, cfg, 50)
    original = compat.ORIGINALS["mmrotate.core.post_processing.bbox_nms_rotated.multiclass_nms_rotated"]
    with fake_gpu():
        with pytest.raises(RuntimeError, match="indices should be either on cpu"):
            original(*_nms_inputs(to_fake_gpu), 0.05, cfg, 50)
        dets, labels = multiclass_nms_rotated(*_nms_inputs(to_fake_gpu), 0.05, cfg, 50)
    assert on_fake_gpu(dets) and on_fake_gpu(labels)
    assert len(want_dets) > 3 and len(set(want_labels.tolist())) == 3
    assert torch.equal(dets.cpu(), want_dets) and torch.equal(labels.cpu(), want_labels)
    # Every module that imported the function by name runs the fixed one.
    import mmrotate.models.dense_heads.rotated_anchor_head as head_module

    assert head_module.multiclass_nms_rotated is multiclass_nms_rotated
    assert isinstance(dets, FakeGpuTensor)


TINY = {"model.neck.out_channels": 16, "model.head.feat_channels": 16, "model.head.norm_groups": 8,
        "model.head.stacked_convs": 1, "data.img_scale": 128}


def _tiny_model(recipe_name: str, tmp_path, with_teacher: bool = False, extra: tuple[str, ...] = ()):
    """A small, randomly initialised detector of a bundled synthetic recipe (LD student: with its teacher)."""
    from mmrotate.models import build_detector

    from rotld_cli.engine.config import build_config
    from rotld_cli.recipes import load_recipe

    overrides = [f"{k}={v}" for k, v in TINY.items()] + ["model.test.score_thr=0.0", "model.test.max_per_img=50",
                                                         *extra]
    if with_teacher:
        teacher = tmp_path / "teacher.yaml"
        teacher.write_text("base: synthetic/teacher-r34-gwd\nmodel:\n  neck: {out_channels: 16}\n"
                           "  head: {feat_channels: 16, norm_groups: 8, stacked_convs: 1}\n", encoding="utf-8")
        overrides.append(f"teacher.recipe={teacher}")
    recipe = load_recipe(recipe_name, overrides)
    cfg = build_config(recipe)
    cfg.model.backbone.init_cfg = None
    if with_teacher:
        cfg.model.teacher_config.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = build_detector(cfg.model, train_cfg=cfg.get("train_cfg"), test_cfg=cfg.get("test_cfg"))
    model.init_weights()
    with torch.no_grad():
        model.bbox_head.retina_cls.weight.normal_(0, 0.3)
        model.bbox_head.retina_reg.weight.normal_(0, 0.3)
    return model


def _batch(to_device):
    torch.manual_seed(1)
    img = to_device(torch.rand(2, 3, 128, 128))
    metas = [dict(img_shape=(128, 128, 3), ori_shape=(128, 128, 3), pad_shape=(128, 128, 3),
                  scale_factor=np.ones(4, dtype=np.float32), flip=False) for _ in range(2)]
    gt_bboxes = [to_device(torch.tensor([[40.0, 50.0, 30.0, 12.0, 0.3], [90.0, 80.0, 20.0, 20.0, -0.7]])),
                 to_device(torch.tensor([[64.0, 64.0, 50.0, 10.0, 1.2]]))]
    gt_labels = [to_device(torch.tensor([0, 1])), to_device(torch.tensor([2]))]
    return img, metas, gt_bboxes, gt_labels


@pytest.mark.parametrize("recipe", ["synthetic/teacher-r34-gwd", "synthetic/baseline-r18-gwd"])
def test_inference_on_the_gpu_gives_the_cpu_boxes(recipe, tmp_path):
    """`simple_test` (head → integral decode → top-k → NMS → numpy) under CUDA's rules equals the CPU run."""
    model = _tiny_model(recipe, tmp_path).eval()
    img, metas, _, _ = _batch(lambda t: t)
    with torch.no_grad():
        want = model.simple_test(img, metas, rescale=True)
        to_fake_gpu(model)
        with fake_gpu():
            got = model.simple_test(to_fake_gpu(img), metas, rescale=True)
    assert sum(len(boxes) for per_image in want for boxes in per_image) > 0
    for per_got, per_want in zip(got, want):
        for boxes_got, boxes_want in zip(per_got, per_want):
            np.testing.assert_allclose(boxes_got, boxes_want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("recipe,with_teacher,extra", [
    ("synthetic/teacher-r34-gwd", False, ()),
    ("synthetic/teacher-r34-gwd", False, ("model.head.loss_bbox.type=kld", "model.head.loss_bbox.weight=1.0")),
    ("synthetic/student-r18-gwd-ld-kd", True, ()),
])
def test_training_losses_on_the_gpu_equal_the_cpu_losses(recipe, with_teacher, extra, tmp_path):
    """Anchors, assigner (RBboxOverlaps2D), coder, GWD/KLD, focal loss, LD region and KD/LD losses under CUDA rules."""
    model = _tiny_model(recipe, tmp_path, with_teacher, extra).train()
    want = model.forward_train(*_batch(lambda t: t))
    to_fake_gpu(model)
    with fake_gpu():
        got = model.forward_train(*_batch(to_fake_gpu))
    assert set(got) == set(want) and (not with_teacher or {"loss_ld", "loss_kd"} <= set(want))
    for key in want:
        values_got = got[key] if isinstance(got[key], list) else [got[key]]
        values_want = want[key] if isinstance(want[key], list) else [want[key]]
        for g, w in zip(values_got, values_want):
            assert on_fake_gpu(g), key
            torch.testing.assert_close(g.detach().cpu(), w.detach(), rtol=1e-4, atol=1e-5)


def test_amp_teacher_outputs_in_fp16_give_the_fp32_distillation_losses(tmp_path):
    """Under `--amp` the teacher runs in autocast: its fp16 logits and features meet the fp32 student losses."""
    model = _tiny_model("synthetic/student-r18-gwd-ld-kd", tmp_path, with_teacher=True).train()
    img, metas, gt_bboxes, gt_labels = _batch(lambda t: t)
    with torch.no_grad():
        x = model.extract_feat(img)
        teacher_x = model.teacher_model.extract_feat(img)
        out_teacher = model.teacher_model.bbox_head(teacher_x)

    def half(value):
        return [half(v) for v in value] if isinstance(value, (list, tuple)) else value.half()

    want = model.bbox_head.forward_train(x, out_teacher, teacher_x, metas, gt_bboxes, gt_labels)
    got = model.bbox_head.forward_train(x, half(out_teacher), half(teacher_x), metas, gt_bboxes, gt_labels)
    assert {"loss_ld", "loss_kd"} <= set(want)
    for key in want:
        for g, w in zip(got[key], want[key]):
            assert g.dtype == torch.float32 and torch.isfinite(g)
            torch.testing.assert_close(g.detach(), w.detach(), rtol=2e-2, atol=1e-3)
