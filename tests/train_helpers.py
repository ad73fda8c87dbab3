"""Tiny synthetic data and recipes shared by the training, distillation and inference tests.

Everything is sized for 2 CPU cores: 128 px patches, a 16-channel FPN/head, 2 images per step,
so one training iteration of the ResNet-18 takes well under a second.
"""

from __future__ import annotations

from pathlib import Path

from rotld_cli.demo.scenes import generate_dataset
from rotld_cli.dota.prepare import PrepareOptions, prepare_dota
from rotld_cli.dota.split import SplitParams

PATCH = 128


def make_split(root: Path, num_train: int = 4, num_val: int = 2, seed: int = 0) -> Path:
    """Synthetic DOTA images (128 px) split by prepare-dota into one 128 px patch each; returns the split root."""
    data = root / "data"
    generate_dataset(data, num_train=num_train, num_val=num_val, image_size=PATCH, seed=seed,
                     objects_per_image=(3, 5), distractors_per_image=(1, 3))
    split = root / "split"
    prepare_dota(data, split, PrepareOptions(split=SplitParams(sizes=(PATCH,), gaps=(0,))))
    return split


def write_recipe(path: Path, split: Path, base: str = "synthetic/baseline-r18-gwd", extra: str = "") -> Path:
    """A recipe inheriting a bundled synthetic one, shrunk to test size; `extra` is appended YAML."""
    path.write_text(
        f"""base: {base}
model:
  neck: {{out_channels: 16}}
  head: {{feat_channels: 16, norm_groups: 8, stacked_convs: 1}}
data:
  root: {split}
  img_scale: {PATCH}
  samples_per_gpu: 2
schedule:
  epochs: 2
  lr: 0.01
  base_batch: 4
  warmup: linear
  warmup_iters: 2
  warmup_ratio: 0.3333333333333333
  lr_gamma: 0.1
  lr_steps: [1]
runtime: {{eval_interval: 2, checkpoint_interval: 1, log_interval: 1, seed: 0}}
{extra}""",
        encoding="utf-8",
    )
    return path


STUDENT_EXTRA = """teacher:
  recipe: {teacher}
distill:
  loss_ld: {{weight: 10.0, T: 5.0}}
  loss_kd: {{weight: 20.0, T: 5.0}}
  loss_im: {{weight: 0.0}}
  imitation_method: finegrained
  ld_region_box: seed
"""


def write_student_recipe(path: Path, split: Path, teacher_recipe: Path, extra: str = "") -> Path:
    return write_recipe(path, split, extra=STUDENT_EXTRA.format(teacher=teacher_recipe) + extra)
