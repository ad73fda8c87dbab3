"""`rotld doctor`: all green on this environment, a one-line fix and a non-zero exit on broken ones.

Broken environments are simulated in subprocesses: an import blocker on sys.meta_path (module
missing, or torchvision's RuntimeError for a torch mismatch) or a shadow `mmcv` package on
PYTHONPATH (mmcv lite / mmcv-full without its compiled `_ext`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

BLOCKED_DOCTOR = r"""
import sys
blocked, how = sys.argv[1], sys.argv[2]

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name == blocked or name.startswith(blocked + "."):
            if how == "runtime":
                raise RuntimeError("operator torchvision::nms does not exist")
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Blocker())
from rotld_cli.cli import main
main(["doctor", "--json"])
"""


def _doctor(args: list[str], extra_path: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (extra_path, REPO_ROOT) if p)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
                          env=env)


def _by_name(proc: subprocess.CompletedProcess) -> dict[str, dict]:
    document = json.loads(proc.stdout)
    checks = {c["name"]: c for c in document["checks"]}
    assert document["ok"] is (proc.returncode == 0)
    return checks


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


# ---------------------------------------------------------------------------- healthy environment


@pytest.mark.engine
def test_run_checks_all_ok_here():
    pytest.importorskip("mmrotate")
    from rotld_cli.engine.doctor import report, run_checks

    checks = run_checks()
    names = [c.name for c in checks]
    assert names == ["python", "numpy", "shapely", "opencv", "torch", "torchvision", "mmcv-full", "mmcv ops (CPU)",
                     "mmcv ops (CUDA)", "mmdet", "mmrotate", "shims", "plugins", "distribution head"]
    import torch

    for check in checks:
        if check.name == "mmcv ops (CUDA)" and not torch.cuda.is_available():
            assert (check.status, check.detail) == ("n/a", "n/a (no GPU)")
        else:
            assert check.status == "ok", check
    by_name = {c.name: c for c in checks}
    assert by_name["mmcv-full"].detail.startswith("1.7.2 (mmcv-full")
    assert "IoU 0.8624" in by_name["mmcv ops (CPU)"].detail
    assert "get_anchors_device" in by_name["shims"].detail
    assert "KnowledgeDistillationRotatedSingleStageDetector" in by_name["plugins"].detail
    assert report(checks)["ok"] is True


@pytest.mark.engine
@pytest.mark.slow
def test_doctor_cli_json_exit_zero():
    pytest.importorskip("mmrotate")
    proc = _doctor(["-m", "rotld_cli", "doctor", "--json"])
    assert proc.returncode == 0, proc.stderr
    checks = _by_name(proc)
    assert {c["status"] for c in checks.values()} <= {"ok", "n/a"}
    assert checks["torch"]["detail"].startswith("2.")
    assert _error_lines(proc) == []


def test_numpy_2_is_accepted_and_too_old_numpy_refused(monkeypatch):
    import numpy

    from rotld_cli.engine.doctor import CheckFailed, check_numpy

    monkeypatch.setattr(numpy, "__version__", "2.5.2")
    assert check_numpy() == "2.5.2"
    monkeypatch.setattr(numpy, "__version__", "1.21.6")
    with pytest.raises(CheckFailed) as exc:
        check_numpy()
    assert exc.value.fix == "numpy 1.21.6 is too old: install numpy>=1.23"


def test_a_package_built_for_numpy_1_is_named_with_its_fix():
    from rotld_cli.engine.doctor import FAIL, _run_one

    def broken_import() -> str:  # the error numpy 2 raises for an extension built against numpy 1
        raise ImportError("A module that was compiled using NumPy 1.x cannot be run in\nNumPy 2.4.6 as it may crash.")

    check = _run_one("opencv", broken_import, "reinstall")
    assert check.status == FAIL and check.detail.startswith("ImportError: A module that was compiled using NumPy 1.x")
    assert "opencv-python-headless>=4.12" in check.fix and "numpy<2" in check.fix


@pytest.mark.engine
def test_torchvision_release_must_pair_with_torch(monkeypatch):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from rotld_cli.engine.doctor import CheckFailed, check_torchvision

    monkeypatch.setattr(torch, "__version__", "2.14.1+cu130")
    monkeypatch.setattr(torchvision, "__version__", "0.28.0")
    with pytest.raises(CheckFailed) as exc:
        check_torchvision()
    assert exc.value.detail == "torchvision 0.28.0 with torch 2.14.1+cu130"
    assert "is not the release for torch 2.14.1+cu130 (expected 0.29.x)" in exc.value.fix
    monkeypatch.setattr(torchvision, "__version__", "0.29.1+cpu")
    assert check_torchvision() == "0.29.1+cpu"


# ---------------------------------------------------------------------------- broken environments


@pytest.mark.engine
@pytest.mark.parametrize(
    ("blocked", "how", "failing", "fix"),
    [
        ("mmcv", "missing", "mmcv-full", "mmcv-full is not installed: run `python3 -m rotld_cli.bootstrap`"),
        ("torch", "missing", "torch", "torch is missing or broken: run `python3 -m rotld_cli.bootstrap`"),
        ("torchvision", "runtime", "torchvision", "torchvision does not match torch"),
    ],
)
def test_doctor_reports_a_missing_or_mismatched_module(blocked, how, failing, fix):
    proc = _doctor(["-c", BLOCKED_DOCTOR, blocked, how])
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    checks = _by_name(proc)
    assert checks[failing]["status"] == "fail"
    assert fix in checks[failing]["fix"]
    # exactly one failure (the root cause), one error line naming its fix; what depends on it is skipped
    assert [c["name"] for c in checks.values() if c["status"] == "fail"] == [failing]
    assert _error_lines(proc) == [f"error: {failing}: {checks[failing]['fix']}"]
    assert checks["distribution head"]["status"] == "skip"
    # the checks that do not need the broken module still ran
    assert checks["numpy"]["status"] == checks["shapely"]["status"] == checks["opencv"]["status"] == "ok"


def _shadow_mmcv(root: Path, dist_name: str) -> Path:
    package = root / "mmcv"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("__version__ = '1.7.2'\n")
    info = root / f"{dist_name.replace('-', '_')}-1.7.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 1.7.2\n")
    return root


@pytest.mark.engine
@pytest.mark.parametrize(
    ("dist_name", "detail", "fix"),
    [
        ("mmcv", "mmcv 1.7.2 without compiled ops",
         "mmcv (lite) installed instead of mmcv-full: run `python3 -m rotld_cli.bootstrap`"),
        ("mmcv-full", "No module named 'mmcv._ext'",
         "mmcv-full's ops are not compiled (mmcv._ext missing): rebuild with MMCV_WITH_OPS=1"),
    ],
)
def test_doctor_reports_mmcv_without_compiled_ops(tmp_path, dist_name, detail, fix):
    pytest.importorskip("torchvision")
    proc = _doctor(["-m", "rotld_cli", "doctor", "--json"], extra_path=_shadow_mmcv(tmp_path, dist_name))
    assert proc.returncode == 1, proc.stderr
    checks = _by_name(proc)
    assert checks["mmcv-full"]["status"] == "fail"
    assert detail in checks["mmcv-full"]["detail"]
    assert checks["mmcv-full"]["fix"].startswith(fix)
    assert _error_lines(proc)[0] == f"error: mmcv-full: {checks['mmcv-full']['fix']}"
    assert checks["mmcv ops (CPU)"]["status"] == "skip"


@pytest.mark.engine
def test_doctor_table_output_and_exit_code():
    proc = _doctor(["-c", BLOCKED_DOCTOR.replace('"--json"', ""), "mmcv", "missing"])
    assert proc.returncode == 1
    assert "rotld doctor" in proc.stdout and "FAIL" in proc.stdout and "skipped" in proc.stdout
    assert _error_lines(proc) == ["error: mmcv-full: mmcv-full is not installed: run `python3 -m rotld_cli.bootstrap`"]


@pytest.mark.engine
@pytest.mark.parametrize(
    ("blocked", "how", "detail"),
    [
        ("mmcv", "missing", "ModuleNotFoundError: No module named 'mmcv'"),
        ("torchvision", "runtime", "RuntimeError: operator torchvision::nms does not exist"),
    ],
)
def test_load_engine_names_the_install_command(blocked, how, detail):
    code = BLOCKED_DOCTOR.replace(
        'from rotld_cli.cli import main\nmain(["doctor", "--json"])',
        "from rotld_cli.engine import load_engine\n"
        "from rotld_cli.errors import EngineMissingError\n"
        "try:\n    load_engine()\nexcept EngineMissingError as exc:\n    print(exc.exit_code, exc)\n",
    )
    proc = _doctor(["-c", code, blocked, how], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"3 the training engine is not installed ({detail}); run `make setup` "
        "(or `python3 -m rotld_cli.bootstrap`) and use .venv/bin/rotld"
    )
