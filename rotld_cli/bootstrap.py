"""Create the project's virtual environment, with or without the MMRotate engine.

Standard library only: this runs on a machine that has nothing but Python (3.11 or 3.12; others are
refused in one line) and pip.

The engine's dependencies (torch with CUDA libraries, ~5.5 GB) live in one environment in the
user's cache, keyed by the pins below; each checkout's ``.venv`` is a small venv whose ``.pth``
file points into it. A fresh clone with unchanged pins therefore reuses the heavy install, and
the same code path is what fills the cache on a fresh machine.

mmcv-full 1.7.2 ships only as source. Its ``setup.py`` forces ``-std=c++17``, but the headers of
torch >= 2.14 require C++20, so for those torches the sdist is unpacked, that flag is raised and
the wheel is built here (about 45 minutes on 2 cores) and kept in a wheelhouse for next time.

``--system-torch`` is for GPU machines and containers that come with torch: the checkout's venv
sees the interpreter's packages (``--system-site-packages``) and keeps its torch, torchvision and
numpy (1.x or 2.x), reported first and refused outside the tested ranges (``compat_libs.TESTED``)
unless ``--allow-untested``; only what is missing is installed, with those versions pinned (an
absent OpenCV 5 would otherwise pull numpy 2 onto a numpy 1 machine), mmcv-full is built against that torch
(with CUDA ops for the visible GPUs' architectures when nvcc is there: about 4 minutes on 16
cores for one architecture) and its wheel is cached. ``--offline`` installs from local wheel
folders only (``ROTLD_WHEELS``, ``--find-links``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from rotld_cli.compat_libs import TESTED, is_tested, range_label, release

TORCH_PINS = ["torch==2.14.1", "torchvision==0.29.1"]
# The shared environment stays on numpy 1.26 + opencv < 4.12 (4.12+ requires numpy 2): the
# combination the mmcv-full wheelhouse and CI use. numpy 2 works too (`make test-numpy2` runs the
# suite under numpy 2 + opencv 5; `--system-torch` keeps a machine's numpy 2). Python 3.13 has no
# numpy 1 build, so there the environment is numpy 2 + opencv >= 4.12 (the overlay's pair).


def numpy_opencv_pins(python: tuple[int, int]) -> tuple[str, str, list[str]]:
    """(numpy pin, OpenCV pin, their constraints) of the shared environment for this Python."""
    if python < (3, 13):
        return "numpy>=1.23,<2", "opencv-python-headless>=4.5,<4.12", ["numpy<2", "opencv-python-headless<4.12"]
    return "numpy>=2,<3", "opencv-python-headless>=4.12,<6", ["numpy<3", "opencv-python-headless<6"]


NUMPY1 = sys.version_info[:2] < (3, 13)
NUMPY_PIN, OPENCV_PIN, NUMPY_OPENCV_CONSTRAINTS = numpy_opencv_pins(sys.version_info[:2])
BUILD_PINS = [NUMPY_PIN, "setuptools>=77.0.3,<81", "wheel", "ninja"]
MMCV_PIN = "mmcv-full==1.7.2"
MMCV_DEPS = ["addict", "packaging", "Pillow", "pyyaml", "yapf==0.40.1",
             "opencv-python-headless>=4.5,<5" if NUMPY1 else OPENCV_PIN]
# Installed with --no-deps: mmrotate depends on mmcv-full, whose metadata pulls the GUI
# opencv-python (libGL) next to the headless one. ENGINE_DEPS lists what they really need.
ENGINE_DEPS = ["matplotlib", "pycocotools", "terminaltables", "scipy", "six", "sympy"]
ENGINE_PINS = ["mmdet==2.28.2", "mmrotate==0.3.4", "e2cnn==0.2.3"]
BASE_PINS = [
    "typer>=0.12",
    "rich>=13",
    "pyyaml>=6",
    "shapely>=2.0",
    NUMPY_PIN,
    OPENCV_PIN,
    "Pillow>=9",
    "matplotlib>=3.7",
]
DEV_PINS = ["pytest>=7", "ruff>=0.6", "setuptools>=77.0.3,<81", "wheel"]
# `rotld export` (onnx) and running an exported model without the engine (onnxruntime).
DEPLOY_PINS = ["onnx==1.23.2", "onnxruntime==1.32.0"]
# `rotld predict` on GeoTIFF/COG/JPEG2000/VRT (rasterio: GDAL windowed reads), map outputs (pyproj: CRSs and
# reprojection; pyogrio: the GeoPackage writer). manylinux wheels with GDAL/PROJ bundled: no system library.
GEO_PINS = ["rasterio==1.4.4", "pyproj==3.7.2", "pyogrio==0.13.0"]
CONSTRAINTS = [*NUMPY_OPENCV_CONSTRAINTS, "yapf==0.40.1", "setuptools<81"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[rotld-setup] {msg}", flush=True)


def cache_root() -> Path:
    base = os.environ.get("ROTLD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "rotld"
    )
    return Path(base)


def env_key(engine: bool) -> str:
    """Hash of everything that decides the content of the shared environment."""
    parts = [
        platform.machine(),
        sys.implementation.name,
        f"{sys.version_info.major}.{sys.version_info.minor}",
        *BASE_PINS,
        *DEV_PINS,
        *DEPLOY_PINS,
        *GEO_PINS,
        *CONSTRAINTS,
    ]
    if engine:
        parts += [
            *TORCH_PINS,
            *BUILD_PINS,
            MMCV_PIN,
            *MMCV_DEPS,
            *ENGINE_DEPS,
            *ENGINE_PINS,
            os.environ.get("ROTLD_TORCH_INDEX", ""),
        ]
    return ("engine-" if engine else "base-") + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, env=env, cwd=cwd)


def pip(python: Path, args: list[str], constraints: Path | None, env: dict[str, str] | None = None) -> None:
    pinned = ["-c", str(constraints)] if constraints is not None else []
    run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *pinned, *args], env=env)


def site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


@contextlib.contextmanager
def locked(path: Path):
    """Serialise concurrent installs into the same cached environment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def needs_cxx20(torch_version: str) -> bool:
    """torch >= 2.14 headers stop with '#error C++20 or later compatible compiler is required'."""
    return release(torch_version) >= (2, 14)


def torch_needs_cxx20(python: Path) -> bool:
    out = subprocess.run(
        [str(python), "-c", "import torch; print(torch.__version__)"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return needs_cxx20(out)


# mmcv-full's setup.py reads its version with exec() + locals(), which Python 3.13 no longer fills
# (PEP 667: locals() in a function is a snapshot); reading it into a namespace works everywhere.
_MMCV_VERSION_READ = ("        exec(compile(f.read(), version_file, 'exec'))\n"
                      "    return locals()['__version__']\n")
_MMCV_VERSION_READ_FIXED = ("        namespace = {}\n"
                            "        exec(compile(f.read(), version_file, 'exec'), namespace)\n"
                            "    return namespace['__version__']\n")


def patch_mmcv_setup(text: str, cxx20: bool) -> str:
    """Raise mmcv-full's forced `-std=c++17` to C++20 where torch needs it; read its version portably."""
    text = text.replace(_MMCV_VERSION_READ, _MMCV_VERSION_READ_FIXED)
    if not cxx20:
        return text
    patched = text.replace("-std=c++17", "-std=c++20")
    if patched == text:
        raise SystemExit("mmcv-full's setup.py has no -std=c++17 flag to raise; cannot build against torch >= 2.14")
    log("torch >= 2.14: building mmcv-full with -std=c++20 (its setup.py forces c++17)")
    return patched


def wheelhouse_for(python: Path, cuda_arch: str = "") -> Path:
    """One wheelhouse per torch build (and CUDA architectures): an mmcv-full wheel only works beside its torch."""
    version = subprocess.run(
        [str(python), "-c", "import torch; print(torch.__version__)"], check=True, capture_output=True, text=True
    ).stdout.strip()
    name = f"torch-{version}" + (f"-sm{cuda_arch.replace('.', '').replace(';', '-')}" if cuda_arch else "")
    return cache_root() / "wheelhouse" / re.sub(r"[^0-9A-Za-z.+_-]", "_", name)


EXTRA_WHEEL_DIRS: list[Path] = []  # --find-links


def wheel_dirs(wheelhouse: Path | None = None) -> list[Path]:
    """Local wheel folders, in order: our wheelhouse, --find-links, ROTLD_WHEELS, ../shared/wheels."""
    sources = [wheelhouse] if wheelhouse else []
    sources += EXTRA_WHEEL_DIRS
    sources += [Path(p) for p in os.environ.get("ROTLD_WHEELS", "").split(os.pathsep) if p]
    shared = REPO_ROOT.parent / "shared" / "wheels"
    sources += [shared, shared / f"py{sys.version_info.major}{sys.version_info.minor}-offline"]
    return [src for src in sources if src.is_dir()]


def wheel_sources(wheelhouse: Path | None = None) -> list[str]:
    """`--find-links` arguments for `wheel_dirs`."""
    return [arg for src in wheel_dirs(wheelhouse) for arg in ("--find-links", str(src))]


def cuda_build_env(python: Path) -> dict[str, str]:
    """FORCE_CUDA and the visible GPUs' architectures when a GPU and nvcc are there, else nothing (CPU ops)."""
    probe = (
        "import torch\n"
        "from torch.utils.cpp_extension import CUDA_HOME\n"
        "caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})\n"
        "print(';'.join(f'{a}.{b}' for a, b in caps) if torch.cuda.is_available() and CUDA_HOME else '')\n"
    )
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    arch = out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else ""
    return {"FORCE_CUDA": "1", "TORCH_CUDA_ARCH_LIST": arch} if arch else {}


def find_sdist(directories: list[Path]) -> Path | None:
    """mmcv-full's source archive in a local wheel folder (offline machines carry it there)."""
    for directory in directories:
        found = sorted(directory.glob("mmcv[-_]full-1.7.2.tar.gz"))
        if found:
            return found[0]
    return None


def install_mmcv(python: Path, constraints: Path | None, offline: bool = False) -> None:
    """Install mmcv-full from a cached wheel, or build it from the sdist (with CUDA ops on a GPU machine)."""
    cuda = cuda_build_env(python)
    wheelhouse = wheelhouse_for(python, cuda.get("TORCH_CUDA_ARCH_LIST", ""))
    wheelhouse.mkdir(parents=True, exist_ok=True)
    # A CPU-only wheel from a shared folder would lack the CUDA kernels: only our own wheelhouse then.
    sources = ["--find-links", str(wheelhouse)] if cuda else wheel_sources(wheelhouse)
    try:
        pip(python, ["--no-deps", "--only-binary", "mmcv-full", "--no-index", *sources, MMCV_PIN], constraints)
        if _mmcv_ops_work(python, cuda=bool(cuda)):
            log("mmcv-full installed from a cached wheel")
            return
        log("the cached mmcv-full wheel does not match this torch; building from source")
        run([str(python), "-m", "pip", "uninstall", "-y", "mmcv-full"])
    except subprocess.CalledProcessError:
        log("no cached mmcv-full wheel; building it from source")
    build_mmcv_wheel(python, wheelhouse, cuda, offline)
    pip(python, ["--no-deps", "--no-index", "--find-links", str(wheelhouse), MMCV_PIN], constraints)
    if not _mmcv_ops_work(python, cuda=bool(cuda)):
        raise SystemExit("mmcv-full was built but its compiled ops do not load; see the log above")


def build_mmcv_wheel(python: Path, wheelhouse: Path, cuda: dict[str, str], offline: bool) -> None:
    """Unpack mmcv-full's sdist, raise its C++ standard where torch needs it, build a wheel into `wheelhouse`."""
    cxx20 = torch_needs_cxx20(python)
    with tempfile.TemporaryDirectory(prefix="rotld-mmcv-") as tmp:
        tmpdir = Path(tmp)
        sdist = find_sdist(wheel_dirs())
        if sdist is None:
            if offline:
                raise SystemExit("--offline: no mmcv-full-1.7.2.tar.gz in the wheel folders "
                                 "(ROTLD_WHEELS, --find-links)")
            if sys.version_info >= (3, 13):  # pip runs the unpatched setup.py to read its metadata: KeyError
                raise SystemExit("Python 3.13 cannot download mmcv-full's sdist (its setup.py fails there before "
                                 "rotld can patch it): put mmcv-full-1.7.2.tar.gz in a wheel folder (ROTLD_WHEELS, "
                                 "--find-links), e.g. python3.12 -m pip download --no-deps --no-binary :all: "
                                 "mmcv-full==1.7.2 -d DIR")
            run([str(python), "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(tmpdir),
                 MMCV_PIN])
            sdist = next(tmpdir.glob("mmcv*full-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            try:
                tar.extractall(tmpdir, filter="data")
            except TypeError:  # Python without tarfile extraction filters
                tar.extractall(tmpdir)
        src = next(p for p in tmpdir.iterdir() if p.is_dir() and p.name.replace("_", "-").startswith("mmcv-full-"))
        setup_py = src / "setup.py"
        setup_py.write_text(patch_mmcv_setup(setup_py.read_text(), cxx20))
        env = dict(os.environ, MMCV_WITH_OPS="1", MAX_JOBS=os.environ.get("MAX_JOBS", str(os.cpu_count() or 1)), **cuda)
        if cuda:
            log(f"building mmcv-full 1.7.2 with CUDA ops for sm {cuda['TORCH_CUDA_ARCH_LIST']} "
                f"({env['MAX_JOBS']} jobs; about 4 minutes on 16 cores)")
        else:
            log("building mmcv-full 1.7.2 ops: this takes about 45 minutes on 2 cores (once per machine)")
        started = time.time()
        run(
            [
                str(python),
                "-m",
                "pip",
                "wheel",
                "-v",
                "--no-build-isolation",
                "--no-deps",
                "-w",
                str(tmpdir / "dist"),
                ".",
            ],
            env=env,
            cwd=src,
        )
        built = next((tmpdir / "dist").glob("mmcv_full-*.whl"))
        shutil.copy2(built, wheelhouse / built.name)
        log(f"built {built.name} in {time.time() - started:.0f} s; kept in {wheelhouse}")


def _mmcv_ops_work(python: Path, cuda: bool = False) -> bool:
    """mmcv's compiled ops load and run (on the GPU too when `cuda`)."""
    device = "cuda" if cuda else "cpu"
    probe = (
        "import torch, mmcv; from mmcv.ops import nms_rotated, box_iou_rotated;"
        f"b = torch.tensor([[10., 10., 8., 4., 0.3], [10., 10., 8., 4., 0.31]], device='{device}');"
        "assert box_iou_rotated(b, b).shape == (2, 2);"
        "assert len(nms_rotated(b, b.new_tensor([0.9, 0.8]), 0.5)[1]) == 1"
    )
    return subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def build_shared_env(env_dir: Path, engine: bool) -> None:
    marker = env_dir / ".rotld-complete"
    if marker.exists():
        log(f"reusing the environment in {env_dir}")
        return
    with locked(env_dir.with_suffix(".lock")):
        if marker.exists():
            log(f"reusing the environment in {env_dir}")
            return
        log(f"creating the shared environment {env_dir}")
        if not (env_dir / "bin" / "python").exists():
            run([sys.executable, "-m", "venv", str(env_dir)])
        python = env_dir / "bin" / "python"
        constraints = env_dir / "rotld-constraints.txt"
        constraints.write_text("\n".join(CONSTRAINTS) + "\n")
        if engine:
            index = os.environ.get("ROTLD_TORCH_INDEX")
            torch_args = [*TORCH_PINS] + (["--index-url", index] if index else [])
            log("installing torch + torchvision (a matched pair: mmcv's runner imports torchvision)")
            pip(python, torch_args, constraints)
            pip(python, BUILD_PINS, constraints)
            pip(python, MMCV_DEPS, constraints)
            install_mmcv(python, constraints)
            pip(python, ENGINE_DEPS, constraints)
            pip(python, ["--no-deps", *ENGINE_PINS], constraints)
        pip(python, [*BASE_PINS, *DEV_PINS, *DEPLOY_PINS, *GEO_PINS], constraints)
        marker.write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
        log("shared environment complete")


def venv_python_version(venv: Path) -> str | None:
    """'3.11' for a venv made by Python 3.11 (its pyvenv.cfg), None when there is none."""
    try:
        text = (venv / "pyvenv.cfg").read_text()
    except OSError:
        return None
    match = re.search(r"^version(?:_info)?\s*=\s*(\d+\.\d+)", text, re.M)
    return match.group(1) if match else None


def check_venv_python(venv: Path) -> None:
    """Refuse, in one line, to point a venv of another Python at this Python's environment."""
    made_by, this = venv_python_version(venv), f"{sys.version_info.major}.{sys.version_info.minor}"
    if made_by is not None and made_by != this:
        raise SystemExit(f"[rotld-setup] error: {venv} was made with Python {made_by}, this is Python {this}: "
                         f"remove it (make clean) or use another one (make VENV=.venv-py{this.replace('.', '')} ...)")


def link_local_venv(venv: Path, env_dir: Path, editable: bool) -> None:
    """A per-checkout venv that sees the shared environment's packages through a .pth file."""
    python = venv / "bin" / "python"
    if not python.exists():
        run([sys.executable, "-m", "venv", str(venv)])
    purelib = site_packages(python)
    shared = site_packages(env_dir / "bin" / "python")
    (purelib / "_rotld_shared_env.pth").write_text(str(shared) + "\n")
    if editable:
        run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "--no-deps",
                "--no-build-isolation",
                "-e",
                str(REPO_ROOT),
            ]
        )
    log(f"ready: {venv} (shared packages from {env_dir})")


# --system-torch: what a machine with its own torch may lack (distribution names; the engine's three
# are installed without their declared dependencies, as in the shared environment). numpy and OpenCV
# are only installed when absent, within the tested majors, and the kept versions are pinned meanwhile.
SYSTEM_TORCH_NEEDS = [
    "addict", "yapf==0.40.1", "importlib-metadata", "platformdirs", "tomli", "terminaltables", "pycocotools",
    "shapely>=2.0", "typer>=0.12", "rich>=13", "pyyaml>=6", "Pillow>=9", "matplotlib>=3.7", "scipy", "six",
    "sympy", "numpy>=1.23,<3", "opencv-python-headless>=4.5,<6", "packaging", "setuptools>=77.0.3,<81", "wheel",
    "ninja", "pytest>=7", "ruff>=0.6", "onnxruntime", "onnx", *GEO_PINS,
]
ENGINE_NO_DEPS = [*ENGINE_PINS]
# opencv and numpy of the machine are kept; these may be satisfied by any installed distribution.
SATISFIED_BY = {"opencv-python-headless": ("opencv-python-headless", "opencv-python", "opencv-contrib-python",
                                            "opencv-contrib-python-headless")}
ALLOW_UNTESTED = "--allow-untested"
# The machine's versions, read by importing them in its interpreter (what rotld will import, not metadata).
_VERSIONS_PROBE = """
import importlib, json, sys
import torch, torchvision
from torchvision.ops import nms
nms(torch.tensor([[0., 0., 1., 1.]]), torch.tensor([1.]), 0.5)
found = {"Python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__}
for name, module in (("numpy", "numpy"), ("OpenCV", "cv2")):
    try:
        found[name] = importlib.import_module(module).__version__
    except ModuleNotFoundError:
        found[name] = None
print(json.dumps(found))
"""


def check_python(version: str, allow_untested: bool) -> None:
    """Refuse, in one line, a Python the suites did not run on (the shared environment's pins may not even exist)."""
    if is_tested("Python", version):
        return
    message = (f"Python {version} ({sys.executable}) is not supported: rotld is tested on Python "
               f"{range_label('Python')}; run with one of those, e.g. `make PYTHON=python3.12 setup`")
    if not allow_untested:
        raise SystemExit(f"[rotld-setup] error: {message} (or pass {ALLOW_UNTESTED}; with make: "
                         f"BOOTSTRAP_ARGS={ALLOW_UNTESTED})")
    log(f"warning: {message}; going on ({ALLOW_UNTESTED})")


def system_versions(python: str) -> dict[str, str | None]:
    """torch, torchvision (checked to be a matched pair), numpy and OpenCV (None when absent) of `python`."""
    import json

    out = subprocess.run([python, "-c", _VERSIONS_PROBE], capture_output=True, text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["torch/torchvision do not import"])[-1]
        raise SystemExit(f"--system-torch: {python} has no working torch + torchvision pair ({last})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_kept_versions(versions: dict[str, str | None], allow_untested: bool) -> str:
    """The line reporting what --system-torch keeps; refuses (one line naming the package) an untested one."""
    for name in ("torch", "torchvision", "numpy", "OpenCV"):
        version = versions.get(name)
        if version is None or is_tested(name, version):
            continue
        message = f"--system-torch: {name} {version} is outside the tested range {range_label(name)}"
        if not allow_untested:
            raise SystemExit(f"[rotld-setup] error: {message}; pass {ALLOW_UNTESTED} to use it anyway")
        log(f"warning: {message}; going on ({ALLOW_UNTESTED})")
    kept = ", ".join(f"{name} {versions[name]}" for name in ("torch", "torchvision", "numpy", "OpenCV")
                     if versions.get(name))
    absent = [name for name in ("numpy", "OpenCV") if not versions.get(name)]
    return f"--system-torch: keeping {kept}" + (f" (installing {' and '.join(absent)})" if absent else "")


def kept_pins(versions: dict[str, str | None]) -> list[str]:
    """Constraints that keep the machine's torch, torchvision and numpy exactly as they are while pip resolves."""
    return [f"{name}=={versions[name]}" for name in ("torch", "torchvision", "numpy") if versions.get(name)]


def missing_distributions(python: Path, requirements: list[str]) -> list[str]:
    """The requirements not installed (at any version satisfying a `==` pin) in `python`'s environment."""
    probe = (
        "import sys, importlib.metadata as md\n"
        "for name in sys.argv[1:]:\n"
        "    try: print(name, md.version(name))\n"
        "    except md.PackageNotFoundError: print(name, '-')\n"
    )
    names = {re.split(r"[<>=!\[]", req)[0]: req for req in requirements}
    candidates = sorted({alt for name in names for alt in SATISFIED_BY.get(name, (name,))})
    out = subprocess.run([str(python), "-c", probe, *candidates], check=True, capture_output=True, text=True).stdout
    installed = {name: version for name, version in (line.split() for line in out.splitlines()) if version != "-"}
    missing = []
    for name, req in names.items():
        versions = [installed[alt] for alt in SATISFIED_BY.get(name, (name,)) if alt in installed]
        pin = req.split("==", 1)[1] if "==" in req else None
        if not versions or (pin is not None and pin not in versions):
            missing.append(req)
    return missing


def setup_system_torch(venv: Path, offline: bool, allow_untested: bool = False) -> None:
    """The checkout's venv on this interpreter's torch: install only what is missing, build mmcv-full for it."""
    versions = system_versions(sys.executable)
    log(f"{check_kept_versions(versions, allow_untested)} of {sys.executable}")
    python = venv / "bin" / "python"
    if not python.exists():
        run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
    elif "include-system-site-packages = true" not in (venv / "pyvenv.cfg").read_text():
        raise SystemExit(f"{venv} exists without --system-site-packages: remove it or pass another --venv")
    if sys.prefix != sys.base_prefix:  # torch lives in a venv: --system-site-packages alone would not see it
        import sysconfig

        own = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
        (site_packages(python) / "_rotld_system_torch.pth").write_text("\n".join(sorted(own)) + "\n")
    keep = venv / "rotld-kept-versions.txt"
    keep.write_text("\n".join(kept_pins(versions)) + "\n")
    index = ["--no-index", *wheel_sources()] if offline else wheel_sources()
    missing = missing_distributions(python, SYSTEM_TORCH_NEEDS)
    if missing:
        # Offline folders hold exactly the missing wheels: no resolver run that could touch torch or numpy.
        pip(python, [*index, *(["--no-deps"] if offline else []), *missing], keep)
    install_mmcv(python, keep, offline=offline)
    engine = missing_distributions(python, ENGINE_NO_DEPS)
    if engine:
        pip(python, [*index, "--no-deps", *engine], keep)
    run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps",
         "--no-build-isolation", "-e", str(REPO_ROOT)])
    log(f"ready: {venv} (this machine's torch; engine packages in the venv)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rotld_cli.bootstrap", description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default=str(REPO_ROOT / ".venv"), help="the checkout's venv (default: .venv)")
    parser.add_argument("--no-engine", action="store_true", help="skip torch/mmcv/mmdet/mmrotate")
    parser.add_argument("--print-key", action="store_true", help="print the cache key and exit")
    parser.add_argument("--system-torch", action="store_true",
                        help="keep this interpreter's torch/torchvision/numpy (GPU machines, containers); "
                             "build mmcv-full against them")
    parser.add_argument("--offline", action="store_true", help="install from local wheel folders only")
    parser.add_argument("--find-links", action="append", default=[], metavar="DIR",
                        help="a local folder of wheels (and mmcv-full's sdist) to install from; repeatable")
    parser.add_argument(ALLOW_UNTESTED, action="store_true",
                        help="go on with a Python, or (--system-torch) a torch/torchvision/numpy/OpenCV, outside "
                             "the tested ranges: " + "; ".join(f"{n} {range_label(n)}" for n in TESTED))
    args = parser.parse_args(argv)
    EXTRA_WHEEL_DIRS[:] = [Path(p) for p in args.find_links]
    if args.print_key:
        print(env_key(not args.no_engine))
        return 0
    check_python(sys.version.split()[0], args.allow_untested)
    check_venv_python(Path(args.venv))
    if args.system_torch:
        try:
            setup_system_torch(Path(args.venv), args.offline, args.allow_untested)
        except subprocess.CalledProcessError as exc:
            log(f"failed: {' '.join(exc.cmd)} exited with {exc.returncode}")
            return 1
        return 0
    engine = not args.no_engine
    key = env_key(engine)
    env_dir = cache_root() / "envs" / key
    try:
        build_shared_env(env_dir, engine)
        link_local_venv(Path(args.venv), env_dir, editable=True)
    except subprocess.CalledProcessError as exc:
        log(f"failed: {' '.join(exc.cmd)} exited with {exc.returncode}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
