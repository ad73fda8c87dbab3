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
