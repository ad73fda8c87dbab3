"""Peak memory of the LD/IM region computation: rotld's chunked form vs the seed's n×k algorithm.

    .venv/bin/python -m bench.ld_region_memory            # 1,000 gts on a 1024² image (196,416 anchors)
    .venv/bin/python -m bench.ld_region_memory --quick    # 100 gts on a 512² image, a few seconds

Both implementations run in this process on the same anchors and gts. Peak memory is the rise of
the resident set (VmHWM after the call minus VmRSS before it, with the high-water mark reset via
/proc/self/clear_refs), so it counts torch's CPU allocations whatever allocator serves them. The
outputs are compared too: the benchmark fails if they differ. A quarter of the gts sit exactly
between anchor centres, so topk's tie-breaking is exercised. CPU time (all threads) is printed
beside wall time because it is less disturbed by other work on a shared machine.
"""

from __future__ import annotations

import argparse
import gc
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

STRIDES = (8, 16, 32, 64, 128)
RATIOS = (1.0, 0.5, 2.0)
OCTAVE_BASE_SCALE = 4
SCALES_PER_OCTAVE = 3


def rotated_anchors(image_size: int) -> tuple[torch.Tensor, list[int]]:
    """The seed's RotatedAnchorGenerator layout: location-major, 9 base anchors (ratio, then scale)."""
    levels = []
    for stride in STRIDES:
        scales = torch.tensor([OCTAVE_BASE_SCALE * 2 ** (i / SCALES_PER_OCTAVE) for i in range(SCALES_PER_OCTAVE)])
        h_ratios = torch.tensor(RATIOS).sqrt()
        w_ratios = 1 / h_ratios
        ws = (stride * w_ratios[:, None] * scales[None, :]).reshape(-1)
        hs = (stride * h_ratios[:, None] * scales[None, :]).reshape(-1)
        cells = math.ceil(image_size / stride)
        shifts = torch.arange(cells, dtype=torch.float32) * stride
        yy, xx = torch.meshgrid(shifts, shifts, indexing="ij")
        centres = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
        a = len(ws)
        level = torch.zeros(centres.size(0), a, 5)
        level[..., :2] = centres[:, None, :]
        level[..., 2] = ws
        level[..., 3] = hs
        levels.append(level.reshape(-1, 5))
    return torch.cat(levels), [lvl.size(0) for lvl in levels]


def random_gts(image_size: int, count: int, seed: int) -> torch.Tensor:
    """DOTA-like OBBs ('oc': θ ∈ (0, π/2]); every 4th centre is on a midpoint of the stride-8 grid."""
    gen = torch.Generator().manual_seed(seed)
    gts = torch.empty(count, 5)
    gts[:, :2] = torch.rand(count, 2, generator=gen) * image_size
    gts[::4, :2] = (gts[::4, :2] / 8).floor() * 8 + 4
    gts[:, 2:4] = 8 + torch.rand(count, 2, generator=gen) * 120
    gts[:, 4] = torch.rand(count, generator=gen).clamp(min=1e-3) * (math.pi / 2)
    return gts


def seed_regions(anchors: torch.Tensor, num_level_anchors: Sequence[int], gt_bboxes: torch.Tensor):
    """The seed's get_ld_region + get_im_region, step for step (n×k distances, full sort, int64 indices)."""
    from mmdet.core.bbox.iou_calculators import bbox_overlaps

    inf = 100000000
    num_gt, num_bboxes = gt_bboxes.size(0), anchors.size(0)
    a = anchors[:, :4]
    bboxes = torch.stack(
        [a[:, 0] - a[:, 2] / 2, a[:, 1] - a[:, 3] / 2, a[:, 0] + a[:, 2] / 2, a[:, 1] + a[:, 3] / 2], 1
    )
    g = gt_bboxes
    gts = torch.stack([g[:, 0] - g[:, 2] / 2, g[:, 1] - g[:, 3] / 2, g[:, 0] + g[:, 2] / 2, g[:, 1] + g[:, 3] / 2], 1)
    overlaps = bbox_overlaps(bboxes, gts)
    gt_points = torch.stack(((gts[:, 0] + gts[:, 2]) / 2.0, (gts[:, 1] + gts[:, 3]) / 2.0), dim=1)
    points = torch.stack(((bboxes[:, 0] + bboxes[:, 2]) / 2.0, (bboxes[:, 1] + bboxes[:, 3]) / 2.0), dim=1)
    distances = (points[:, None, :] - gt_points[None, :, :]).pow(2).sum(-1).sqrt()
    candidate_idxs, candidate_idxs_t, start = [], [], 0
    for per_level in num_level_anchors:
        end = start + per_level
        distances_per_level = distances[start:end, :]
        _, all_idxs = distances_per_level.topk(per_level, dim=0, largest=False)
        _, top_idxs = distances_per_level.topk(min(9, per_level), dim=0, largest=False)
        candidate_idxs.append(all_idxs + start)
        candidate_idxs_t.append(top_idxs + start)
        start = end
    candidate_idxs = torch.cat(candidate_idxs, dim=0)
    candidate_idxs_t = torch.cat(candidate_idxs_t, dim=0)
    candidate_overlaps_t = overlaps[candidate_idxs_t, torch.arange(num_gt)]
    t_iou = overlaps[candidate_idxs, torch.arange(num_gt)]
    thr = candidate_overlaps_t.mean(0) + candidate_overlaps_t.std(0)
    is_pos = t_iou >= 0.25 * thr[None, :]
    for gt_idx in range(num_gt):
        candidate_idxs[:, gt_idx] += gt_idx * num_bboxes
    overlaps_inf = torch.full_like(overlaps, -inf).t().contiguous().view(-1)
    index = candidate_idxs.view(-1)[is_pos.view(-1)]
    overlaps_inf[index] = overlaps.t().contiguous().view(-1)[index]
    max_overlaps, _ = overlaps_inf.view(num_gt, -1).t().max(dim=1)
    ld = torch.where(max_overlaps != -inf, max_overlaps, torch.zeros_like(max_overlaps))
    del overlaps, distances, candidate_idxs, t_iou, is_pos, overlaps_inf, index
    iou = bbox_overlaps(bboxes, gts, mode="iou")
    im = anchors.new_zeros(num_bboxes)
    im[torch.nonzero(iou > 0.5 * iou.max(0)[0])[:, 0]] = 1
    return ld, im


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def measure(fn: Callable[[], tuple[torch.Tensor, torch.Tensor]]):
    """(outputs, peak MiB above the resident set before the call, wall seconds, CPU seconds)."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return out, (_status_kib("VmHWM") - before) / 1024, wall, cpu


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 gts on a 512² image")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--gts", type=int, default=1000, help="number of ground-truth boxes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    size, count = (512, 100) if args.quick else (args.size, args.gts)
    if not Path("/proc/self/clear_refs").exists():
        print("this benchmark reads peak RSS from /proc (Linux only)", file=sys.stderr)
        return 2

    from rotld_cli.engine import load_engine

    load_engine()
    from rotld_cli.engine.models.ld_region import distillation_regions

    anchors, level_counts = rotated_anchors(size)
    gts = random_gts(size, count, args.seed)
    print(f"{size}x{size} image, {anchors.size(0):,} anchors, {count} gts, {torch.get_num_threads()} threads")
    with torch.no_grad():
        (ld, im), ours_mib, ours_wall, ours_cpu = measure(lambda: distillation_regions(anchors, level_counts, gts))
        (ld_ref, im_ref), seed_mib, seed_wall, seed_cpu = measure(lambda: seed_regions(anchors, level_counts, gts))
    differing = int(((ld != ld_ref) | (im != im_ref)).sum())
    print(f"{'implementation':<16}{'peak MiB':>10}{'wall s':>10}{'CPU s':>10}")
    print(f"{'seed (n×k sort)':<16}{seed_mib:>10.1f}{seed_wall:>10.2f}{seed_cpu:>10.2f}")
    print(f"{'rotld (chunked)':<16}{ours_mib:>10.1f}{ours_wall:>10.2f}{ours_cpu:>10.2f}")
    print(
        f"memory ratio seed/rotld: {seed_mib / max(ours_mib, 0.1):.1f}x   "
        f"CPU-time ratio seed/rotld: {seed_cpu / max(ours_cpu, 1e-6):.2f}x"
    )
    print(f"region anchors: ld>0 {int((ld > 0).sum()):,}, im {int(im.sum()):,}; outputs identical: {differing == 0}")
    if differing:
        print(f"{differing} anchors differ from the seed algorithm", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
