"""numpy 1/2 and OpenCV 4/5 through `rotld_cli.compat_libs`: each function against this environment's
libraries and against fakes of the other major's layout, plus the two checks CI's overlay step relies
on: no rotld source calls a version-dependent API directly, and every rotld module imports.
"""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import tokenize
import types
from pathlib import Path

import numpy as np
import pytest

from rotld_cli.compat_libs import (
    NUMPY_CORE_NAMES,
    is_tested,
    numpy_core_name,
    numpy_dtype_classes,
    numpy_has_int_alias,
    numpy_multiarray,
    numpy_pickle_globals,
    opencv_log_level,
    range_label,
    release,
    set_opencv_log_level,
    silence_opencv_log,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("2.14.1+cu130", (2, 14)),
        ("5.1.0", (5, 1)),
        ("1.26.4", (1, 26)),
        ("4.11.0.86", (4, 11)),
        ("3", (3, 0)),
        ("0.29.1", (0, 29)),
        ("2.5.0rc1", (2, 5)),
    ],
)
def test_release_reads_major_and_minor(version, expected):
    assert release(version) == expected


def test_release_refuses_a_version_without_digits():
    with pytest.raises(ValueError, match="cannot read the version 'unknown'"):
        release("unknown")


@pytest.mark.parametrize(
    ("name", "version", "expected"),
    [
        ("torch", "2.10.1", False),
        ("torch", "2.11.0+cu130", True),
        ("torch", "2.14.1", True),
        ("torch", "2.15.0", False),
        ("torchvision", "0.25.0", False),
        ("torchvision", "0.26.0", True),
        ("torchvision", "0.30.0", False),
        ("numpy", "1.22.4", False),
        ("numpy", "1.23.0", True),
        ("numpy", "1.26.4", True),
        ("numpy", "2.4.6", True),
        ("numpy", "2.99.0", True),
        ("numpy", "3.0.0", False),
        ("OpenCV", "4.4.0", False),
        ("OpenCV", "4.5.5", True),
        ("OpenCV", "5.1.0", True),
        ("OpenCV", "6.0.0", False),
        ("Python", "3.10.13", False),
        ("Python", "3.11.7", True),
        ("Python", "3.12.1", True),
    ],
)
def test_range_labels_are_inclusive_and_an_open_minor_takes_every_minor(name, version, expected):
    assert is_tested(name, version) is expected


def test_range_labels_read_as_the_readme_states_them():
    assert range_label("torch") == "2.11 … 2.14"
    assert range_label("numpy") == "1.23 … 2.x"
    assert range_label("OpenCV") == "4.5 … 5.x"


# ------------------------------------------------------------------------------------------ numpy


def test_the_core_name_is_the_one_this_numpy_pickles():
    pickled = pickle.dumps(np.float64(1.5), protocol=2)  # protocol 2 writes "c<module>\n<name>\n"
    assert f"c{numpy_core_name()}.multiarray\nscalar\n".encode() in pickled
    assert numpy_core_name() == ("numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core")


def test_multiarray_holds_what_numpy_reduces_to():
    assert np.float64(1.5).__reduce__()[0] is numpy_multiarray().scalar
    assert np.arange(3).__reduce__()[0] is numpy_multiarray()._reconstruct


def test_pickle_globals_name_both_numpy_majors():
    multiarray = numpy_multiarray()
    named = {name: obj for obj, name in (g for g in numpy_pickle_globals() if isinstance(g, tuple))}
    assert set(named) == {f"{core}.multiarray.{fn}" for core in NUMPY_CORE_NAMES for fn in ("scalar", "_reconstruct")}
    assert named["numpy.core.multiarray.scalar"] is named["numpy._core.multiarray.scalar"] is multiarray.scalar
    assert multiarray._reconstruct in numpy_pickle_globals()


def test_dtype_classes_with_and_without_numpy_dtypes(monkeypatch):
    float32 = type(np.dtype(np.float32))
    assert float32 in numpy_dtype_classes() and type(np.dtype(np.int64)) in numpy_dtype_classes()
    monkeypatch.setattr(np, "dtypes", None, raising=False)  # as numpy < 1.25, which has no numpy.dtypes
    older = numpy_dtype_classes()
    assert float32 in older and type(np.dtype(np.uint8)) in older and type(np.dtype(np.str_)) in older


# ----------------------------------------------------------------------------------------- OpenCV


def test_opencv_log_level_is_set_where_this_opencv_keeps_it():
    before = opencv_log_level()
    try:
        assert set_opencv_log_level(3) is True
        assert opencv_log_level() == 3
        silence_opencv_log()
        assert opencv_log_level() == 0
    finally:
        set_opencv_log_level(before)


class _Logging:
    def __init__(self) -> None:
        self.level = 3

    def setLogLevel(self, level: int) -> None:  # OpenCV's names
        self.level = level

    def getLogLevel(self) -> int:
        return self.level


def _fake_cv2(monkeypatch, layout: str) -> _Logging:
    cv2 = types.ModuleType("cv2")
    logging = _Logging()
    if layout == "4.x":  # cv2.setLogLevel; cv2.utils without a logging submodule
        vars(cv2).update(setLogLevel=logging.setLogLevel, getLogLevel=logging.getLogLevel)
        cv2.utils = types.SimpleNamespace()
    elif layout == "5.x":  # only cv2.utils.logging.setLogLevel
        cv2.utils = types.SimpleNamespace(logging=logging)
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    return logging


@pytest.mark.parametrize("layout", ["4.x", "5.x"])
def test_silence_opencv_log_under_either_layout(monkeypatch, layout):
    logging = _fake_cv2(monkeypatch, layout)
    silence_opencv_log()
    assert logging.level == 0 and opencv_log_level() == 0


def test_an_opencv_without_a_log_level_is_left_alone(monkeypatch):
    _fake_cv2(monkeypatch, "neither")
    silence_opencv_log()  # no AttributeError: a log level is cosmetic
    assert set_opencv_log_level(0) is False and opencv_log_level() is None


# --------------------------------------------------------------------------- the rules CI relies on

# Calls that differ between numpy 1/2 or OpenCV 4/5 (module, attribute); only compat_libs may make them.
VERSION_DEPENDENT = {
    ("cv2", "setLogLevel"),
    ("cv2", "getLogLevel"),
    ("np", "core"),
    ("np", "_core"),
    ("numpy", "core"),
    ("numpy", "_core"),
}


def version_dependent_calls(source: str) -> list[tuple[int, str]]:
    """(line, 'module.attribute') for each use in the code (strings and comments do not count)."""
    names = [
        t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type in (tokenize.NAME, tokenize.OP)
    ]
    return [
        (a.start[0], f"{a.string}.{c.string}")
        for a, b, c in zip(names, names[1:], names[2:])
        if b.string == "." and (a.string, c.string) in VERSION_DEPENDENT
    ]


def test_no_source_calls_a_version_dependent_api_directly():
    sources = [p for folder in ("rotld_cli", "tests", "bench", "scripts") for p in (REPO / folder).rglob("*.py")]
    own = REPO / "rotld_cli" / "compat_libs.py"
    bad = [
        f"{p.relative_to(REPO)}:{line}: {name}"
        for p in sources
        if p != own
        for line, name in version_dependent_calls(p.read_text(encoding="utf-8"))
    ]
    assert not bad, "call these through rotld_cli.compat_libs:\n" + "\n".join(bad)


def test_the_rule_sees_each_form_in_code_only():
    code = "cv2.setLogLevel(0)\nx = cv2 . getLogLevel()\nm = np.core.multiarray\nimport numpy._core.multiarray\n"
    assert version_dependent_calls(code) == [
        (1, "cv2.setLogLevel"),
        (2, "cv2.getLogLevel"),
        (3, "np.core"),
        (4, "numpy._core"),
    ]
    assert version_dependent_calls('"""numpy.core.multiarray.scalar"""  # cv2.setLogLevel\n') == []


_IMPORT_ALL = """
import importlib, importlib.util, json, pkgutil, sys
import rotld_cli
OPTIONAL = {"torch", "torchvision", "mmcv", "mmdet", "mmrotate", "e2cnn", "onnx", "onnxruntime"}
failed, imported, skipped = {}, ["rotld_cli"], []
for info in pkgutil.walk_packages(rotld_cli.__path__, "rotld_cli."):
    if info.name.endswith("__main__"):  # runs the CLI
        continue
    try:
        importlib.import_module(info.name)
        imported.append(info.name)
    except ModuleNotFoundError as exc:  # an engine-less install: only the engine's own modules may miss it
        root = (exc.name or "").split(".")[0]
        if root in OPTIONAL and importlib.util.find_spec(root) is None:
            skipped.append(info.name)
        else:
            failed[info.name] = f"{type(exc).__name__}: {exc}"
    except Exception as exc:
        failed[info.name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"imported": imported, "skipped": skipped, "failed": failed}))
"""


def test_every_module_imports_under_this_numpy_and_opencv():
    """What broke under OpenCV 5 (`cv2.setLogLevel` at import of engine/patches.py) fails here by module name."""
    done = subprocess.run([sys.executable, "-c", _IMPORT_ALL], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["failed"] == {}, f"numpy {np.__version__}: {result['failed']}"
    modules = {
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for p in (REPO / "rotld_cli").rglob("*.py")
        if p.name != "__main__.py"
    }
    assert set(result["imported"]) | set(result["skipped"]) == modules
    assert "rotld_cli.engine.patches" in result["imported"]  # engine-free: imports without the engine too


def test_the_int_alias_exists_exactly_before_numpy_1_24():
    assert numpy_has_int_alias() is (release(np.__version__) < (1, 24))
