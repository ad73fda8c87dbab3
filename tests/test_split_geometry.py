"""Split geometry on hand-computed cases: windows, iof, assignment, names, crops."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import Polygon

from rotld_cli.dota.split import (
    SplitParams,
    annfile_lines,
    axis_starts,
    coords_text,
    crop_patch,
    iof_matrix,
    patch_name,
    plan_patches,
    quad_polygons,
    sliding_windows,
)


def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def iofs_of(polys: list[list[float]], windows: list[list[int]]) -> np.ndarray:
    polys_arr = np.asarray(polys, dtype=np.float32)
    geoms, _ = quad_polygons(polys_arr)
    return iof_matrix(geoms, polys_arr, np.asarray(windows, dtype=np.int64))


@pytest.mark.parametrize(
    ("length", "size", "step", "expected"),
    [
        (712, 1024, 824, [0]),  # shorter than a window: one start, the window reaches past the image
        (1024, 1024, 824, [0]),  # exactly one window
        (1025, 1024, 824, [0, 1]),  # ceil(1/824 + 1) = 2 starts, the last moved to 1025 - 1024
        (1848, 1024, 824, [0, 824]),  # the last window already ends on the border
        (2000, 1024, 824, [0, 824, 976]),  # ceil(976/824 + 1) = 3; 1648 + 1024 > 2000 -> 976
        (1111, 512, 412, [0, 412, 599]),  # P0706 width at 512/100
        (1182, 512, 412, [0, 412, 670]),  # P0706 height at 512/100
    ],
)
def test_axis_starts(length: int, size: int, step: int, expected: list[int]) -> None:
    assert axis_starts(length, size, step) == expected


def test_image_smaller_than_window_keeps_one_window_by_the_fallback() -> None:
    # 712x557 in 1024: in-image ratio 0.378 < 0.6, so the best (only) window is kept anyway.
    assert sliding_windows(712, 557, [(1024, 200)], 0.6).tolist() == [[0, 0, 1024, 1024]]


def test_exactly_one_window() -> None:
    assert sliding_windows(1024, 1024, [(1024, 200)], 0.6).tolist() == [[0, 0, 1024, 1024]]


def test_fallback_keeps_every_window_within_001_of_the_best() -> None:
    # 1030x500: x starts [0, 6], both windows have ratio 500/1024 = 0.488 < 0.6.
    assert sliding_windows(1030, 500, [(1024, 200)], 0.6).tolist() == [[0, 0, 1024, 1024], [6, 0, 1030, 1024]]


def test_threshold_drops_windows_mostly_outside_the_image() -> None:
    # 1100x800 with 1024/200 and 512/100; thr 0.8: the 1024 windows (ratio 800/1024 = 0.78) go,
    # the 512 windows (all inside) stay: x [0, 412, 588], y [0, 288], x outer.
    windows = sliding_windows(1100, 800, [(1024, 200), (512, 100)], 0.8)
    starts = [(x, y) for x in (0, 412, 588) for y in (0, 288)]
    assert windows.tolist() == [[x, y, x + 512, y + 512] for x, y in starts]
    # With thr 0.6 the two 1024 windows (x 0 and 76) come first.
    assert sliding_windows(1100, 800, [(1024, 200), (512, 100)], 0.6)[:2].tolist() == [
        [0, 0, 1024, 1024],
        [76, 0, 1100, 1024],
    ]


def test_several_rates_scale_the_window_not_the_image() -> None:
    params = SplitParams(sizes=(1024,), gaps=(500,), rates=(0.5, 1.0, 1.5))
    assert params.window_specs() == [(2048, 1000), (1024, 500), (682, 333)]
    windows = sliding_windows(1500, 1200, params.window_specs(), 0.6)
    # 2048: one window, ratio 1500*1200/2048^2 = 0.43 -> dropped.
    # 1024/500 (step 524): x [0, 476], y [0, 176].
    # 682/333 (step 349): x [0, 349, 698, 818], y [0, 349, 518].
    expected = [[x, y, x + 1024, y + 1024] for x in (0, 476) for y in (0, 176)]
    expected += [[x, y, x + 682, y + 682] for x in (0, 349, 698, 818) for y in (0, 349, 518)]
    assert windows.tolist() == expected


def test_iof_on_hand_computed_shapes() -> None:
    square = box(0, 0, 10, 10)
    diamond = [5, 0, 10, 5, 5, 10, 0, 5]  # area 50
    windows = [[5, 0, 15, 20], [0, 0, 100, 100], [20, 20, 30, 30], [0, 0, 5, 5]]
    iofs = iofs_of([square, diamond], windows)
    # square: half inside, fully inside, outside, a quarter inside.
    np.testing.assert_array_equal(iofs[0], [0.5, 1.0, 0.0, 0.25])
    # diamond: half; whole; none; the triangle (5,0),(0,5),(5,5) of area 12.5 -> 0.25.
    np.testing.assert_array_equal(iofs[1], [0.5, 1.0, 0.0, 0.25])


def test_iof_uses_the_unclipped_polygon_reaching_past_the_image() -> None:
    # An object straddling the left border: 40% of it at x < 0 lies outside window [0, 0, 100, 100].
    iofs = iofs_of([box(-4, 0, 6, 10)], [[0, 0, 100, 100]])
    assert iofs[0, 0] == pytest.approx(0.6, abs=1e-12)


def test_invalid_polygons_are_repaired_not_fatal() -> None:
    bow_tie = [0, 0, 10, 10, 10, 0, 0, 10]  # two triangles of area 25 meeting at (5, 5)
    point = [3, 3, 3, 3, 3, 3, 3, 3]
    _, repaired = quad_polygons(np.asarray([bow_tie, point, box(0, 0, 1, 1)], dtype=np.float32))
    assert repaired.tolist() == [True, True, False]
    iofs = iofs_of([bow_tie, point], [[0, 0, 5, 10], [0, 0, 100, 100]])
    np.testing.assert_array_equal(iofs[0], [0.5, 1.0])  # the left triangle is half of the area
    np.testing.assert_array_equal(iofs[1], [0.0, 0.0])  # zero area: clamped denominator, never kept


def test_area_rounded_to_float32_like_img_split() -> None:
    # A 33.3 x 11.1 box fully inside: float32(area) > area, so img_split's iof is just below 1 and
    # the object is marked truncated (difficulty 2). We reproduce that quirk bit for bit.
    poly = np.array(box(1, 1, 34.3, 12.1), dtype=np.float32)
    exact_area = float(poly[2] - poly[0]) * float(poly[5] - poly[1])
    iof = iofs_of([poly.tolist()], [[0, 0, 100, 100]])[0, 0]
    assert iof == pytest.approx(exact_area / float(np.float32(exact_area)), rel=1e-15)
    assert iof < 1
    patch = plan_patches("X", 100, 100, poly[None], SplitParams(sizes=(100,), gaps=(10,)))[0]
    assert patch.truncated.tolist() == [True]


def test_patch_name() -> None:
    assert patch_name("P0004", [0, 824, 1024, 1848]) == "P0004__1024__0___824"
    assert patch_name("P0004", np.array([87, 0, 1111, 1024])) == "P0004__1024__87___0"


def test_plan_assigns_by_iof_threshold_and_shifts_in_float32() -> None:
    # Image 200x100, windows 100/0 -> [0,0,100,100] and [100,0,200,100].
    objects = [
        box(10.5, 10, 20.5, 20),  # in window 0 only
        box(90, 40, 120, 50),  # 1/3 in window 0, 2/3 in window 1 -> kept nowhere at 0.7
        box(95, 60, 125, 70),  # 1/6 | 5/6 -> window 1, truncated
        box(150, 10, 160, 20),  # window 1, whole
    ]
    params = SplitParams(sizes=(100,), gaps=(0,), iof_thr=0.7)
    patches = plan_patches("img", 200, 100, np.asarray(objects), params)
    assert [p.name for p in patches] == ["img__100__0___0", "img__100__100___0"]
    assert patches[0].object_indices.tolist() == [0]
    assert patches[0].truncated.tolist() == [False]
    assert patches[1].object_indices.tolist() == [2, 3]
    assert patches[1].truncated.tolist() == [True, False]
    assert patches[1].polys.dtype == np.float32
    assert patches[1].polys[0].tolist() == [-5, 60, 25, 60, 25, 70, -5, 70]  # not clipped
    assert [str(v) for v in patches[0].polys[0][:2]] == ["10.5", "10.0"]


def test_iof_threshold_zero_keeps_every_object_in_every_window() -> None:
    # img_split keeps iof >= thr, so thr 0 keeps even objects far outside (iof 0, difficulty 2).
    patches = plan_patches(
        "img", 200, 100, np.asarray([box(10, 10, 20, 20)]), SplitParams(sizes=(100,), gaps=(0,), iof_thr=0)
    )
    assert [p.object_indices.tolist() for p in patches] == [[0], [0]]
    assert [p.truncated.tolist() for p in patches] == [[False], [True]]


def test_crop_pads_top_left_with_the_padding_value() -> None:
    image = np.arange(3 * 4 * 3, dtype=np.uint8).reshape(3, 4, 3)
    patch = crop_patch(image, [0, 0, 6, 5], (104, 116, 124))
    assert patch.shape == (5, 6, 3)
    np.testing.assert_array_equal(patch[:3, :4], image)
    assert (patch[3:] == [104, 116, 124]).all() and (patch[:, 4:] == [104, 116, 124]).all()
    assert (crop_patch(image, [0, 0, 6, 5], (7,))[3:] == 7).all()
    np.testing.assert_array_equal(crop_patch(image, [0, 0, 6, 5], None), image)  # --no-padding
    np.testing.assert_array_equal(crop_patch(image, [1, 1, 3, 3], (0, 0, 0)), image[1:3, 1:3])


@pytest.mark.parametrize(
    "values",
    [
        [[0, 1, -5, 1023, 16777215, -16777215, 398, 2]],  # integral: the fast path
        [[-0.0, 1, 2, 3, 4, 5, 6, 7]],  # -0.0 prints as '-0.0' in numpy
        [[0.5, 1.25, 398.1, 1e-3, 33.3, 2.5e7, 16777216, 1e17]],  # fractions, >= 2**24, exponent form
    ],
)
def test_coords_text_is_str_of_float32(values: list[list[float]]) -> None:
    polys = np.asarray(values, dtype=np.float32)
    assert coords_text(polys) == [" ".join(str(np.float32(v)) for v in row) for row in polys]


def test_annfile_lines_mark_truncated_objects_difficulty_2() -> None:
    patch = plan_patches(
        "img", 100, 100, np.asarray([box(1, 1, 5, 5), box(92, 0, 102, 10)]), SplitParams(sizes=(100,), gaps=(0,))
    )[0]
    assert annfile_lines(patch, ["ship", "plane"], [1, 0]) == [
        "1.0 1.0 5.0 1.0 5.0 5.0 1.0 5.0 ship 1",
        "92.0 0.0 102.0 0.0 102.0 10.0 92.0 10.0 plane 2",
    ]


def test_iof_matrix_equals_the_per_pair_formula_bit_for_bit() -> None:
    # img_split: shapely intersection pair by pair / float32(area). Random rotated boxes with
    # 0-3 decimals (as label files have), inside, across and outside four windows.
    rng = np.random.default_rng(7)
    n = 2000
    centre, size, angle = rng.uniform(-50, 650, (n, 2)), rng.uniform(1, 120, (n, 2)), rng.uniform(0, np.pi, n)
    corners = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    local = corners[None] * size[:, None, :]
    pts = centre[:, None, :] + np.stack(
        [local[..., 0] * cos - local[..., 1] * sin, local[..., 0] * sin + local[..., 1] * cos], -1
    )
    scale = 10.0 ** rng.integers(0, 4, n)[:, None, None]
    polys = (np.round(pts * scale) / scale).astype(np.float32).reshape(n, 8)
    windows = np.array([[0, 0, 300, 300], [200, 0, 500, 300], [0, 200, 300, 500], [200, 200, 700, 700]])
    iofs = iofs_of(polys.tolist(), windows.tolist())
    expected = np.zeros_like(iofs)
    for i, poly in enumerate(polys):
        shape = Polygon(poly.astype(np.float64).reshape(4, 2))
        for j, (x0, y0, x1, y1) in enumerate(windows):
            inter = shape.intersection(Polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])).area
            # img_split divides a float64 array by a float32 one: float64 under numpy 1 and 2 alike
            expected[i, j] = np.float64(inter) / max(np.float32(shape.area), np.float32(1e-6))
    inside = np.abs(iofs - 1) < 1e-6  # exactly 1 only when float32(area) == area
    assert inside.sum() > n // 2 and ((iofs > 0) & ~inside).sum() > 100 and (iofs[inside] != 1).any()
    np.testing.assert_array_equal(iofs, expected)
