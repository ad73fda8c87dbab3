"""Benchmark `rotld prepare-dota` against the bare I/O floor measured in the same run.

The floor decodes every source image once and writes the same patches with the same encoder
and the same number of processes, with no labels, geometry, atomic renames or markers. The
ratio prepare/floor is what the split adds on top of unavoidable decode + encode work. Wall
time is the target; CPU time (this process + its workers) is printed too because it stays
stable on a machine shared with other jobs, where wall times of single runs scatter.

    .venv/bin/python -m bench.split            # 6 images of ~3300x3500 (P0706 tiled 3x3), 2 workers
    .venv/bin/python -m bench.split --quick    # 2 small images, a few seconds
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from rotld_cli.dota.formats import format_annfile_line, read_label_file
from rotld_cli.dota.prepare import PrepareOptions, encode_flags, prepare_dota
from rotld_cli.dota.split import SplitParams, crop_patch, patch_name, sliding_windows

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "dota-samples"


def make_sources(root: Path, n_images: int, tiles: int) -> None:
    """`n_images` copies of P0706 tiled tiles x tiles (flipped per copy), with shifted labels."""
    image = cv2.imread(str(SAMPLES / "images" / "P0706.png"))
    objects = read_label_file(SAMPLES / "labelTxt" / "P0706.txt").objects
    height, width = image.shape[:2]
    (root / "images").mkdir(parents=True)
    (root / "labelTxt").mkdir()
    big = np.tile(image, (tiles, tiles, 1))
    lines = [
        format_annfile_line(obj.poly + np.array([tx * width, ty * height] * 4), obj.name, obj.difficulty)
        for ty in range(tiles)
        for tx in range(tiles)
        for obj in objects
    ]
    for i in range(n_images):
        pixels = big if i % 2 == 0 else big[::-1].copy()  # different content, same labels: fine for timing
        cv2.imwrite(str(root / "images" / f"B{i:04d}.png"), pixels)
        (root / "labelTxt" / f"B{i:04d}.txt").write_text("\n".join(lines) + "\n")


def _floor_one(job: tuple[Path, Path, SplitParams, list[int]]) -> int:
    src, out, params, flags = job
    image = cv2.imread(str(src))
    height, width = image.shape[:2]
    windows = sliding_windows(width, height, params.window_specs(), params.img_rate_thr)
    for window in windows:
        pixels = crop_patch(image, window, params.padding_value)
        cv2.imwrite(str(out / f"{patch_name(src.stem, window)}.png"), pixels, flags)
    return len(windows)


def cpu_seconds() -> float:
    """User + system time of this process and of its finished (joined) worker processes."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def io_floor(src: Path, out: Path, params: SplitParams, flags: list[int], workers: int) -> tuple[float, float, int]:
    out.mkdir(parents=True)
    jobs = [(path, out, params, flags) for path in sorted((src / "images").iterdir())]
    start, cpu = time.perf_counter(), cpu_seconds()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        patches = sum(pool.imap_unordered(_floor_one, jobs))
    return time.perf_counter() - start, cpu_seconds() - cpu, patches


def run_prepare(src: Path, out: Path, options: PrepareOptions) -> tuple[float, float, int]:
    start, cpu = time.perf_counter(), cpu_seconds()
    summary = prepare_dota(src, out, options)
    return time.perf_counter() - start, cpu_seconds() - cpu, summary.total.patches


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 untiled images, 512/100 windows")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--tiles", type=int, default=3, help="P0706 tiled N x N per image (3: ~3300x3500)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2, help="alternate floor/prepare runs; the best of each")
    parser.add_argument("--png-compression", type=int, default=None, help="0-9; default: OpenCV's fast default")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.tiles, args.repeat = 2, 1, 1
    if not (SAMPLES / "images" / "P0706.png").exists():
        raise SystemExit(f"needs the DOTA samples beside the checkout ({SAMPLES})")
    params = SplitParams(sizes=(512,), gaps=(100,)) if args.quick else SplitParams()
    options = PrepareOptions(split=params, png_compression=args.png_compression, workers=args.workers)
    flags = encode_flags(".png", args.png_compression)

    with tempfile.TemporaryDirectory(prefix="rotld-bench-split-") as tmp:
        root = Path(tmp)
        make_sources(root / "src", args.images, args.tiles)
        floors, prepares, floor_cpu, prepare_cpu = [], [], [], []
        for r in range(args.repeat):
            floor_s, floor_c, floor_patches = io_floor(root / "src", root / f"floor{r}", params, flags, args.workers)
            prep_s, prep_c, patches = run_prepare(root / "src", root / f"out{r}", options)
            assert patches == floor_patches, (patches, floor_patches)
            floors.append(floor_s)
            prepares.append(prep_s)
            floor_cpu.append(floor_c)
            prepare_cpu.append(prep_c)
            shutil.rmtree(root / f"floor{r}")
            written = sum(p.stat().st_size for p in (root / f"out{r}" / "images").iterdir())
            shutil.rmtree(root / f"out{r}")

    ratio = min(prepares) / min(floors)
    level = "OpenCV default" if args.png_compression is None else args.png_compression
    runs = {
        "I/O floor (decode once + encode patches)": floors,
        "rotld prepare-dota": prepares,
        "CPU time, floor": floor_cpu,
        "CPU time, prepare-dota": prepare_cpu,
    }
    print(
        f"images: {args.images} of {1111 * args.tiles}x{1182 * args.tiles} (P0706 tiled), patches: {patches}, "
        f"workers: {args.workers}, png compression: {level}, patch bytes: {written / 1e6:.0f} MB"
    )
    for name, times in runs.items():
        print(f"{name:<42} {min(times):6.2f} s   runs: {', '.join(f'{t:.2f}' for t in times)}")
    print(f"ratio prepare / floor, wall: {ratio:.2f}x (target <= 1.30x)")
    print(f"ratio prepare / floor, CPU:  {min(prepare_cpu) / min(floor_cpu):.2f}x")
    return ratio


if __name__ == "__main__":
    main()
