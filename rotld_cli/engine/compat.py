"""torch 2.x shims for mmcv-full 1.7.2 / mmdet 2.28.2 / mmrotate 0.3.4, applied once by `apply()`.

Why: these releases predate torch 2.x; each shim below fixes one breakage reproduced with torch
2.13/2.14 (the error text without the shim is in its docstring and in tests/test_engine_compat.py).
Every patched attribute keeps its original in `ORIGINALS["<module>.<qualname>"]` so tests can show
that the unpatched code really fails. `APPLIED` lists the shims in the order they were applied.
"""

from __future__ import annotations

from typing import Any, Callable

ORIGINALS: dict[str, Any] = {}
APPLIED: list[str] = []

_applied = False


def _patch(owner: Any, name: str, new: Any, key: str) -> None:
    """Replace `owner.name` by `new`, remembering the original once under `key`."""
    ORIGINALS.setdefault(key, getattr(owner, name))
    setattr(owner, name, new)


def _shim_get_anchors_device() -> None:
    """mmrotate 0.3.4 `RotatedAnchorHead.get_anchors` calls `grid_priors(featmap_sizes, device)`.

    The second positional parameter of `grid_priors` is *dtype*, so the anchors are built on the
    default device 'cuda' whatever the input: every CPU forward fails with "Found no NVIDIA driver
    on your system" / "Torch not compiled with CUDA enabled", and on a GPU machine CPU inputs would
    meet GPU anchors. The fix passes `device=` by keyword (mmdet's `AnchorHead.get_anchors` does).
    """
    from mmrotate.models.dense_heads.rotated_anchor_head import RotatedAnchorHead

    def get_anchors(self, featmap_sizes, img_metas, device="cuda"):
        multi_level_anchors = self.anchor_generator.grid_priors(featmap_sizes, device=device)
        anchor_list = [multi_level_anchors for _ in range(len(img_metas))]
        valid_flag_list = [
            self.anchor_generator.valid_flags(featmap_sizes, img_meta["pad_shape"], device=device)
            for img_meta in img_metas
        ]
        return anchor_list, valid_flag_list

    get_anchors.__doc__ = RotatedAnchorHead.get_anchors.__doc__
    _patch(RotatedAnchorHead, "get_anchors", get_anchors, "RotatedAnchorHead.get_anchors")


SHIMS: list[tuple[str, Callable[[], None]]] = [
    ("get_anchors_device", _shim_get_anchors_device),
]


def apply() -> None:
    """Apply every shim once (idempotent); the engine must be importable."""
    global _applied
    if _applied:
        return
    for name, shim in SHIMS:
        shim()
        APPLIED.append(name)
    _applied = True
