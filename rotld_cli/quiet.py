"""Keep the engine stack's own notices off the user's terminal (`--debug` shows them).

The CLI calls `silence_third_party()` first thing, before any command can import torch, mmcv,
mmdet, mmrotate or e2cnn: a filter installed after the first import is too late (the notices
are printed at import time), which is why this module imports none of them. What is silenced,
each harmless for rotld's use:
- mmcv's "MMCV will release v2.0.0" UserWarning and its "MultiScaleDeformableAttention has been
  moved" ImportWarning (both at `import mmcv`);
- torch's "No CUDA runtime is found, using CUDA_HOME=..." log line (mmcv imports
  `torch.utils.cpp_extension`; rotld never compiles at run time);
- invalid-escape SyntaxWarnings (DeprecationWarnings before Python 3.12) raised while Python
  compiles mmcv, mmdet, mmrotate or e2cnn sources;
- torch's `torch.cuda.amp.*` FutureWarnings raised from mmcv's fp16 code (it still works);
- torch's "torch.meshgrid: in an upcoming release, it will be required to pass the indexing
  argument" UserWarning, raised for mmdet's point grids (rotated FCOS): they mean the 'ij' indexing
  that is still the default. torch raises it from C++, so it names torch, not mmdet: matched by text;
- mmdet's own "DeprecationWarning: `num_anchors` / anchor_generator is deprecated" UserWarnings,
  raised by its anchor heads' properties that mmrotate's oriented RPN still reads (Oriented R-CNN);
- GDAL's own messages, which rasterio and pyogrio log (e.g. a TIFF tag GDAL ignores): a raster
  rotld cannot read is reported by rotld with its path.
"""

from __future__ import annotations

import logging
import warnings

STACK_SOURCES = r".*[/\\](mmcv|mmdet|mmrotate|e2cnn)[/\\]"
STACK_MODULES = r"(mmcv|mmdet|mmrotate|e2cnn)(\.|$)"


class _NoCudaRuntimeFilter(logging.Filter):
    """Drop torch's 'No CUDA runtime is found, using CUDA_HOME=...' record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No CUDA runtime is found")


def silence_third_party() -> None:
    """Install the warning and logging filters (idempotent; call before importing the engine)."""
    warnings.filterwarnings("ignore", message=r"On January 1, 2023, MMCV will release v2\.0\.0", category=UserWarning)
    warnings.filterwarnings(
        "ignore", message=r"``MultiScaleDeformableAttention`` has been moved", category=ImportWarning
    )
    warnings.filterwarnings(
        "ignore",
        message=r"`torch\.cuda\.amp\.(autocast|GradScaler)\(args\.\.\.\)` is deprecated",
        category=FutureWarning,
        module=STACK_MODULES,
    )
    warnings.filterwarnings(
        "ignore", message=r"torch\.meshgrid: in an upcoming release, it will be required to pass the indexing",
        category=UserWarning,
    )
    warnings.filterwarnings(
        "ignore", message=r"DeprecationWarning: .* is deprecated", category=UserWarning, module=STACK_MODULES
    )
    for category in (SyntaxWarning, DeprecationWarning):
        # Compile-time warnings carry the source path as their module.
        warnings.filterwarnings("ignore", message=r"invalid escape sequence", category=category, module=STACK_SOURCES)
    for name in ("rasterio", "pyogrio"):  # without a handler, Python's last-resort one prints them
        gdal = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in gdal.handlers):
            gdal.addHandler(logging.NullHandler())
    logger = logging.getLogger("torch.utils.cpp_extension")
    if not any(isinstance(f, _NoCudaRuntimeFilter) for f in logger.filters):
        logger.addFilter(_NoCudaRuntimeFilter())
