"""The training/inference engine: the only package that imports mmcv, mmdet or mmrotate.

Call `load_engine()` before touching any MMRotate object: it imports the stack, applies the
torch 2.x shims once and registers rotld's plugins under the seed's type names.
"""

from __future__ import annotations

from rotld_cli.errors import EngineMissingError

_loaded = False


def load_engine() -> None:
    """Import torch/mmcv/mmdet/mmrotate, apply shims, register plugins (idempotent).

    Raises EngineMissingError (one line, with the install command) when the stack is missing or
    broken: an ImportError, or torchvision's RuntimeError for a torch/torchvision mismatch.
    """
    global _loaded
    if _loaded:
        return
    from rotld_cli.engine import compat

    compat.quiet_imports()
    try:
        import mmcv.ops  # fails without the compiled mmcv-full ops
        import mmcv.runner  # noqa: F401  (imports torchvision)
        import mmdet  # noqa: F401
        import mmrotate  # noqa: F401
        import torch  # noqa: F401
    except (ImportError, RuntimeError) as exc:
        raise EngineMissingError(f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc

    compat.apply()
    from rotld_cli.engine import dataset, models  # noqa: F401  (registers the plugins)

    _loaded = True
