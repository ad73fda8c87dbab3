"""Benchmark the training data loader (images/s) against decoding the same patches, in one run.

The loader is what `rotld train-teacher` builds for a recipe (DOTADataset, the train pipeline:
load, rotated resize, three-direction flips, normalise, pad, collate; `data.workers_per_gpu`
processes, `data.samples_per_gpu` images a batch). The baseline is the floor under it: the same
PNG files decoded with OpenCV in one process. A GPU step at 1024 px, batch 2, takes tens of
milliseconds, so a loader much slower than the decode floor times the workers starves the GPU.

    .venv/bin/python -m bench.dataloader            # dota1 teacher recipe, 1024 px patches of the DOTA samples
    .venv/bin/python -m bench.dataloader --quick    # synthetic recipe, 128 px
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rotld_cli.quiet import silence_third_party

silence_third_party()  # as the CLI: the engine stack's import-time notices stay off the terminal

import cv2  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "dota-samples"


def make_split(root: Path, size: int) -> Path:
    """prepare-dota patches of the DOTA samples (synthetic scenes when absent), with their annfiles."""
    from rotld_cli.dota.prepare import PrepareOptions, prepare_dota
    from rotld_cli.dota.split import SplitParams

    source = SAMPLES
    if not (SAMPLES / "images").is_dir():
        from rotld_cli.demo.scenes import generate_dataset

        generate_dataset(root / "scenes", num_train=8, num_val=0, image_size=size, seed=0)
        source = root / "scenes" / "train"
    prepare_dota(source, root / "split" / "train", PrepareOptions(split=SplitParams(sizes=(size,), gaps=(size // 5,))))
    return root / "split"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic recipe, 128 px")
    parser.add_argument("--batches", type=int, default=None, help="batches timed (default 40, quick 10)")
    parser.add_argument("--workers", type=int, default=None, help="loader processes (default: the recipe's)")
    args = parser.parse_args(argv)
    recipe_ref = "synthetic/teacher-r34-gwd" if args.quick else "dota1/teacher-r34-gwd-2x"
    batches = args.batches or (10 if args.quick else 40)

    from rotld_cli.engine import load_engine

    load_engine()
    from mmdet.datasets import build_dataloader
    from mmrotate.datasets import build_dataset

    from rotld_cli.engine.config import build_config
    from rotld_cli.recipes import load_recipe

    with tempfile.TemporaryDirectory(prefix="rotld-bench-loader-") as tmp:
        root = Path(tmp)
        size = load_recipe(recipe_ref).get("data.img_scale")
        split = make_split(root, size)
        overrides = [f"data.root={split}", "data.val=train", "data.test=train"]
        if args.workers is not None:
            overrides.append(f"data.workers_per_gpu={args.workers}")
        recipe = load_recipe(recipe_ref, overrides)
        cfg = build_config(recipe)
        dataset = build_dataset(cfg.data.train)
        per_batch, workers = cfg.data.samples_per_gpu, cfg.data.workers_per_gpu
        loader = build_dataloader(dataset, per_batch, workers, num_gpus=1, dist=False, shuffle=True, seed=0,
                                  persistent_workers=False)
        files = [str(split / "train" / "images" / info["filename"]) for info in dataset.data_infos]

        def loader_rate() -> float:
            done, started = 0, None
            while done < batches:
                for _batch in loader:
                    if started is None:  # the first batch pays for starting the workers
                        started = time.perf_counter()
                        continue
                    done += 1
                    if done >= batches:
                        break
            return batches * per_batch / (time.perf_counter() - started)

        def decode_rate() -> float:
            count = batches * per_batch
            started = time.perf_counter()
            for k in range(count):
                assert cv2.imread(files[k % len(files)]) is not None
            return count / (time.perf_counter() - started)

        floor, pipeline = decode_rate(), loader_rate()
    print(f"{len(files)} training patches of {size} px ({recipe_ref}), batch {per_batch}, {workers} workers")
    print(f"decode floor (cv2.imread, 1 process)   {floor:8.1f} images/s")
    print(f"training loader ({workers} workers)           {pipeline:8.1f} images/s")
    print(f"loader / decode floor = {pipeline / floor:.2f}x")


if __name__ == "__main__":
    main()
