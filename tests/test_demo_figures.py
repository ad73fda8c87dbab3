"""The demo's "objects found" count: the devkit's greedy rule at one score and one IoU threshold."""

from __future__ import annotations

import numpy as np

from rotld_cli.demo.figures import found_objects


def square(x: float, y: float, size: float = 10.0) -> np.ndarray:
    return np.array([x, y, x + size, y, x + size, y + size, x, y + size], dtype=np.float64)


def test_found_objects_hand_counted():
    truth = [("ship", square(0, 0)), ("ship", square(50, 0)), ("plane", square(100, 0))]
    dets = [
        ("ship", 0.9, square(0, 0)),        # IoU 1: finds ship 1
        ("ship", 0.8, square(0.5, 0)),      # a second box on ship 1: ship 1 is already matched
        ("ship", 0.2, square(50, 0)),       # ship 2, but below the 0.3 score threshold
        ("ship", 0.7, square(100, 0)),      # on the plane, wrong class
        ("plane", 0.6, square(104, 0)),     # IoU 60/140 = 0.43: not above 0.5
    ]
    assert found_objects(truth, dets) == 1
    # IoU of a 10x10 square shifted by 3 px: 70 / 130 = 0.538 > 0.5
    assert found_objects(truth, [*dets, ("plane", 0.5, square(103, 0))]) == 2
    assert found_objects(truth, dets, score_thr=0.1) == 2  # ship 2 counts once the threshold allows it
    assert found_objects([], dets) == 0 and found_objects(truth, []) == 0
