"""A checkpoint pickled under numpy 1 (`numpy.core.*`) or numpy 2 (`numpy._core.*`) loads safely under both.

Training on a CPU box with numpy 1 and evaluating on a GPU machine with numpy 2 (or back) is the
ordinary case; torch's weights-only loader matches allowed globals by the name in the pickle.
The other numpy's file is made here by renaming the globals inside `data.pkl`.
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from rotld_cli.checkpoints import load_checkpoint_file
from rotld_cli.compat_libs import NUMPY_CORE_NAMES, numpy_core_name

torch = pytest.importorskip("torch")
THIS = f"{numpy_core_name()}.multiarray"
OTHER = next(f"{core}.multiarray" for core in NUMPY_CORE_NAMES if core != numpy_core_name())


def _rename_globals(src, dst, old: str, new: str) -> int:
    """Copy a torch zip checkpoint, renaming pickled GLOBAL modules; returns how many were renamed."""
    renamed = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                renamed += data.count(f"c{old}\n".encode())
                data = data.replace(f"c{old}\n".encode(), f"c{new}\n".encode())
            zout.writestr(item, data)
    return renamed


@pytest.mark.parametrize("module", [THIS, OTHER])
def test_numpy_metadata_of_either_numpy_major_loads_weights_only(tmp_path, module):
    meta = {"best_score": np.float64(0.5), "ids": np.arange(3), "dtype_holder": np.zeros(2, dtype=np.float32)}
    src = tmp_path / "this.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "meta": meta}, src)
    path = tmp_path / "file.pth"
    assert _rename_globals(src, path, THIS, module) >= (2 if module != THIS else 0)
    with zipfile.ZipFile(path) as archive:
        pickled = next(archive.read(n) for n in archive.namelist() if n.endswith("data.pkl"))
    assert f"c{module}\n".encode() in pickled and (module == THIS or f"c{THIS}\n".encode() not in pickled)
    loaded = load_checkpoint_file(path)
    assert float(loaded["meta"]["best_score"]) == 0.5 and loaded["meta"]["ids"].tolist() == [0, 1, 2]
    assert loaded["meta"]["dtype_holder"].dtype == np.float32
