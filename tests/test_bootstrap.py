"""The installer's decisions that can be checked without installing: cache key, C++ flag, wheel sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotld_cli import bootstrap

SETUP_SNIPPET = "extra_compile_args = {'cxx': ['-std=c++17']}\nif x: args += ['-std=c++17']\n"


@pytest.mark.parametrize(
    ("version", "expected"),
    [("2.14.1+cu130", True), ("2.14.0", True), ("3.0.0", True), ("2.13.0+cpu", False), ("1.13.1", False)],
)
def test_cxx20_only_for_torch_2_14_and_newer(version, expected):
    assert bootstrap.needs_cxx20(version) is expected


def test_patch_raises_every_cxx17_flag_for_new_torch():
    patched = bootstrap.patch_mmcv_setup(SETUP_SNIPPET, cxx20=True)
    assert "-std=c++17" not in patched
    assert patched.count("-std=c++20") == 2


def test_patch_leaves_older_torch_alone():
    assert bootstrap.patch_mmcv_setup(SETUP_SNIPPET, cxx20=False) == SETUP_SNIPPET


def test_patch_refuses_a_setup_py_without_the_flag():
    with pytest.raises(SystemExit, match="no -std=c\\+\\+17"):
        bootstrap.patch_mmcv_setup("setup()\n", cxx20=True)


def test_cache_key_depends_on_the_pins(monkeypatch):
    engine_key = bootstrap.env_key(engine=True)
    assert engine_key.startswith("engine-")
    assert bootstrap.env_key(engine=False).startswith("base-")
    assert engine_key == bootstrap.env_key(engine=True)
    monkeypatch.setattr(bootstrap, "TORCH_PINS", ["torch==2.13.0", "torchvision==0.28.0"])
    assert bootstrap.env_key(engine=True) != engine_key


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ROTLD_CACHE_DIR", str(tmp_path / "c"))
    assert bootstrap.cache_root() == tmp_path / "c"


def test_wheel_sources_list_existing_folders_only(monkeypatch, tmp_path):
    house = tmp_path / "house"
    house.mkdir()
    extra = tmp_path / "extra"
    extra.mkdir()
    monkeypatch.setenv("ROTLD_WHEELS", str(extra))
    monkeypatch.setattr(bootstrap, "REPO_ROOT", tmp_path / "nowhere" / "repo")
    assert bootstrap.wheel_sources(house) == ["--find-links", str(house), "--find-links", str(extra)]
    missing = tmp_path / "missing"
    assert bootstrap.wheel_sources(missing) == ["--find-links", str(extra)]


def test_shared_wheels_beside_the_checkout_are_a_cache(monkeypatch, tmp_path):
    repo = tmp_path / "main"
    repo.mkdir()
    shared = tmp_path / "shared" / "wheels"
    shared.mkdir(parents=True)
    monkeypatch.delenv("ROTLD_WHEELS", raising=False)
    monkeypatch.setattr(bootstrap, "REPO_ROOT", repo)
    assert bootstrap.wheel_sources(Path(tmp_path / "none")) == ["--find-links", str(shared)]


def test_missing_distributions_respects_pins_and_opencv_variants(tmp_path):
    import sys

    python = Path(sys.executable)
    wanted = ["pytest>=7", "rotld-no-such-distribution", "typer==0.0.1", "opencv-python-headless>=4.5"]
    # typer is installed but not at 0.0.1; some opencv build is installed; pytest is there.
    assert bootstrap.missing_distributions(python, wanted) == ["rotld-no-such-distribution", "typer==0.0.1"]


def test_cuda_build_only_with_a_visible_gpu_and_nvcc():
    import sys

    torch = pytest.importorskip("torch")
    env = bootstrap.cuda_build_env(Path(sys.executable))
    if not torch.cuda.is_available():
        assert env == {}
    else:
        assert env["FORCE_CUDA"] == "1" and all("." in arch for arch in env["TORCH_CUDA_ARCH_LIST"].split(";"))


def test_mmcv_sdist_is_found_in_offline_wheel_folders(tmp_path):
    empty, offline = tmp_path / "a", tmp_path / "b"
    empty.mkdir()
    offline.mkdir()
    (offline / "mmcv-full-1.7.2.tar.gz").write_bytes(b"")
    assert bootstrap.find_sdist([empty]) is None
    assert bootstrap.find_sdist([empty, offline]) == offline / "mmcv-full-1.7.2.tar.gz"


def test_cuda_wheelhouse_is_keyed_by_architecture(monkeypatch, tmp_path):
    import sys

    pytest.importorskip("torch")
    monkeypatch.setenv("ROTLD_CACHE_DIR", str(tmp_path))
    cpu = bootstrap.wheelhouse_for(Path(sys.executable))
    gpu = bootstrap.wheelhouse_for(Path(sys.executable), "8.0;9.0")
    assert cpu.parent == gpu.parent == tmp_path / "wheelhouse"
    assert gpu.name == cpu.name + "-sm80-90"


# ------------------------------------------------------------- supported Pythons, --system-torch's versions

TESTED_MACHINE = {"Python": "3.12.1", "torch": "2.11.0+cu130", "torchvision": "0.26.0", "numpy": "2.1.2",
                  "OpenCV": "4.10.0"}


def test_a_supported_python_passes_silently(capsys):
    bootstrap.check_python("3.11.7", allow_untested=False)
    bootstrap.check_python("3.12.1", allow_untested=False)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("version", ["3.10.13", "3.9.18", "3.99.0"])
def test_an_unsupported_python_is_refused_in_one_line(version):
    with pytest.raises(SystemExit) as refused:
        bootstrap.check_python(version, allow_untested=False)
    message = str(refused.value)
    assert "\n" not in message and f"Python {version}" in message
    assert "tested on Python 3.11 … 3.12" in message and "--allow-untested" in message
    assert "make PYTHON=python3.12 setup" in message


def test_allow_untested_goes_on_with_a_warning(capsys):
    bootstrap.check_python("3.10.13", allow_untested=True)
    assert "warning: Python 3.10.13" in capsys.readouterr().out


def test_main_refuses_an_unsupported_python_before_any_install(monkeypatch):
    import sys

    def no_install(*args, **kwargs):
        raise AssertionError("installed something")

    monkeypatch.setattr(sys, "version", "3.10.13 (main) [GCC]")
    monkeypatch.setattr(bootstrap, "build_shared_env", no_install)
    monkeypatch.setattr(bootstrap, "setup_system_torch", no_install)
    for argv in ([], ["--system-torch"]):
        with pytest.raises(SystemExit, match=r"Python 3\.10\.13 .* is not supported"):
            bootstrap.main(argv)


def test_the_kept_versions_are_reported():
    assert bootstrap.check_kept_versions(TESTED_MACHINE, allow_untested=False) == (
        "--system-torch: keeping torch 2.11.0+cu130, torchvision 0.26.0, numpy 2.1.2, OpenCV 4.10.0")
    without_cv = {**TESTED_MACHINE, "OpenCV": None}
    assert bootstrap.check_kept_versions(without_cv, allow_untested=False) == (
        "--system-torch: keeping torch 2.11.0+cu130, torchvision 0.26.0, numpy 2.1.2 (installing OpenCV)")


@pytest.mark.parametrize(
    ("name", "version", "span"),
    [("torch", "2.15.0", "2.11 … 2.14"), ("torch", "2.10.0+cu126", "2.11 … 2.14"),
     ("torchvision", "0.30.0", "0.26 … 0.29"), ("numpy", "1.22.4", "1.23 … 2.x"), ("numpy", "3.0.0", "1.23 … 2.x"),
     ("OpenCV", "4.4.0", "4.5 … 5.x"), ("OpenCV", "6.0.0", "4.5 … 5.x")],
)
def test_an_untested_package_is_refused_in_one_line_naming_it(capsys, name, version, span):
    machine = {**TESTED_MACHINE, name: version}
    with pytest.raises(SystemExit) as refused:
        bootstrap.check_kept_versions(machine, allow_untested=False)
    assert str(refused.value) == (f"[rotld-setup] error: --system-torch: {name} {version} is outside the tested "
                                  f"range {span}; pass --allow-untested to use it anyway")
    line = bootstrap.check_kept_versions(machine, allow_untested=True)
    assert f"{name} {version}" in line
    assert f"warning: --system-torch: {name} {version} is outside" in capsys.readouterr().out


def test_kept_pins_hold_torch_torchvision_and_numpy():
    assert bootstrap.kept_pins(TESTED_MACHINE) == ["torch==2.11.0+cu130", "torchvision==0.26.0", "numpy==2.1.2"]
    assert bootstrap.kept_pins({**TESTED_MACHINE, "numpy": None}) == ["torch==2.11.0+cu130", "torchvision==0.26.0"]


class _Recorder:
    """Fakes of the installer's side effects: every command and pip call, in order."""

    def __init__(self, monkeypatch, tmp_path, versions, missing):
        self.calls: list[tuple] = []
        site = tmp_path / "site"
        site.mkdir()
        monkeypatch.setattr(bootstrap, "system_versions", lambda python: dict(versions))
        monkeypatch.setattr(bootstrap, "run", lambda cmd, **kw: self.calls.append(("run", cmd[:4])))
        monkeypatch.setattr(bootstrap, "site_packages", lambda python: site)
        monkeypatch.setattr(bootstrap, "missing_distributions",
                            lambda python, reqs: [r for r in reqs if r in missing])
        monkeypatch.setattr(bootstrap, "install_mmcv", lambda python, constraints, offline=False:
                            self.calls.append(("mmcv", constraints.read_text().split())))
        monkeypatch.setattr(bootstrap, "pip", lambda python, args, constraints, env=None:
                            self.calls.append(("pip", args, constraints.read_text().split())))


def test_system_torch_refuses_before_touching_anything(monkeypatch, tmp_path):
    fake = _Recorder(monkeypatch, tmp_path, {**TESTED_MACHINE, "numpy": "3.0.1"}, missing=[])
    with pytest.raises(SystemExit, match=r"numpy 3\.0\.1 is outside the tested range 1\.23 … 2\.x"):
        bootstrap.setup_system_torch(tmp_path / "venv", offline=False)
    assert fake.calls == [] and not (tmp_path / "venv").exists()


def test_system_torch_installs_what_is_missing_with_the_kept_versions_pinned(monkeypatch, tmp_path, capsys):
    fake = _Recorder(monkeypatch, tmp_path, {**TESTED_MACHINE, "OpenCV": None},
                     missing=["opencv-python-headless>=4.5,<6", "mmrotate==0.3.4"])
    (tmp_path / "venv").mkdir()  # `python -m venv` is faked: the venv folder stands in for it
    bootstrap.setup_system_torch(tmp_path / "venv", offline=True)
    pinned = ["torch==2.11.0+cu130", "torchvision==0.26.0", "numpy==2.1.2"]
    pips = [call for call in fake.calls if call[0] in ("pip", "mmcv")]
    assert [call[-1] for call in pips] == [pinned] * 3
    assert "--no-deps" in pips[0][1] and pips[0][1][-1] == "opencv-python-headless>=4.5,<6"
    assert pips[2][1][-2:] == ["--no-deps", "mmrotate==0.3.4"]
    assert "keeping torch 2.11.0+cu130, torchvision 0.26.0, numpy 2.1.2 (installing OpenCV)" in capsys.readouterr().out


def test_the_versions_probe_reads_this_interpreter():
    import sys

    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    import cv2
    import numpy

    found = bootstrap.system_versions(sys.executable)
    assert found == {"Python": sys.version.split()[0], "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "numpy": numpy.__version__, "OpenCV": cv2.__version__}


def test_the_versions_probe_names_a_missing_torch(tmp_path):
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n")
    python.chmod(0o755)
    with pytest.raises(SystemExit) as refused:
        bootstrap.system_versions(str(python))
    assert str(refused.value) == (f"--system-torch: {python} has no working torch + torchvision pair "
                                  "(ModuleNotFoundError: No module named 'torch')")


def test_a_venv_of_another_python_is_refused_in_one_line(tmp_path):
    import sys

    this = f"{sys.version_info.major}.{sys.version_info.minor}"
    venv = tmp_path / ".venv"
    bootstrap.check_venv_python(venv)  # none yet: it will be made with this Python
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text(f"home = /x/bin\nversion = {this}.99\n")
    bootstrap.check_venv_python(venv)
    (venv / "pyvenv.cfg").write_text("home = /x/bin\ninclude-system-site-packages = false\nversion = 2.7.18\n")
    with pytest.raises(SystemExit) as refused:
        bootstrap.check_venv_python(venv)
    assert str(refused.value) == (
        f"[rotld-setup] error: {venv} was made with Python 2.7, this is Python {this}: remove it (make clean) "
        f"or use another one (make VENV=.venv-py{this.replace('.', '')} ...)")


def test_numpy_1_up_to_python_3_12_and_numpy_2_from_3_13():
    # numpy 1.26 has no build for Python 3.13: there the environment is the numpy 2 overlay's pair
    assert bootstrap.numpy_opencv_pins((3, 11)) == bootstrap.numpy_opencv_pins((3, 12)) == (
        "numpy>=1.23,<2", "opencv-python-headless>=4.5,<4.12", ["numpy<2", "opencv-python-headless<4.12"])
    assert bootstrap.numpy_opencv_pins((3, 13)) == (
        "numpy>=2,<3", "opencv-python-headless>=4.12,<6", ["numpy<3", "opencv-python-headless<6"])


# mmcv-full 1.7.2's setup.py, as in its sdist: exec() into the function's locals, then locals()[...]
MMCV_GET_VERSION = """
def get_version():
    version_file = 'mmcv/version.py'
    with open(version_file, encoding='utf-8') as f:
        exec(compile(f.read(), version_file, 'exec'))
    return locals()['__version__']
"""


@pytest.mark.parametrize("cxx20", [True, False])
def test_the_version_is_read_without_locals(tmp_path, monkeypatch, cxx20):
    """Python 3.13's locals() is a snapshot (PEP 667): the sdist's get_version() raises KeyError there."""
    patched = bootstrap.patch_mmcv_setup(MMCV_GET_VERSION + "flags = ['-std=c++17']\n", cxx20=cxx20)
    assert "locals()" not in patched
    (tmp_path / "mmcv").mkdir()
    (tmp_path / "mmcv" / "version.py").write_text("__version__ = '1.7.2'\nshort_version = __version__\n")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(patched, namespace)
    assert namespace["get_version"]() == "1.7.2"
