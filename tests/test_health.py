"""The training health hook: a dead classifier or an exploding loss is stated, never a silent AP 0.00.

A real distribution head (R-18, 16-channel FPN/head) on a real synthetic batch, driven through the
hook's runner interface: a tower whose last conv never fires and a classifier below the test
threshold give the "detects nothing" verdict with the tower's count; a healthy one gives none; a
loss window 10x the median of the earlier ones is "exploding".
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.engine
torch = pytest.importorskip("torch")
pytest.importorskip("mmrotate")

from rotld_cli.engine import load_engine  # noqa: E402

FEAT = 16


@pytest.fixture(scope="module")
def model():
    load_engine()
    from mmrotate.models import build_detector

    from rotld_cli.engine.config import build_config
    from rotld_cli.engine.train import quiet_init_logs
    from rotld_cli.recipes import load_recipe

    recipe = load_recipe("synthetic/baseline-r18-gwd", [
        f"model.neck.out_channels={FEAT}", f"model.head.feat_channels={FEAT}", "model.head.stacked_convs=2",
        "model.head.norm_groups=0",  # a plain tower: its last conv's bias can switch every unit off
    ])
    cfg = build_config(recipe)
    torch.manual_seed(0)
    detector = build_detector(cfg.model, train_cfg=cfg.get("train_cfg"), test_cfg=cfg.get("test_cfg"))
    with quiet_init_logs():
        detector.init_weights()
    return detector


def fake_runner(model):
    image = torch.rand(2, 3, 128, 128) * 2 - 1
    return SimpleNamespace(model=model, iter=1, epoch=0, inner_iter=0,
                           data_loader=[None] * 1000, data_batch={"img": image},
                           outputs={"log_vars": {"loss": 1.0}})


def run_hook(model, records):
    from rotld_cli.engine.health import HeadHealthHook

    hook = HeadHealthHook(records.append)
    runner = fake_runner(model)
    hook.before_run(runner)
    hook.before_train_iter(runner)
    with torch.no_grad():
        model.bbox_head(model.extract_feat(runner.data_batch["img"]))
    hook.after_train_iter(runner)
    hook.after_run(runner)
    return hook, runner


def run_hook_with(model, layer, records, bias: float, zero_weight: bool = True):
    """`run_hook` with `layer`'s bias set (and its weight zeroed), both restored afterwards."""
    saved = (layer.weight.detach().clone(), layer.bias.detach().clone())
    with torch.no_grad():
        if zero_weight:
            layer.weight.zero_()
        layer.bias.fill_(bias)
    try:
        return run_hook(model, records)
    finally:
        with torch.no_grad():
            layer.weight.copy_(saved[0])
            layer.bias.copy_(saved[1])


def test_a_dead_classification_tower_is_named_in_the_verdict(model):
    records = []
    # the collapse: every unit of the tower's last conv negative for every input
    hook, runner = run_hook_with(model, model.bbox_head.cls_convs[-1].conv, records, bias=-1.0)
    assert runner.outputs["log_vars"]["cls_active"] == 0.0
    # the logits are the classifier's bias alone: the 0.01 prior, below the test threshold 0.05
    prior = float(torch.sigmoid(model.bbox_head.retina_cls.bias.detach().max()))
    assert runner.outputs["log_vars"]["score_max"] == pytest.approx(prior, abs=1e-6)
    assert len(hook.verdicts) == 1
    assert "detects nothing" in hook.verdicts[0] and f"dead (0/{FEAT} channels active)" in hook.verdicts[0]
    assert records == [{"event": "health", "status": "collapsed", "epoch": 0, "iter": 1,
                        "message": hook.verdicts[0]}]


def test_a_live_tower_below_the_threshold_detects_nothing_but_has_not_collapsed(model):
    records = []
    # an undertrained classifier: every score at sigmoid(-6) ~ 0.0025, the tower alive
    hook, runner = run_hook_with(model, model.bbox_head.retina_cls, records, bias=-6.0)
    active = runner.outputs["log_vars"]["cls_active"]
    assert 0.0 < active <= 1.0
    assert runner.outputs["log_vars"]["score_max"] == pytest.approx(float(torch.sigmoid(torch.tensor(-6.0))), abs=1e-6)
    assert len(hook.verdicts) == 1
    message = hook.verdicts[0]
    assert "detects nothing" in message and "dead" not in message
    assert f"classification tower: {round(active * FEAT)}/{FEAT} channels active; train longer" in message
    assert [r["status"] for r in records] == ["detects_nothing"]


def test_a_classifier_above_the_threshold_has_no_verdict(model):
    records = []
    hook, runner = run_hook_with(model, model.bbox_head.retina_cls, records, bias=3.0, zero_weight=False)  # ~0.95
    assert hook.verdicts == [] and records == []
    assert 0.0 < runner.outputs["log_vars"]["cls_active"] <= 1.0
    assert runner.outputs["log_vars"]["score_max"] > 0.9


def test_an_exploding_loss_is_reported_once(model):
    from rotld_cli.engine.health import EXPLODING_FACTOR, MIN_WINDOWS, HeadHealthHook

    records = []
    hook = HeadHealthHook(records.append, interval=1)  # one loss window per iteration
    runner = fake_runner(model)
    values = [1.0, 1.2, 0.9, 1.1, 1.0, 0.95, EXPLODING_FACTOR * 1.0 + 1, 50.0]
    assert len(values) > MIN_WINDOWS
    for i, loss in enumerate(values):
        runner.iter, runner.inner_iter = i, i
        runner.outputs = {"log_vars": {"loss": loss}}
        hook.after_train_iter(runner)
    statuses = [r["status"] for r in records]
    assert statuses == ["exploding"], records
    assert "iteration 7" in records[0]["message"] and "the median" in records[0]["message"]
