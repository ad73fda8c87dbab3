"""`rotld prepare-dota` end to end on the real DOTA samples: pixels, annotations, resume, bad input."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from shapely.geometry import Polygon
from shapely.geometry import box as shapely_box

from rotld_cli.cli import main

PADDING = (104, 116, 124)
# Hand-computed window starts (x list, y list) per image: see test_split_geometry.axis_starts.
STARTS_512 = {"P0706": ([0, 412, 599], [0, 412, 670]), "P1888": ([0, 200], [0, 45])}
STARTS_1024 = {"P0706": ([0, 87], [0, 158]), "P1888": ([0], [0])}


def rotld(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    """Run the CLI in-process like the console script; return (exit code, stdout, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def copy_sample(dota_samples: Path, dest: Path, image_id: str, new_id: str | None = None, label: bool = True) -> None:
    new_id = new_id or image_id
    (dest / "images").mkdir(parents=True, exist_ok=True)
    shutil.copy(dota_samples / "images" / f"{image_id}.png", dest / "images" / f"{new_id}.png")
    if label:
        (dest / "labelTxt").mkdir(exist_ok=True)
        shutil.copy(dota_samples / "labelTxt" / f"{image_id}.txt", dest / "labelTxt" / f"{new_id}.txt")


@pytest.fixture(scope="module")
def sample_src(tmp_path_factory: pytest.TempPathFactory, dota_samples: Path) -> Path:
    src = tmp_path_factory.mktemp("src")
    for image_id in ("P0706", "P1888"):
        copy_sample(dota_samples, src, image_id)
    return src


@pytest.fixture(scope="module")
def split_512(tmp_path_factory: pytest.TempPathFactory, sample_src: Path) -> Path:
    out = tmp_path_factory.mktemp("out") / "split512"
    with pytest.raises(SystemExit) as exc:
        main(["prepare-dota", str(sample_src), str(out), "--sizes", "512", "--gaps", "100", "--workers", "2", "--json"])
    assert exc.value.code == 0
    return out


@pytest.fixture(scope="module")
def split_ss(tmp_path_factory: pytest.TempPathFactory, sample_src: Path) -> Path:
    out = tmp_path_factory.mktemp("out") / "split_ss"
    with pytest.raises(SystemExit) as exc:
        main(["prepare-dota", str(sample_src), str(out), "--workers", "1", "--json"])
    assert exc.value.code == 0
    return out


def windows_from(
    starts: dict[str, tuple[list[int], list[int]]], size: int
) -> dict[str, list[tuple[int, int, int, int]]]:
    return {i: [(x, y, x + size, y + size) for x in xs for y in ys] for i, (xs, ys) in starts.items()}


def expected_annfile(label_path: Path, window: tuple[int, int, int, int], iof_thr: float = 0.7) -> str:
    """The annfile img_split writes, recomputed here with shapely pair by pair (float32 coords,
    float32 area as img_split stores them; polygons shifted, not clipped; iof < 1 -> '2')."""
    x0, y0, x1, y1 = window
    win = shapely_box(x0, y0, x1, y1)
    lines = []
    for raw in label_path.read_text().splitlines():
        tokens = raw.split()
        if len(tokens) < 9:
            continue
        coords = np.array([float(t) for t in tokens[:8]], dtype=np.float32)
        poly = Polygon(coords.astype(np.float64).reshape(4, 2))
        iof = poly.intersection(win).area / max(float(np.float32(poly.area)), 1e-6)
        if iof >= iof_thr:
            shift = np.array([x0, y0] * 4, dtype=np.float32)
            text = " ".join(str(v) for v in coords - shift)
            lines.append(f"{text} {tokens[8]} {'2' if iof < 1 else tokens[9]}\n")
    return "".join(lines)


def tree_digest(out: Path) -> dict[str, str]:
    """sha1 of every patch and annfile (the dataset itself, not the manifest or markers)."""
    return {
        str(p.relative_to(out)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.parent.name in ("images", "annfiles")
    }


# --------------------------------------------------------------------------------------------- real samples


@pytest.mark.parametrize(
    ("fixture", "starts", "size"), [("split_512", STARTS_512, 512), ("split_ss", STARTS_1024, 1024)]
)
def test_patch_names_are_the_hand_computed_windows(request, fixture, starts, size) -> None:
    out = request.getfixturevalue(fixture)
    expected = sorted(
        f"{i}__{size}__{x}___{y}" for i, wins in windows_from(starts, size).items() for x, y, _, _ in wins
    )
    assert sorted(p.stem for p in (out / "images").iterdir()) == expected
    assert sorted(p.stem for p in (out / "annfiles").iterdir()) == expected


@pytest.mark.parametrize(
    ("fixture", "starts", "size"), [("split_512", STARTS_512, 512), ("split_ss", STARTS_1024, 1024)]
)
def test_every_patch_is_pixel_identical_to_the_source_crop(request, dota_samples, fixture, starts, size) -> None:
    out = request.getfixturevalue(fixture)
    for image_id, windows in windows_from(starts, size).items():
        source = cv2.imread(str(dota_samples / "images" / f"{image_id}.png"))
        for x0, y0, x1, y1 in windows:
            patch = cv2.imread(str(out / "images" / f"{image_id}__{size}__{x0}___{y0}.png"), cv2.IMREAD_UNCHANGED)
            assert patch.shape == (size, size, 3)
            crop = source[y0:y1, x0:x1]
            np.testing.assert_array_equal(patch[: crop.shape[0], : crop.shape[1]], crop)
            # Beyond the image (P1888 in a 1024 window): the padding value, BGR.
            assert (patch[crop.shape[0] :] == PADDING).all() and (patch[:, crop.shape[1] :] == PADDING).all()
    if size == 1024:  # P1888 (712x557) in one 1024 window: padded right and below
        p1888 = cv2.imread(str(out / "images" / "P1888__1024__0___0.png"))
        assert p1888.shape == (1024, 1024, 3)
        assert (p1888[557:] == PADDING).all()
        assert (p1888[:, 712:] == PADDING).all()


@pytest.mark.parametrize(
    ("fixture", "starts", "size"), [("split_512", STARTS_512, 512), ("split_ss", STARTS_1024, 1024)]
)
def test_every_object_is_in_exactly_the_patches_its_iof_says(request, dota_samples, fixture, starts, size) -> None:
    out = request.getfixturevalue(fixture)
    for image_id, windows in windows_from(starts, size).items():
        for window in windows:
            name = f"{image_id}__{size}__{window[0]}___{window[1]}"
            written = (out / "annfiles" / f"{name}.txt").read_text()
            assert written == expected_annfile(dota_samples / "labelTxt" / f"{image_id}.txt", window), name


def test_manifest_counts_what_was_written(split_512: Path, dota_samples: Path) -> None:
    manifest = json.loads((split_512 / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["splits"]["."]["problems"] == []
    assert manifest["params"]["windows"] == [[512, 100]] and manifest["params"]["padding_value"] == list(PADDING)
    total = manifest["total"]
    lines = [line.split() for p in (split_512 / "annfiles").iterdir() for line in p.read_text().splitlines()]
    source_objects = sum(
        len(
            [
                line
                for line in (dota_samples / "labelTxt" / f"{i}.txt").read_text().splitlines()
                if len(line.split()) >= 9
            ]
        )
        for i in ("P0706", "P1888")
    )
    assert total["images"] == 2 and total["patches"] == 9 + 4
    assert sum(total["objects"].values()) == source_objects == 536 + 64
    assert sum(total["annotations"].values()) == len(lines)
    assert sum(total["truncated"].values()) == sum(1 for t in lines if t[9] == "2")
    assert total["annotations"]["ship"] == sum(1 for t in lines if t[8] == "ship")
    assert total["repaired"] == 0 and total["unlabelled"] == 0
    # dropped: source objects whose iof reaches 0.7 in no window, recomputed pair by pair
    dropped = 0
    for image_id, windows in windows_from(STARTS_512, 512).items():
        for raw in (dota_samples / "labelTxt" / f"{image_id}.txt").read_text().splitlines():
            if len(raw.split()) >= 9:
                poly = Polygon(np.array(raw.split()[:8], dtype=np.float32).astype(np.float64).reshape(4, 2))
                dropped += all(poly.intersection(shapely_box(*w)).area / poly.area < 0.7 for w in windows)
    assert total["dropped"] == dropped


def test_dropped_and_repaired_counts_on_a_hand_made_label(tmp_path: Path, dota_samples: Path, capsys) -> None:
    src = tmp_path / "src"
    copy_sample(dota_samples, src, "P1888", label=False)
    (src / "labelTxt").mkdir()
    (src / "labelTxt" / "P1888.txt").write_text(
        "imagesource:GoogleEarth\ngsd:0.26\n"
        "0 0 10 10 10 0 0 10 ship 0\n"  # bow-tie: repaired, inside -> kept
        "5 5 5 5 5 5 5 5 ship 1\n"  # a point: repaired, area 0 -> dropped
        "1020 0 1030 0 1030 10 1020 10 plane 0\n"  # 40% outside the 1024 window -> dropped
        "1000 0 1030 0 1030 10 1000 10 plane 1\n"  # 80% inside -> kept, truncated
    )
    code, _, err = rotld(capsys, "prepare-dota", src, tmp_path / "out", "--workers", "1", "--json")
    assert code == 0, err
    total = json.loads((tmp_path / "out" / "manifest.json").read_text())["total"]
    assert (total["repaired"], total["dropped"]) == (2, 2)
    assert total["truncated"] == {"plane": 1}
    assert (tmp_path / "out" / "annfiles" / "P1888__1024__0___0.txt").read_text() == (
        "0.0 0.0 10.0 10.0 10.0 0.0 0.0 10.0 ship 0\n1000.0 0.0 1030.0 0.0 1030.0 10.0 1000.0 10.0 plane 2\n"
    )


# --------------------------------------------------------------------------------------------- layouts


def test_dota_root_layout_mirrors_splits_and_test_gets_empty_annfiles(
    tmp_path: Path, dota_samples: Path, capsys
) -> None:
    src = tmp_path / "DOTA"
    copy_sample(dota_samples, src / "train", "P1888")
    copy_sample(dota_samples, src / "val", "P1888")
    copy_sample(dota_samples, src / "test", "P1888", label=False)
    out = tmp_path / "split"
    code, _, err = rotld(capsys, "prepare-dota", src, out, "--splits", "train,test", "--workers", "1")
    assert code == 0, err
    assert (out / "train" / "images" / "P1888__1024__0___0.png").is_file()
    assert (out / "train" / "annfiles" / "P1888__1024__0___0.txt").stat().st_size > 0
    assert (out / "test" / "annfiles" / "P1888__1024__0___0.txt").stat().st_size == 0
    assert not (out / "val").exists()
    code, _, err = rotld(capsys, "prepare-dota", src, out, "--splits", "val", "--workers", "1")
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["splits"]) == ["test", "train", "val"] and manifest["total"]["images"] == 3
    assert tree_digest(out / "train") == tree_digest(out / "val")


def test_json_summary(sample_src: Path, tmp_path: Path, capsys) -> None:
    code, out, _ = rotld(
        capsys,
        "prepare-dota",
        sample_src,
        tmp_path / "o",
        "--sizes",
        "1024",
        "--gaps",
        "500",
        "--rates",
        "1.0",
        "--rates",
        "2",
        "--workers",
        "1",
        "--json",
    )
    assert code == 0
    summary = json.loads(out)
    # rate 1, 1024/500: P0706 x [0,87] y [0,158]; P1888's one window (ratio 0.38) is dropped this
    # time, since the other windows of the image pass 0.6 and the fallback does not apply.
    # rate 2, 512/250 (step 262): P0706 x [0,262,524,599] y [0,262,524,670]; P1888 x [0,200] y [0,45].
    assert summary["params"]["windows"] == [[1024, 500], [512, 250]]
    assert summary["total"]["patches"] == (4 + 16) + (0 + 4)
    assert sorted(p.name for p in (tmp_path / "o" / "images").glob("P1888*")) == [
        "P1888__512__0___0.png",
        "P1888__512__0___45.png",
        "P1888__512__200___0.png",
        "P1888__512__200___45.png",
    ]


def test_no_padding_and_an_image_without_label_file(tmp_path: Path, dota_samples: Path, capsys) -> None:
    src = tmp_path / "src"
    copy_sample(dota_samples, src, "P1888")
    copy_sample(dota_samples, src, "P1888", "NOLABEL", label=False)
    code, _, err = rotld(capsys, "prepare-dota", src, tmp_path / "out", "--no-padding", "--workers", "1", "--json")
    assert code == 0, err
    patch = cv2.imread(str(tmp_path / "out" / "images" / "P1888__1024__0___0.png"))
    np.testing.assert_array_equal(patch, cv2.imread(str(src / "images" / "P1888.png")))  # 712x557, not padded
    assert (tmp_path / "out" / "annfiles" / "NOLABEL__1024__0___0.txt").stat().st_size == 0
    total = json.loads((tmp_path / "out" / "manifest.json").read_text())["total"]
    assert (total["images"], total["unlabelled"], total["empty_patches"]) == (2, 1, 1)


def test_a_second_run_on_the_same_out_is_refused_while_one_holds_it(sample_src, tmp_path, capsys) -> None:
    import fcntl

    out = tmp_path / "busy"
    (out / ".rotld-prepare").mkdir(parents=True)
    with open(out / ".rotld-prepare" / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, _, err = rotld(capsys, "prepare-dota", sample_src, out)
    assert code == 1 and "another `rotld prepare-dota` is writing here" in err
    assert not (out / "images").exists()


# --------------------------------------------------------------------------------------------- resume


def test_resume_redoes_only_unfinished_images_and_matches_a_clean_run(sample_src, split_512, tmp_path, capsys) -> None:
    out = tmp_path / "resumed"
    shutil.copytree(split_512, out)
    # What a kill in the middle of P0706 leaves: no marker, some patches missing, temp files.
    (out / ".rotld-prepare" / "done" / "P0706.json").unlink()
    (out / "images" / "P0706__512__412___412.png").unlink()
    (out / "annfiles" / "P0706__512__599___670.txt").unlink()
    (out / "images" / "P0706__512__0___0.png").write_bytes(b"stale")  # redone, so replaced
    (out / "images" / ".P0706__512__0___412.png.k2j3.png").write_bytes(b"half")
    (out / "annfiles" / ".P0706__512__0___412.txt.x8y9.txt").write_bytes(b"half")
    p1888_before = (out / "images" / "P1888__512__0___0.png").stat().st_mtime_ns

    code, stdout, err = rotld(
        capsys, "prepare-dota", sample_src, out, "--sizes", "512", "--gaps", "100", "--workers", "1"
    )
    assert code == 0, err
    assert "resuming: 1 image(s)" in stdout
    assert tree_digest(out) == tree_digest(split_512)
    assert not [p for p in out.rglob(".P*")]  # temp files cleaned
    assert (out / "images" / "P1888__512__0___0.png").stat().st_mtime_ns == p1888_before  # not redone
    old, new = (json.loads((d / "manifest.json").read_text()) for d in (split_512, out))
    assert new["total"] == old["total"] and new["complete"] is True


def test_resume_after_a_real_kill(dota_samples: Path, tmp_path: Path, repo_root: Path, capsys) -> None:
    src = tmp_path / "src"
    for i in range(4):
        copy_sample(dota_samples, src, "P0706", f"K{i}")
    args = ["prepare-dota", str(src), "--sizes", "256", "--gaps", "50", "--workers", "1", "--json"]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rotld_cli", *args[:2], str(killed), *args[2:]],
        cwd=repo_root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    markers = killed / ".rotld-prepare" / "done"
    deadline = time.time() + 60
    while not (markers.is_dir() and any(markers.glob("*.json"))) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list(markers.glob("*.json"))) < 4  # it really stopped part-way

    assert rotld(capsys, *args[:2], killed, *args[2:])[0] == 0
    assert rotld(capsys, *args[:2], clean, *args[2:])[0] == 0
    assert tree_digest(killed) == tree_digest(clean)
    assert len(tree_digest(clean)) == 4 * 2 * 36
    assert not list(killed.rglob(".K*"))


def test_changed_parameters_need_overwrite(sample_src: Path, split_512: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    shutil.copytree(split_512, out)
    code, _, err = rotld(capsys, "prepare-dota", sample_src, out, "--sizes", "256", "--gaps", "50")
    assert code == 2
    assert f"{out / 'manifest.json'}: made with other parameters" in err and "sizes [512] -> [256]" in err
    code, _, err = rotld(
        capsys, "prepare-dota", sample_src, out, "--sizes", "256", "--gaps", "50", "--overwrite", "--workers", "1"
    )
    assert code == 0, err
    assert not list((out / "images").glob("*__512__*")) and len(list((out / "images").glob("*__256__*"))) > 13


def test_refuses_a_foreign_non_empty_out(sample_src: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    code, _, err = rotld(capsys, "prepare-dota", sample_src, out)
    assert code == 2 and "is not empty and has no manifest.json" in err
    assert (out / "notes.txt").read_text() == "precious"


# --------------------------------------------------------------------------------------------- bad input


def _malformed(src: Path) -> tuple[Path, int]:
    path = src / "labelTxt" / "BAD.txt"
    lines = [*path.read_text().splitlines(), "1 2 3 ship"]
    path.write_text("\n".join(lines) + "\n")
    return path, len(lines)


def _unknown_class(src: Path) -> tuple[Path, int]:
    path = src / "labelTxt" / "BAD.txt"
    lines = [*path.read_text().splitlines(), "1 1 5 1 5 5 1 5 spaceship 0"]
    path.write_text("\n".join(lines) + "\n")
    return path, len(lines)


def _unreadable_image(src: Path) -> tuple[Path, None]:
    (src / "images" / "BAD.png").write_bytes(b"this is not an image")
    return src / "images" / "BAD.png", None


def _truncated_image(src: Path) -> tuple[Path, None]:
    path = src / "images" / "BAD.png"
    path.write_bytes(path.read_bytes()[:200_000])
    return path, None


def _label_without_image(src: Path) -> tuple[Path, None]:
    (src / "images" / "BAD.png").unlink()
    return src / "labelTxt" / "BAD.txt", None


@pytest.mark.parametrize(
    ("make_bad", "message"),
    [
        (_malformed, "expected 'x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]', got '1 2 3 ship'"),
        (_unknown_class, "unknown class 'spaceship'"),
        (_unreadable_image, "cannot decode image"),
        (_truncated_image, "truncated PNG image"),
        (_label_without_image, "label file without an image"),
    ],
)
def test_bad_input_is_one_line_and_the_other_images_are_split(
    make_bad, message, dota_samples, tmp_path, capsys
) -> None:
    src = tmp_path / "src"
    copy_sample(dota_samples, src, "P1888")
    copy_sample(dota_samples, src, "P1888", "BAD")
    bad_file, line = make_bad(src)
    out = tmp_path / "out"
    code, stdout, err = rotld(capsys, "prepare-dota", src, out, "--workers", "2")
    assert code == 1
    where = f"{bad_file}:{line}:" if line else f"{bad_file}:"
    warnings = [w for w in err.splitlines() if w.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {where}") and message in warnings[0]
    assert err.splitlines()[-1].startswith("error: 1 problem(s) in the input")
    assert "Traceback" not in err
    assert "problems (these inputs were skipped)" in stdout
    assert (out / "images" / "P1888__1024__0___0.png").is_file()  # the good image was split
    assert (out / "annfiles" / "P1888__1024__0___0.txt").stat().st_size > 0
    assert not list((out / "images").glob("BAD*")) and not list((out / "annfiles").glob("BAD*"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False and len(manifest["splits"]["."]["problems"]) == 1

    # Fixed input: the bad image is split on the next run, the good one is not redone.
    copy_sample(dota_samples, src, "P1888", "BAD")
    code, stdout, err = rotld(capsys, "prepare-dota", src, out, "--workers", "1")
    assert code == 0, err
    assert "resuming: 1 image(s)" in stdout
    assert (out / "annfiles" / "BAD__1024__0___0.txt").read_text() == (
        out / "annfiles" / "P1888__1024__0___0.txt"
    ).read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sizes", "512", "--gaps", "600"], "need 0 <= gap < size"),
        (["--sizes", "512,1024", "--gaps", "100,200", "--rates", "0.5,1"], "not both"),
        (["--sizes", "512,1024", "--gaps", "100"], "same number of values"),
        (["--sizes", "big"], "--sizes: expected int values"),
        (["--ext", ".gif"], "--ext must be one of"),
        (["--padding-value", "1,2"], "--padding-value"),
        (["--dota-version", "v3"], "--dota-version"),
        (["--preset", "xl"], "--preset"),
        (["--workers", "0"], "--workers"),
        (["--iof-thr", "1.5"], "--iof-thr"),
        (["--splits", "train"], "single split folder"),
    ],
)
def test_usage_errors(sample_src: Path, tmp_path: Path, capsys, args: list[str], message: str) -> None:
    code, _, err = rotld(capsys, "prepare-dota", sample_src, tmp_path / "o", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_refuses_to_write_into_the_source(sample_src: Path, capsys) -> None:
    code, _, err = rotld(capsys, "prepare-dota", sample_src, sample_src, "--overwrite")
    assert code == 2 and "would write the patches into the source images" in err
    assert sorted(p.name for p in (sample_src / "images").iterdir()) == ["P0706.png", "P1888.png"]


def test_source_without_images(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = rotld(capsys, "prepare-dota", tmp_path / "empty", tmp_path / "o")
    assert code == 2 and "expected images/ (one split) or train/, val/, test/" in err


@pytest.mark.slow
def test_benchmark_quick_runs(capsys) -> None:
    from bench.split import main as bench_main

    bench_main(["--quick"])  # it checks itself that prepare-dota and the floor write the same patches
    out = capsys.readouterr().out
    assert re.search(r"ratio prepare / floor, wall: \d+\.\d\dx", out)  # printed, never asserted on
