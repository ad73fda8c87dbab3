"""Why the synthetic (from-scratch) recipes normalise their head: a dead tower never comes back.

The collapsed runs of the old benchmark (AP 0.00, `loss_cls` flat near 1.0, no score above 0.05)
are a classification tower whose last conv stopped firing: with every ReLU input negative, no
gradient reaches the tower again and the logits are the classifier's bias, the 0.01 prior. An
over-large step that pushes the tower's pre-activations down (the background anchors' focal loss
pulls every logit down) is what kills it. These tests make that step on the bundled synthetic
baseline (real rendered scenes, the recipe's 64-channel head) and check both halves:

* without GroupNorm the step kills every channel, and the training step that follows gives the
  tower exactly zero gradient: the collapse is permanent;
* with the recipe's GroupNorm the same step changes nothing: a shift of the pre-activations is
  removed by the group mean, so the tower's output is the same to float precision.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.engine
torch = pytest.importorskip("torch")
pytest.importorskip("mmrotate")

from rotld_cli.engine import load_engine  # noqa: E402

SHIFT = 50.0  # the step: every pre-activation of the tower's last conv lowered by this much


def build(norm_groups: int | None):
    load_engine()
    from mmrotate.models import build_detector

    from rotld_cli.engine.config import build_config
    from rotld_cli.engine.train import quiet_init_logs
    from rotld_cli.recipes import load_recipe

    overrides = [] if norm_groups is None else [f"model.head.norm_groups={norm_groups}"]
    recipe = load_recipe("synthetic/baseline-r18-gwd", overrides)
    cfg = build_config(recipe)
    torch.manual_seed(0)
    model = build_detector(cfg.model, train_cfg=cfg.get("train_cfg"), test_cfg=cfg.get("test_cfg"))
    with quiet_init_logs():
        model.init_weights()
    return model, recipe


@pytest.fixture(scope="module")
def images():
    """Two rendered synthetic scenes at the recipe's patch size, normalised as the pipeline does."""
    import numpy as np

    from rotld_cli.demo.scenes import make_config, plan_scene, render_scene
    from rotld_cli.engine.config import IMG_NORM

    config = make_config(image_size=128, objects_per_image=(8, 12), object_scale=1.5)
    batch = []
    for index in range(2):
        bgr = render_scene(plan_scene(config, index)).astype(np.float32)
        rgb = bgr[..., ::-1]
        batch.append((rgb - np.array(IMG_NORM["mean"])) / np.array(IMG_NORM["std"]))
    return torch.tensor(np.stack(batch), dtype=torch.float32).permute(0, 3, 1, 2).contiguous()


def tower_output(model, images):
    outputs = []
    handle = model.bbox_head.cls_convs[-1].register_forward_hook(lambda m, i, o: outputs.append(o))
    try:
        cls_scores, _ = model.bbox_head(model.extract_feat(images))
    finally:
        handle.remove()
    return outputs[0], cls_scores


def test_the_recipes_from_scratch_heads_are_normalised():
    """Every bundled recipe that trains its backbone from scratch normalises its dense head's towers (an
    Oriented R-CNN has none: its RoI head is fully connected, its RPN one conv)."""
    from rotld_cli.recipes import bundled_recipes, load_recipe

    checked = 0
    for name, _, _ in bundled_recipes():
        recipe = load_recipe(name)
        if recipe.get("model.backbone.pretrained") is None and "head" in recipe.data["model"]:
            assert recipe.get("model.head.norm_groups", 0) > 0, name
            checked += 1
    assert checked >= 15  # synthetic/, synthetic-fcos/, synthetic-atss/


def test_without_groupnorm_the_step_kills_the_tower_for_good(images):
    model, _ = build(norm_groups=0)
    model.train()
    before, _ = tower_output(model, images)
    assert float((before > 0).float().mean()) > 0.1
    conv = model.bbox_head.cls_convs[-1].conv
    with torch.no_grad():
        conv.bias.sub_(SHIFT)
    after, cls_scores = tower_output(model, images)
    assert int((after > 0).sum()) == 0  # every channel dead on every input
    prior = torch.sigmoid(model.bbox_head.retina_cls.bias.detach()).max()
    assert float(max(s.detach().sigmoid().max() for s in cls_scores)) == pytest.approx(float(prior), abs=1e-6)
    model.zero_grad()
    loss = sum(s.sigmoid().sum() for s in cls_scores)  # any loss of the scores: the tower gets nothing
    loss.backward()
    for module in model.bbox_head.cls_convs:
        for param in module.parameters():
            assert param.grad is None or int(param.grad.count_nonzero()) == 0


def test_with_the_recipes_groupnorm_the_same_step_changes_nothing(images):
    model, recipe = build(norm_groups=None)  # the bundled recipe's own head
    assert recipe.get("model.head.norm_groups") > 0
    model.train()
    before, _ = tower_output(model, images)
    conv = model.bbox_head.cls_convs[-1].conv
    assert conv.bias is None  # conv -> GroupNorm -> ReLU: the shift acts on the norm's input
    handle = conv.register_forward_hook(lambda m, i, o: o - SHIFT)
    try:
        after, _ = tower_output(model, images)
    finally:
        handle.remove()
    active = (after > 0).flatten(2).any(dim=2).any(dim=0)
    assert bool(active.all())
    torch.testing.assert_close(after, before, atol=2e-3, rtol=1e-3)
