"""The training/inference engine: the only package that imports mmcv, mmdet or mmrotate.

Call `load_engine()` before touching any MMRotate object: it imports the stack, applies the
torch 2.x shims once and registers rotld's plugins under the seed's type names.
"""

from __future__ import annotations

from rotld_cli.errors import EngineMissingError

_loaded = False


def load_engine() -> None:
    """Import torch/mmcv/mmdet/mmrotate, apply shims, register plugins (idempotent)."""
    global _loaded
    if _loaded:
        return
    try:
        import mmcv  # noqa: F401
        import mmdet  # noqa: F401
        import mmrotate  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise EngineMissingError(str(exc)) from exc
    from rotld_cli.engine import compat

    compat.apply()
    from rotld_cli.engine import models  # noqa: F401  (registers the plugins)

    _loaded = True
