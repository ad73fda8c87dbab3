"""Our training entry for `rotld train-teacher` and `rotld distill`: plain and linear.

Why not `mmrotate.apis.train_detector`: it hard-codes `.cuda()`, writes checkpoints in place and
logs unstructured text. The steps here are the same (datasets, loaders, model, wrapper,
optimizer, EpochBasedRunner, hooks, resume, run), with our hooks for progress, logs, the
non-finite loss guard and atomic checkpoints, and with the teacher checked before anything runs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rotld_cli import __version__, threads
from rotld_cli.engine import checkpoints as ckpt
from rotld_cli.engine import load_engine
from rotld_cli.engine.cpu_threads import CpuShareHook
from rotld_cli.engine.health import HeadHealthHook
from rotld_cli.engine.hooks import AtomicCheckpointHook, EvalHook, NonFiniteLossGuard, ProgressHook, RunLog
from rotld_cli.engine.patch_eval import patch_evaluator
from rotld_cli.engine.teacher import TeacherInfo, check_teacher, load_teacher_weights
from rotld_cli.errors import RotldError, UsageError
from rotld_cli.fileio import atomic_write_text
from rotld_cli.recipes import Recipe
from rotld_cli.training import TrainOptions, teacher_checkpoint, training_recipe

log = logging.getLogger(__name__)
DOWNLOAD_HOST = ("download.pytorch.org", 443)
DOWNLOAD_CHECK_TIMEOUT_S = 5.0
DOWNLOAD_SOCKET_TIMEOUT_S = 60.0


class Interrupted(RotldError):
    """Ctrl-C during training: checkpoints on disk are intact."""

    exit_code = 130


@dataclass
class TrainResult:
    work_dir: Path
    checkpoint: Path
    epochs: int
    iters: int
    seconds: float
    resumed_from: int | None
    final_losses: dict[str, float]
    evaluations: list[dict[str, Any]]
    teacher: dict[str, str] | None = None
    health: list[str] = field(default_factory=list)  # end-of-run warnings: a collapsed classifier, an exploding loss


# --------------------------------------------------------------------------------------------
# Entry points


def train_teacher(recipe: str | Recipe, options: TrainOptions) -> TrainResult:
    """`rotld train-teacher RECIPE`: train a (teacher or baseline) detector from a recipe."""
    return _train(training_recipe(recipe, options, student=False), options, teacher=None)


def distill(recipe: str | Recipe, options: TrainOptions) -> TrainResult:
    """`rotld distill RECIPE --teacher CKPT`: train a student with LD/KD from a checked teacher."""
    recipe = training_recipe(recipe, options, student=True)
    load_engine()
    teacher = check_teacher(recipe, teacher_checkpoint(recipe, options), options.teacher_recipe,
                            trust=options.trust_checkpoint)
    return _train(recipe, options, teacher=teacher)


# --------------------------------------------------------------------------------------------
# The run


def _train(recipe, options: TrainOptions, teacher: TeacherInfo | None) -> TrainResult:
    load_engine()
    from rotld_cli.engine.config import build_config
    from rotld_cli.engine.devices import pick_device
    from rotld_cli.engine.dist import group
    from rotld_cli.recipes import save_resolved, scaled_lr

    ctx = group.info()  # the process group joined by `dist.launch.maybe_launch` (rank 0 of 1 when alone)
    device = ctx.device if ctx.enabled else pick_device(options.device)
    if options.amp and device != "cuda":
        raise UsageError("--amp: mixed precision (fp16) needs a CUDA GPU; drop --amp to train on the CPU")
    work_dir = Path(options.work_dir) if options.work_dir else Path("work_dirs") / recipe.name
    work_dir = work_dir.absolute()
    latest = work_dir / ckpt.LATEST
    resume_state = None
    if options.resume:
        if not latest.is_file():
            raise UsageError(f"--resume: no {ckpt.LATEST} in {work_dir} (nothing to resume; drop --resume to start)")
        resume_state = ckpt.load_checkpoint(latest, what="--resume", trust=options.trust_checkpoint)
        _check_resume(resume_state, recipe, teacher, latest)
    elif latest.exists():
        raise UsageError(
            f"--work-dir {work_dir}: already holds a run ({ckpt.LATEST}); pass --resume to continue it "
            "or choose another --work-dir"
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    if ctx.is_main:
        (work_dir / ckpt.DONE_MARKER).unlink(missing_ok=True)

    # a checked teacher replaces the student's teacher.recipe; its weights are loaded below, strictly
    cfg = build_config(recipe, work_dir=work_dir, teacher_model=None if teacher is None else teacher.model_cfg)
    seed = options.seed if options.seed is not None else cfg.get("seed")
    if seed is None:
        seed = random.randrange(2**31)
    seed = group.shared_seed(seed)
    total_batch = group.total_batch(cfg.data.samples_per_gpu)
    if options.auto_scale_lr:
        cfg.optimizer.lr = scaled_lr(recipe, total_batch)
    if options.amp:
        cfg.fp16 = dict(loss_scale="dynamic")
    if resume_state is None:
        check_pretrained(cfg)
    if ctx.is_main:
        save_resolved(recipe, work_dir)

    _seed_everything(seed, options.deterministic)
    datasets = _build_datasets(cfg, options.validate)
    model = _build_model(cfg, init=resume_state is None)
    if teacher is not None:
        load_teacher_weights(model, teacher)
    model = group.wrap(model, device, find_unused_parameters=cfg.get("find_unused_parameters", False))
    runner = _build_runner(cfg, model, work_dir, datasets, options, recipe, teacher, seed, device)
    resumed_from = None
    if resume_state is not None:
        resumed_from = _resume(runner, resume_state)
    return _run(runner, datasets, work_dir, resumed_from, teacher)


def _check_resume(state: dict[str, Any], recipe, teacher: TeacherInfo | None, latest: Path) -> None:
    meta = state.get("meta") or {}
    if "epoch" not in meta or "rng" not in meta:
        raise RotldError(f"--resume: {latest} was not written by rotld's trainer (no epoch/RNG state in its meta)")
    recorded = meta.get("teacher")
    if teacher is not None and recorded and recorded.get("sha256") != teacher.sha256:
        raise RotldError(
            f"--teacher {teacher.path}: differs from the teacher this run started with "
            f"({recorded.get('path')}, sha256 {str(recorded.get('sha256'))[:12]}...)"
        )
    if meta.get("recipe") not in (None, recipe.to_yaml()):
        log.warning(f"--resume: the recipe differs from the one {latest} was trained with; continuing with the new one")


def check_pretrained(cfg) -> None:
    """Fail fast (never hang) when a `torchvision://` backbone cannot be found offline or downloaded."""
    init_cfg = cfg.model.backbone.get("init_cfg") or {}
    source = init_cfg.get("checkpoint") if isinstance(init_cfg, dict) else None
    if not isinstance(source, str):
        return
    hint = "pass --pretrained PATH (a local ResNet checkpoint) or --no-pretrained (random init)"
    if not source.startswith("torchvision://"):
        if "://" not in source and not Path(source).is_file():
            raise UsageError(f"model.backbone.pretrained: {source}: no such file; {hint}")
        return
    name = source[len("torchvision://"):]
    try:
        from mmcv.runner.checkpoint import get_torchvision_models
    except ImportError:
        raise RotldError(f"model.backbone.pretrained {source}: torchvision is not installed; {hint}") from None
    try:
        url = get_torchvision_models()[name]
    except KeyError:
        raise UsageError(f"model.backbone.pretrained {source}: torchvision has no model {name!r}; {hint}") from None
    except ImportError:
        raise RotldError(f"model.backbone.pretrained {source}: torchvision is not importable; {hint}") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if cached.is_file():
        return
    try:
        with socket.create_connection(DOWNLOAD_HOST, timeout=DOWNLOAD_CHECK_TIMEOUT_S):
            pass
    except OSError as exc:
        raise RotldError(
            f"model.backbone.pretrained {source}: not in the torch hub cache ({cached}) and "
            f"{DOWNLOAD_HOST[0]} is unreachable ({exc.strerror or exc}); {hint}"
        ) from None


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """A download that stalls raises instead of hanging forever (urllib has no default timeout)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


@contextlib.contextmanager
def quiet_init_logs() -> Iterator[None]:
    """mmcv's `init_weights` prints one INFO block per parameter to the first mmcv logger: silence it."""
    from mmcv.utils.logging import logger_initialized

    names = ["mmcv", *logger_initialized]
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def _split_dirs(split_cfg) -> tuple[Path, Path]:
    return Path(split_cfg.ann_file), Path(split_cfg.img_prefix)


def _build_datasets(cfg, validate: bool) -> dict[str, Any]:
    from mmrotate.datasets import build_dataset

    out: dict[str, Any] = {}
    for name in ("train", "val") if validate else ("train",):
        ann_dir, img_dir = _split_dirs(cfg.data[name])
        for folder in (ann_dir, img_dir):
            if not folder.is_dir():
                raise RotldError(
                    f"data.{name}: {folder}: no such directory (prepare the patches with `rotld prepare-dota`)"
                )
        dataset = build_dataset(cfg.data[name], dict(test_mode=name == "val"))
        if len(dataset) == 0:
            raise RotldError(f"data.{name}: {ann_dir}: no patch with objects (every annfile is empty or missing)")
        out[name] = dataset
    return out


def _build_model(cfg, init: bool):
    from mmrotate.models import build_detector

    model = build_detector(cfg.model, train_cfg=cfg.get("train_cfg"), test_cfg=cfg.get("test_cfg"))
    if init:
        with _socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S), quiet_init_logs():
            try:
                model.init_weights()
            except (OSError, RuntimeError) as exc:
                source = (cfg.model.backbone.get("init_cfg") or {}).get("checkpoint")
                detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise RotldError(
                    f"model.backbone.pretrained {source}: cannot load ({detail}); "
                    "pass --pretrained PATH or --no-pretrained"
                ) from None
    return model


def _worker_init_fn(worker_id: int) -> None:
    """Seed numpy/random in each loader worker from torch's per-worker seed.

    torch draws a fresh base seed from the main process's generator every epoch, so workers see
    new augmentations each epoch (mmdet's fixed-seed init repeats them) and a resumed run, whose
    generator state is restored, draws the same ones as the uninterrupted run.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _data_loader(dataset, cfg, shuffle: bool):
    from mmdet.datasets import build_dataloader

    loader = build_dataloader(
        dataset,
        samples_per_gpu=cfg.data.samples_per_gpu if shuffle else 1,
        workers_per_gpu=cfg.data.workers_per_gpu,
        num_gpus=1,
        dist=False,
        shuffle=shuffle,
        seed=None,
        persistent_workers=False,
    )
    loader.worker_init_fn = _worker_init_fn
    return loader


def _runner_class():
    from mmcv.runner import EpochBasedRunner

    class RotldRunner(EpochBasedRunner):
        """EpochBasedRunner without the 2 s sleep per epoch when there are no loader workers."""

        def train(self, data_loader, **kwargs):
            if data_loader.num_workers:
                return super().train(data_loader, **kwargs)
            self.model.train()
            self.mode = "train"
            self.data_loader = data_loader
            self._max_iters = self._max_epochs * len(self.data_loader)
            self.call_hook("before_train_epoch")
            for i, data_batch in enumerate(self.data_loader):
                self.data_batch = data_batch
                self._inner_iter = i
                self.call_hook("before_train_iter")
                self.run_iter(data_batch, train_mode=True, **kwargs)
                self.call_hook("after_train_iter")
                del self.data_batch
                self._iter += 1
            self.call_hook("after_train_epoch")
            self._epoch += 1

    return RotldRunner


def _run_logger(work_dir: Path, write: bool = True) -> logging.Logger:
    """mmcv's runner and hooks log here (work_dir/train.log, rank 0 only), not over the Rich display."""
    logger = logging.getLogger(f"rotld.train.{work_dir}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    if not write:
        logger.addHandler(logging.NullHandler())
        return logger
    handler = logging.FileHandler(work_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger


def _build_runner(cfg, model, work_dir: Path, datasets, options: TrainOptions, recipe, teacher: TeacherInfo | None,
                  seed: int, device: str):
    from mmcv.runner import Fp16OptimizerHook, build_optimizer

    from rotld_cli.engine.dist import group

    ctx = group.info()
    optimizer = build_optimizer(model, cfg.optimizer)
    runner = _runner_class()(
        model, optimizer=optimizer, work_dir=str(work_dir), logger=_run_logger(work_dir, write=ctx.is_main),
        meta={}, max_epochs=cfg.runner.max_epochs,
    )
    optimizer_config: Any = cfg.optimizer_config
    if cfg.get("fp16") is not None:
        optimizer_config = Fp16OptimizerHook(**cfg.optimizer_config, **cfg.fp16, distributed=ctx.enabled)
    runner.register_training_hooks(
        cfg.lr_config, optimizer_config, checkpoint_config=None, log_config=None,
        momentum_config=cfg.get("momentum_config"), timer_config=None,
    )
    run_log = RunLog(work_dir) if ctx.is_main else None
    static_meta = {
        "rotld_version": __version__,
        "engine": _engine_versions(),
        "recipe": recipe.to_yaml(),
        "recipe_name": recipe.name,
        "classes": list(recipe.classes),
        "CLASSES": list(recipe.classes),
        "angle_version": recipe.get("model.angle_version"),
        "seed": int(seed),
        "deterministic": bool(options.deterministic),
        "device": device,
        "amp": bool(options.amp),
        "lr_config": ckpt.to_plain(dict(cfg.lr_config)),
        "teacher": None if teacher is None else {"path": str(teacher.path), "sha256": teacher.sha256},
    }

    def meta_fn(r) -> dict[str, Any]:
        meta = dict(static_meta)
        meta.update(
            epoch=r.epoch + 1,
            iter=r.iter,
            max_epochs=r.max_epochs,
            lr=[float(v) for v in r.current_lr()],
            base_lr=[float(g.get("initial_lr", g["lr"])) for g in r.optimizer.param_groups],
            rng=ckpt.capture_rng_state(),
            saved_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        if "fp16" in r.meta:
            meta["fp16"] = ckpt.to_plain(r.meta["fp16"])
        return meta

    def on_saved(path: Path, epoch: int) -> None:
        run_log.record({"event": "checkpoint", "epoch": epoch, "iter": runner.iter, "path": path.name})

    # every rank checks its losses (mmdet averages the logged values over ranks, so all stop together);
    # only rank 0 evaluates, shows progress and writes logs and checkpoints
    runner.register_hook(NonFiniteLossGuard(work_dir, on_stop=run_log.record if run_log else None),
                         priority="HIGHEST")
    sampler_seed = group.sampler_seed_hook()
    if sampler_seed is not None:
        runner.register_hook(sampler_seed)
    runner.rotld_train_loader = group.build_loader(
        datasets["train"], cfg.data.samples_per_gpu, cfg.data.workers_per_gpu, shuffle=True, seed=seed,
        worker_init_fn=_worker_init_fn,
    )
    if not ctx.is_main:
        return runner
    if "val" in datasets:
        val_loader = _data_loader(datasets["val"], cfg, shuffle=False)
        evaluate = patch_evaluator(datasets["val"], val_loader)
        runner.register_hook(EvalHook(evaluate, run_log, interval=cfg.evaluation.interval, reporter=options.reporter),
                             priority="LOW")
    runner.register_hook(HeadHealthHook(run_log.record, interval=cfg.log_config.interval), priority="LOW")
    if device == "cpu" and not ctx.enabled and threads.governor_wanted():
        runner.register_hook(CpuShareHook(run_log.record), priority="LOW")
    progress = ProgressHook(run_log, interval=cfg.log_config.interval, reporter=options.reporter)
    runner.register_hook(progress, priority="VERY_LOW")
    runner.register_hook(
        AtomicCheckpointHook(work_dir, meta_fn, interval=cfg.checkpoint_config.interval,
                             max_keep_ckpts=cfg.checkpoint_config.get("max_keep_ckpts", -1), on_saved=on_saved),
        priority="LOWEST",
    )
    return runner


def _engine_versions() -> dict[str, str]:
    import mmcv
    import mmdet
    import mmrotate

    return {"torch": str(torch.__version__), "mmcv": str(mmcv.__version__), "mmdet": str(mmdet.__version__),
            "mmrotate": str(mmrotate.__version__)}


def _resume(runner, state: dict[str, Any]) -> int:
    """Weights, optimizer (with its lr/initial_lr), epoch/iter, fp16 scaler and RNG states."""
    meta = state["meta"]
    module = runner.model.module if hasattr(runner.model, "module") else runner.model
    result = module.load_state_dict(state["state_dict"], strict=False)
    if result.missing_keys or result.unexpected_keys:
        keys = list(result.missing_keys) + list(result.unexpected_keys)
        raise RotldError(f"--resume: {ckpt.LATEST} does not fit this recipe's model (first mismatched key {keys[0]!r})")
    if "optimizer" in state:
        runner.optimizer.load_state_dict(state["optimizer"])
        device = next(module.parameters()).device
        for group_state in runner.optimizer.state.values():
            for key, value in group_state.items():
                if isinstance(value, torch.Tensor):
                    group_state[key] = value.to(device)
    runner._epoch = int(meta["epoch"])
    runner._iter = int(meta["iter"])
    if "fp16" in meta:
        runner.meta["fp16"] = meta["fp16"]
    runner.rotld_rng = meta["rng"]
    return runner._epoch


def _run(runner, datasets, work_dir: Path, resumed_from: int | None, teacher: TeacherInfo | None) -> TrainResult:
    started = time.perf_counter()
    from rotld_cli.engine.dist import group

    progress = next((h for h in runner.hooks if isinstance(h, ProgressHook)), None)  # rank 0 only
    evaluator = next((h for h in runner.hooks if isinstance(h, EvalHook)), None)
    health = next((h for h in runner.hooks if isinstance(h, HeadHealthHook)), None)
    if resumed_from is not None:
        ckpt.restore_rng_state(runner.rotld_rng)
        log.info(f"resuming {work_dir.name} after epoch {resumed_from} (iteration {runner.iter})")
    if runner.epoch >= runner.max_epochs:
        log.info(f"{work_dir}: already trained for {runner.max_epochs} epochs")
    try:
        runner.run([runner.rotld_train_loader], [("train", 1)])
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted at epoch {runner.epoch + 1}, iteration {runner.iter}; checkpoints are intact: "
            f"continue with --resume --work-dir {work_dir}"
        ) from None
    finally:
        if progress is not None:
            progress.close()
        for handler in list(runner.logger.handlers):
            runner.logger.removeHandler(handler)
            handler.close()
    final = work_dir / ckpt.epoch_name(runner.epoch)
    losses = {k: float(v) for k, v in (getattr(runner, "outputs", None) or {}).get("log_vars", {}).items()
              if isinstance(v, (int, float)) and math.isfinite(v)}
    result = TrainResult(
        work_dir=work_dir, checkpoint=final, epochs=runner.epoch, iters=runner.iter,
        seconds=time.perf_counter() - started, resumed_from=resumed_from, final_losses=losses,
        evaluations=list(evaluator.results) if evaluator else [],
        teacher=None if teacher is None else {"path": str(teacher.path), "sha256": teacher.sha256},
        health=list(health.verdicts) if health else [],
    )
    if not group.is_main_process():
        return result  # rank 0 writes the checkpoints and the done marker
    if not final.is_file():
        result.checkpoint = final = work_dir / ckpt.LATEST
    marker = {
        "epochs": runner.epoch,
        "iters": runner.iter,
        "checkpoint": final.name,
        "sha256": ckpt.sha256_file(final),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    import json

    atomic_write_text(work_dir / ckpt.DONE_MARKER, json.dumps(marker, indent=2) + "\n")
    return result


def is_complete(work_dir: os.PathLike[str] | str) -> bool:
    """A finished run: the done marker names an existing checkpoint with the recorded hash."""
    import json

    work_dir = Path(work_dir)
    marker = work_dir / ckpt.DONE_MARKER
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
        final = work_dir / info["checkpoint"]
        return final.is_file() and ckpt.sha256_file(final) == info["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
