"""The test pipeline of an MMRotate config in numpy + OpenCV: RResize, Normalize, Pad, collate.

Each step repeats mmcv's arithmetic (cv2 bilinear resize to the `_scale_size` rounding, float32
normalisation by multiplying with 1/std, zero padding at the bottom/right), so the network sees
the same input tensor as under `LoadImageFromWebcam` + the config's pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from rotld_cli.deploy.metadata import InputSettings
from rotld_cli.errors import RotldError


@dataclass
class PreparedImage:
    """A normalised (H, W, 3) float32 image before padding, and how it was resized."""

    pixels: np.ndarray
    scale_factor: np.ndarray
    """float32 (w_scale, h_scale, w_scale, h_scale): boxes are divided by it to return to the input image."""

    @property
    def img_shape(self) -> tuple[int, int]:
        return self.pixels.shape[0], self.pixels.shape[1]


def rescale_size(width: int, height: int, img_scale: Sequence[int]) -> tuple[int, int]:
    """mmcv `rescale_size` for a (w, h) maximum: as large as fits, aspect kept; returns (new_w, new_h)."""
    factor = min(max(img_scale) / max(height, width), min(img_scale) / min(height, width))
    return int(width * float(factor) + 0.5), int(height * float(factor) + 0.5)


def prepare_image(image: np.ndarray, settings: InputSettings) -> PreparedImage:
    """A BGR uint8 image → resized and normalised float32 pixels (mmdet RResize + Normalize)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise RotldError(f"expected a colour image (H, W, 3), got an array of shape {image.shape}")
    height, width = image.shape[:2]
    if settings.keep_ratio:
        new_w, new_h = rescale_size(width, height, settings.img_scale)
    else:
        new_w, new_h = settings.img_scale[0], settings.img_scale[1]
    if (new_w, new_h) != (width, height):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    scale = np.array([new_w / width, new_h / height] * 2, dtype=np.float32)
    pixels = image.astype(np.float32)
    mean = np.float64(np.asarray(settings.mean, dtype=np.float32).reshape(1, -1))
    stdinv = 1 / np.float64(np.asarray(settings.std, dtype=np.float32).reshape(1, -1))
    if settings.to_rgb:
        cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB, pixels)
    cv2.subtract(pixels, mean, pixels)
    cv2.multiply(pixels, stdinv, pixels)
    return PreparedImage(pixels, scale)


def padded_shape(img_shape: tuple[int, int], settings: InputSettings) -> tuple[int, int]:
    """mmcv `impad_to_multiple`, or the export's fixed square size (an image larger than it is an error)."""
    if settings.fixed_size is not None:
        size = settings.fixed_size
        if img_shape[0] > size or img_shape[1] > size:
            raise RotldError(
                f"an image resized to {img_shape[1]}x{img_shape[0]} does not fit this model's fixed input "
                f"{size}x{size} (export with a larger --size, or without --size for any size)"
            )
        return size, size
    div = settings.size_divisor
    return int(np.ceil(img_shape[0] / div)) * div, int(np.ceil(img_shape[1] / div)) * div


def collate(prepared: Sequence[PreparedImage], settings: InputSettings) -> np.ndarray:
    """(N, 3, H, W) float32 batch, each image zero-padded at the bottom/right to the largest padded shape."""
    shapes = [padded_shape(p.img_shape, settings) for p in prepared]
    height, width = max(s[0] for s in shapes), max(s[1] for s in shapes)
    batch = np.zeros((len(prepared), 3, height, width), dtype=np.float32)
    for i, p in enumerate(prepared):
        h, w = p.img_shape
        batch[i, :, :h, :w] = p.pixels.transpose(2, 0, 1)
    return batch
