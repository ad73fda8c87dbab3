"""Our training entry for `rotld train-teacher` and `rotld distill`: plain and linear.

Why not `mmrotate.apis.train_detector`: it hard-codes `.cuda()`, writes checkpoints in place and
logs unstructured text. The steps here are the same (datasets, loaders, model, wrapper,
optimizer, EpochBasedRunner, hooks, resume, run), with our hooks for progress, logs, the
non-finite loss guard and atomic checkpoints, and with the teacher checked before anything runs.
A run resumes exactly, also inside an epoch (`data_order`, `run_state`, `run_checkpoints`), and
stops cleanly on SIGTERM/SIGUSR1/SIGINT (`preemption`).
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
from rotld_cli.engine import faults, load_engine, run_state
from rotld_cli.engine.cpu_threads import CpuShareHook
from rotld_cli.engine.data_order import data_fingerprint, worker_init
from rotld_cli.engine.health import HeadHealthHook
from rotld_cli.engine.hooks import EvalHook, NonFiniteLossGuard, ProgressHook, RunLog
from rotld_cli.engine.patch_eval import patch_evaluator
from rotld_cli.engine.preemption import EvalInterrupted, StopRequests, interruptible_eval, requeue_job
from rotld_cli.engine.run_checkpoints import RunCheckpointHook
from rotld_cli.engine.teacher import TeacherInfo, check_teacher, load_teacher_weights
from rotld_cli.errors import RotldError, UsageError
from rotld_cli.fileio import atomic_write_text
from rotld_cli.recipes import Recipe, checkpoint_every
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
    resumed_checkpoint: str | None = None  # the file a resumed run continued from


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
    resume_path, resume_state = _resume_source(work_dir, options)

    # a checked teacher replaces the student's teacher.recipe; its weights are loaded below, strictly
    cfg = build_config(recipe, work_dir=work_dir, teacher_model=None if teacher is None else teacher.model_cfg)
    seed = options.seed if options.seed is not None else cfg.get("seed")
    if resume_state is not None:
        _check_resume(resume_state, recipe, teacher, resume_path, options, cfg.data.samples_per_gpu)
        seed = resume_state["meta"].get("seed", seed)
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

    _seed_everything(seed, options.deterministic)
    datasets = _build_datasets(cfg, options.validate)
    fingerprint = data_fingerprint(datasets["train"])
    if resume_state is not None:
        run_state.check_data(resume_state["meta"], fingerprint, resume_path)
    # every check passed: only now is the work dir touched
    work_dir.mkdir(parents=True, exist_ok=True)
    faults.reset()
    if ctx.is_main:
        (work_dir / ckpt.DONE_MARKER).unlink(missing_ok=True)
        ckpt.remove_stale_temps(work_dir)
        save_resolved(recipe, work_dir)
    model = _build_model(cfg, init=resume_state is None)
    if teacher is not None:
        load_teacher_weights(model, teacher)
    model = group.wrap(model, device, find_unused_parameters=cfg.get("find_unused_parameters", False))
    runner = _build_runner(cfg, model, work_dir, datasets, options, recipe, teacher, seed, device, fingerprint,
                           previous=resume_path)
    resumed_from = None
    if resume_state is not None:
        resumed_from = _resume(runner, resume_state, resume_path)
    return _run(runner, work_dir, resumed_from, teacher)


def _resume_source(work_dir: Path, options: TrainOptions) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint to continue from: --resume-from's, else (--resume, or --requeue on a run already
    started) the newest complete one in the work dir; (None, None) for a fresh run."""
    trust = options.trust_checkpoint
    if options.resume_from is not None:
        path = Path(options.resume_from)
        try:
            ckpt.verify_complete(path)
        except ckpt.CheckpointError as exc:
            raise RotldError(f"--resume-from: {exc}") from None
        return path, ckpt.load_checkpoint(path, what="--resume-from", trust=trust)
    candidates = ckpt.resume_candidates(work_dir)
    if options.resume or (options.requeue and candidates):
        if not candidates:
            raise UsageError(f"--resume: no {ckpt.LATEST} in {work_dir} (nothing to resume; drop --resume to start)")
        found = ckpt.find_resumable(work_dir, trust=trust)
        if found is None:
            raise RotldError(f"--resume: no complete checkpoint in {work_dir} (each one was skipped, see above)")
        return found
    if candidates:
        held = ckpt.LATEST if (work_dir / ckpt.LATEST).exists() else candidates[0].name
        raise UsageError(
            f"--work-dir {work_dir}: already holds a run ({held}); pass --resume to continue it "
            "or choose another --work-dir"
        )
    return None, None


def _check_resume(state: dict[str, Any], recipe, teacher: TeacherInfo | None, source: Path, options: TrainOptions,
                  samples_per_gpu: int) -> None:
    """Everything checkable before the data loads: the recipe, world size, seed, amp and the teacher."""
    from rotld_cli.engine.dist import group

    meta = state.get("meta") or {}
    recorded = meta.get("teacher")
    if teacher is not None and recorded and recorded.get("sha256") != teacher.sha256:
        raise RotldError(
            f"--teacher {teacher.path}: differs from the teacher this run started with "
            f"({recorded.get('path')}, sha256 {str(recorded.get('sha256'))[:12]}...)"
        )
    note = run_state.check_resume(meta, recipe_yaml=recipe.to_yaml(), seed=options.seed, amp=options.amp,
                                  processes=group.world_size(), samples_per_gpu=samples_per_gpu, source=source)
    if note:
        log.warning(note)


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
    loader.worker_init_fn = worker_init
    return loader


def _runner_class():
    from mmcv.runner import EpochBasedRunner

    class RotldRunner(EpochBasedRunner):
        """EpochBasedRunner that starts a resumed epoch at its saved step and stops cleanly on a signal.

        The sampler (`data_order.StepSampler`) gets the epoch and the first step here, so the steps
        already trained on are not loaded again. mmcv's 2 s pause at each epoch start (a guard for
        loader workers) only when there are workers. A signal during validation (EvalInterrupted)
        saves the state the epoch's iterations left and stops.
        """

        rotld_start_step = 0

        def train(self, data_loader, **kwargs):
            self.model.train()
            self.mode = "train"
            self.data_loader = data_loader
            self._max_iters = self._max_epochs * len(self.data_loader)
            start, self.rotld_start_step = self.rotld_start_step, 0
            if hasattr(data_loader.sampler, "set_start"):
                data_loader.sampler.set_epoch(self.epoch)
                data_loader.sampler.set_start(start)
            self.call_hook("before_train_epoch")
            if data_loader.num_workers:
                time.sleep(2)  # mmcv's: "Prevent possible deadlock during epoch transition"
            for i, data_batch in enumerate(self.data_loader, start=start):
                self.data_batch = data_batch
                self._inner_iter = i
                self.call_hook("before_train_iter")
                self.run_iter(data_batch, train_mode=True, **kwargs)
                self.call_hook("after_train_iter")
                del self.data_batch
                self._iter += 1
            try:
                self.call_hook("after_train_epoch")
            except EvalInterrupted as stop:
                next(h for h in self.hooks if isinstance(h, RunCheckpointHook)).stop_at_epoch_end(self, stop.signum)
                raise
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
                  seed: int, device: str, fingerprint: dict[str, Any], previous: Path | None = None):
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
        "world": {"processes": ctx.world_size, "samples_per_gpu": int(cfg.data.samples_per_gpu)},
        "data": fingerprint,
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

    # every rank checks its losses (mmdet averages the logged values over ranks, so all stop together)
    # and takes part in each checkpoint; only rank 0 evaluates, shows progress and writes logs and checkpoints
    runner.register_hook(NonFiniteLossGuard(work_dir, on_stop=run_log.record if run_log else None),
                         priority="HIGHEST")
    runner.rotld_train_loader = group.build_loader(
        datasets["train"], cfg.data.samples_per_gpu, cfg.data.workers_per_gpu, shuffle=True, seed=seed,
    )
    runner.rotld_stops = stops = StopRequests()
    every_iters, every_seconds = checkpoint_every(recipe.get("runtime.checkpoint_every", None))
    runner.register_hook(
        RunCheckpointHook(work_dir, meta_fn, stops=stops, interval=cfg.checkpoint_config.interval,
                          max_keep_ckpts=cfg.checkpoint_config.get("max_keep_ckpts", -1), every_iters=every_iters,
                          every_seconds=every_seconds, keep_iters=recipe.get("runtime.checkpoint_keep", 2),
                          write=ctx.is_main, record=run_log.record if run_log else None, previous=previous,
                          requeue=requeue_job if options.requeue else None),
        priority="LOWEST",
    )
    if not ctx.is_main:
        return runner
    if "val" in datasets:
        val_loader = _data_loader(datasets["val"], cfg, shuffle=False)
        evaluate = interruptible_eval(patch_evaluator(datasets["val"], val_loader), stops)
        runner.register_hook(EvalHook(evaluate, run_log, interval=cfg.evaluation.interval, reporter=options.reporter),
                             priority="LOW")
    runner.register_hook(HeadHealthHook(run_log.record, interval=cfg.log_config.interval), priority="LOW")
    if device == "cpu" and not ctx.enabled and threads.governor_wanted():
        runner.register_hook(CpuShareHook(run_log.record), priority="LOW")
    progress = ProgressHook(run_log, interval=cfg.log_config.interval, reporter=options.reporter)
    runner.register_hook(progress, priority="VERY_LOW")
    return runner


def _engine_versions() -> dict[str, str]:
    import mmcv
    import mmdet
    import mmrotate

    return {"torch": str(torch.__version__), "mmcv": str(mmcv.__version__), "mmdet": str(mmdet.__version__),
            "mmrotate": str(mmrotate.__version__)}


def _resume(runner, state: dict[str, Any], source: Path) -> int:
    """Weights, optimizer (with its lr/initial_lr), epoch/iter and step in the epoch, fp16 scaler, hooks' states
    and this rank's RNG states."""
    from rotld_cli.engine.dist import group

    meta = state["meta"]
    module = runner.model.module if hasattr(runner.model, "module") else runner.model
    result = module.load_state_dict(state["state_dict"], strict=False)
    if result.missing_keys or result.unexpected_keys:
        keys = list(result.missing_keys) + list(result.unexpected_keys)
        raise RotldError(f"--resume: {source.name} does not fit this recipe's model (first mismatched key {keys[0]!r})")
    if "optimizer" in state:
        runner.optimizer.load_state_dict(state["optimizer"])
        device = next(module.parameters()).device
        for group_state in runner.optimizer.state.values():
            for key, value in group_state.items():
                if isinstance(value, torch.Tensor):
                    group_state[key] = value.to(device)
    runner._epoch = int(meta["epoch"])
    runner._iter = int(meta["iter"])
    runner.rotld_start_step = int(meta.get("inner_iter", 0))
    steps = len(runner.rotld_train_loader)
    if runner.rotld_start_step and int(meta.get("steps_per_epoch", steps)) != steps:
        raise RotldError(f"--resume: {source.name} stopped at step {runner.rotld_start_step} of an epoch of "
                         f"{meta['steps_per_epoch']} steps; this run's epochs have {steps}")
    if "fp16" in meta:
        runner.meta["fp16"] = meta["fp16"]
    run_state.restore_hook_states(runner, meta.get("hooks") or {})
    ctx = group.info()
    runner.rotld_rng = run_state.rng_for_rank(meta, ctx.rank, ctx.world_size)
    runner.rotld_resumed = source
    return runner._epoch


def _run(runner, work_dir: Path, resumed_from: int | None, teacher: TeacherInfo | None) -> TrainResult:
    started = time.perf_counter()
    from rotld_cli.engine.dist import group

    progress = next((h for h in runner.hooks if isinstance(h, ProgressHook)), None)  # rank 0 only
    evaluator = next((h for h in runner.hooks if isinstance(h, EvalHook)), None)
    health = next((h for h in runner.hooks if isinstance(h, HeadHealthHook)), None)
    resumed = getattr(runner, "rotld_resumed", None)
    if resumed_from is not None:
        ckpt.restore_rng_state(runner.rotld_rng)
        step, steps = runner.rotld_start_step, len(runner.rotld_train_loader)
        where = (f"in epoch {resumed_from + 1} after step {step}/{steps}" if step else f"after epoch {resumed_from}")
        log.info(f"resuming {work_dir.name} {where} (iteration {runner.iter}) from {resumed.name}")
    if runner.epoch >= runner.max_epochs:
        log.info(f"{work_dir}: already trained for {runner.max_epochs} epochs")
    stops = runner.rotld_stops
    stops.install()
    try:
        runner.run([runner.rotld_train_loader], [("train", 1)])
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted at epoch {runner.epoch + 1}, iteration {runner.iter}; checkpoints are intact: "
            f"continue with --resume --work-dir {work_dir}"
        ) from None
    finally:
        stops.restore()
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
        resumed_checkpoint=None if resumed is None else str(resumed),
    )
    if not group.is_main_process():
        return result  # rank 0 writes the checkpoints and the done marker
    ckpt.prune_iters(work_dir, 0)  # they resume an unfinished run; the epoch checkpoints stay
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
