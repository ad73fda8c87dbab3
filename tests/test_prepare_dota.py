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
from collections import Counter
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


def _unreadable_image(src: Path) -> Path:
    (src / "images" / "BAD.png").write_bytes(b"this is not an image")
    return src / "images" / "BAD.png"


def _empty_image(src: Path) -> Path:
    (src / "images" / "BAD.png").write_bytes(b"")
    return src / "images" / "BAD.png"


def _truncated_image(src: Path) -> Path:
    path = src / "images" / "BAD.png"
    path.write_bytes(path.read_bytes()[:200_000])
    return path


def _label_without_image(src: Path) -> Path:
    (src / "images" / "BAD.png").unlink()
    return src / "labelTxt" / "BAD.txt"


def _unreadable_label(src: Path) -> Path:
    path = src / "labelTxt" / "BAD.txt"
    path.write_bytes(b"\xff\xfe 1 2 3")
    return path


def _folder_named_like_an_image(src: Path) -> Path:
    (src / "images" / "BAD.png").unlink()
    (src / "labelTxt" / "BAD.txt").unlink()
    (src / "images" / "DIR.png").mkdir()
    return src / "images" / "DIR.png"


@pytest.mark.parametrize(
    ("make_bad", "message"),
    [
        (_unreadable_image, "cannot decode image"),
        (_empty_image, "empty image file (0 bytes)"),
        (_truncated_image, "truncated PNG image"),
        (_label_without_image, "label file without an image"),
        (_unreadable_label, "not a UTF-8 text file"),
        (_folder_named_like_an_image, "not a readable file"),
    ],
)
def test_bad_input_is_one_line_and_the_other_images_are_split(
    make_bad, message, dota_samples, tmp_path, capsys
) -> None:
    src = tmp_path / "src"
    copy_sample(dota_samples, src, "P1888")
    copy_sample(dota_samples, src, "P1888", "BAD")
    bad_file = make_bad(src)
    out = tmp_path / "out"
    code, stdout, err = rotld(capsys, "prepare-dota", src, out, "--workers", "2")
    assert code == 1
    warnings = [w for w in err.splitlines() if w.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {bad_file}:") and message in warnings[0]
    assert str(bad_file) not in stdout  # each problem is reported once, not again in the summary
    assert err.splitlines()[-1].startswith("error: 1 problem(s) in the input")
    assert "Traceback" not in err and "internal error" not in err
    assert "prepare-dota ->" in stdout  # the summary is still printed
    assert (out / "images" / "P1888__1024__0___0.png").is_file()  # the good image was split
    assert (out / "annfiles" / "P1888__1024__0___0.txt").stat().st_size > 0
    assert not list((out / "images").glob("BAD*")) and not list((out / "annfiles").glob("BAD*"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["splits"]["."]["problems"] == [warnings[0][len("warning: "):]]
    assert manifest["total"]["images"] == 1

    # A rerun with the input unchanged reports the same line again and resumes the good image.
    code, stdout, err2 = rotld(capsys, "prepare-dota", src, out, "--workers", "1")
    assert code == 1 and [w for w in err2.splitlines() if w.startswith("warning:")] == warnings
    assert "resuming: 1 image(s)" in stdout

    # Fixed input: the bad image is split on the next run, the good one is not redone.
    if bad_file.is_dir():
        bad_file.rmdir()
    copy_sample(dota_samples, src, "P1888", "BAD")
    code, stdout, err = rotld(capsys, "prepare-dota", src, out, "--workers", "1")
    assert code == 0, err
    assert "resuming: 1 image(s)" in stdout
    assert (out / "annfiles" / "BAD__1024__0___0.txt").read_text() == (
        out / "annfiles" / "P1888__1024__0___0.txt"
    ).read_text()


def test_an_empty_image_still_gives_the_json_summary_and_a_complete_manifest(dota_samples, tmp_path, capsys) -> None:
    src = tmp_path / "src"
    copy_sample(dota_samples, src, "P0706")
    (src / "images" / "Z.png").write_bytes(b"")  # sorts last: the images before it must not be lost
    copy_sample(dota_samples, src, "P1888")
    out = tmp_path / "out"
    code, stdout, err = rotld(capsys, "prepare-dota", src, out, "--workers", "1", "--json")
    assert code == 1 and "internal error" not in err
    summary = json.loads(stdout)
    assert summary["problems"] == [f"{src / 'images' / 'Z.png'}: empty image file (0 bytes)"]
    assert summary["total"]["images"] == 2 and summary["total"]["patches"] == 4 + 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["total"] == summary["total"] and manifest["splits"]["."]["problems"] == summary["problems"]
    assert sorted(p.stem for p in (out / "images").iterdir()) == sorted(
        [f"P0706__1024__{x}___{y}" for x in (0, 87) for y in (0, 158)] + ["P1888__1024__0___0"]
    )


# ------------------------------------------------------------------------------------- image names


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("my__img", "contains '__', the separator of patch names"),
        ("my img", "contains whitespace"),
        ("my\timg", "contains whitespace"),
        ("img_", "ends with '_'"),
        ("x" * 191, "is longer than 190 bytes"),
    ],
)
def test_image_names_that_cannot_round_trip_are_refused_one_by_one(
    name, reason, dota_samples, tmp_path, capsys
) -> None:
    src = tmp_path / "src"
    copy_sample(dota_samples, src, "P1888")
    copy_sample(dota_samples, src, "P1888", name)
    out = tmp_path / "out"
    code, _, err = rotld(capsys, "prepare-dota", src, out, "--workers", "1")
    assert code == 1
    shown = str(src / "images" / f"{name}.png").replace("\t", "\\t")  # a tab is shown escaped: one line
    warnings = [w for w in err.splitlines() if w.startswith("warning:")]
    assert len(warnings) == 1, err  # once: its label file is not reported as a label without an image
    assert warnings[0].startswith(f"warning: {shown}: image name {name!r} {reason}") and "rename it" in warnings[0]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["P1888__1024__0___0.png"]


@pytest.mark.parametrize("name", ["P1888.PNG", "P1888.jpeg", "P1888.tiff"])
def test_an_image_extension_img_split_does_not_read_is_reported(name, dota_samples, tmp_path, capsys) -> None:
    src = tmp_path / "src"
    copy_sample(dota_samples, src, "P0706")
    shutil.copy(dota_samples / "images" / "P1888.png", src / "images" / name)
    code, _, err = rotld(capsys, "prepare-dota", src, tmp_path / "out", "--workers", "1")
    assert code == 1
    suffix = name.split(".")[1]
    assert one_warning(err) == (
        f"warning: {src / 'images' / name}: .{suffix} is not an extension img_split reads "
        "(.jpg .JPG .png .tif .bmp); rename it to split it (skipped)"
    )
    assert {p.name.split("__")[0] for p in (tmp_path / "out" / "images").iterdir()} == {"P0706"}


def test_an_image_name_that_is_not_utf8_is_refused_on_one_line(dota_samples, tmp_path, capsys) -> None:
    import os

    src = tmp_path / "src"
    copy_sample(dota_samples, src, "P1888")
    bad = os.path.join(os.fsencode(src / "images"), b"bad\xff.png")
    shutil.copy(dota_samples / "images" / "P1888.png", bad)
    code, _, err = rotld(capsys, "prepare-dota", src, tmp_path / "out", "--workers", "1")
    assert code == 1
    assert one_warning(err) == (
        f"warning: {src / 'images'}/bad\\udcff.png: image name 'bad\\udcff' contains a control or undecodable "
        "character; rename it (skipped)"
    )
    assert [p.name for p in (tmp_path / "out" / "images").iterdir()] == ["P1888__1024__0___0.png"]


def one_warning(err: str) -> str:
    warnings = [w for w in err.splitlines() if w.startswith("warning:")]
    assert len(warnings) == 1, err
    return warnings[0]


def test_names_that_round_trip_are_split(dota_samples, tmp_path, capsys) -> None:
    """Single underscores, a leading one, and non-ASCII letters all survive `{id}__{size}__{x}___{y}`."""
    from rotld_cli.dota.merge import split_patch_id

    src = tmp_path / "src"
    for name in ("P_1888", "_lead", "Ümlaut-1"):
        copy_sample(dota_samples, src, "P1888", name)
    code, _, err = rotld(capsys, "prepare-dota", src, tmp_path / "out", "--workers", "1")
    assert code == 0, err
    names = sorted(p.stem for p in (tmp_path / "out" / "images").iterdir())
    assert [split_patch_id(n) for n in names] == [(i, 0, 0) for i in sorted(("P_1888", "_lead", "Ümlaut-1"))]


# ------------------------------------------------------------------------------------- stale outputs


def test_a_removed_source_image_takes_its_patches_with_it(dota_samples, tmp_path, capsys) -> None:
    src = tmp_path / "src"
    copy_sample(dota_samples, src, "P0706")
    copy_sample(dota_samples, src, "P1888")
    out = tmp_path / "out"
    assert rotld(capsys, "prepare-dota", src, out, "--sizes", "512", "--gaps", "100", "--workers", "1")[0] == 0
    n_p0706 = len(list((out / "images").glob("P0706__*")))
    assert n_p0706 == 9
    (out / "images" / "mine.png").write_bytes(b"not written by rotld")  # a file rotld never wrote stays
    (src / "images" / "P0706.png").unlink()
    (src / "labelTxt" / "P0706.txt").unlink()

    code, stdout, err = rotld(capsys, "prepare-dota", src, out, "--sizes", "512", "--gaps", "100", "--workers", "1")
    assert code == 0, err
    assert f"removed {n_p0706} patch(es) of images that left or changed" in stdout
    assert sorted(p.name for p in (out / "images").iterdir()) == ["P1888__512__0___0.png", "P1888__512__0___45.png",
                                                                  "P1888__512__200___0.png",
                                                                  "P1888__512__200___45.png", "mine.png"]
    assert not list((out / "annfiles").glob("P0706__*"))
    assert not (out / ".rotld-prepare" / "done" / "P0706.json").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["total"]["images"] == 1 and manifest["total"]["patches"] == 4 and manifest["complete"] is True


def test_an_image_replaced_by_a_smaller_one_leaves_no_stale_patch(dota_samples, tmp_path, capsys) -> None:
    src = tmp_path / "src"
    copy_sample(dota_samples, src, "P0706")
    out = tmp_path / "out"
    args = ["prepare-dota", src, out, "--sizes", "512", "--gaps", "100", "--workers", "1", "--json"]
    assert rotld(capsys, *args)[0] == 0
    shutil.copy(dota_samples / "images" / "P1888.png", src / "images" / "P0706.png")  # 712x557: 4 windows
    shutil.copy(dota_samples / "labelTxt" / "P1888.txt", src / "labelTxt" / "P0706.txt")
    code, stdout, _ = rotld(capsys, *args)
    assert code == 0 and json.loads(stdout)["removed_stale_patches"] == 9
    fresh = tmp_path / "fresh"
    assert rotld(capsys, "prepare-dota", src, fresh, *args[3:])[0] == 0
    assert tree_digest(out) == tree_digest(fresh)


def test_an_image_that_became_unreadable_loses_its_old_patches(dota_samples, tmp_path, capsys) -> None:
    src = tmp_path / "src"
    copy_sample(dota_samples, src, "P1888")
    copy_sample(dota_samples, src, "P1888", "GONE")
    out = tmp_path / "out"
    assert rotld(capsys, "prepare-dota", src, out, "--workers", "1")[0] == 0
    (src / "images" / "GONE.png").write_bytes(b"")
    code, _, err = rotld(capsys, "prepare-dota", src, out, "--workers", "1")
    assert code == 1 and "GONE.png: empty image file (0 bytes)" in err
    assert sorted(p.name for p in (out / "images").iterdir()) == ["P1888__1024__0___0.png"]
    assert json.loads((out / "manifest.json").read_text())["total"]["images"] == 1


# ------------------------------------------------------------------------------------- bad label lines


def _with_bad_lines(src: Path) -> tuple[Path, list[int]]:
    """BAD = P1888 plus three bad lines in the middle and at the end (1-based line numbers returned)."""
    path = src / "labelTxt" / "BAD.txt"
    lines = path.read_text().splitlines()
    lines.insert(5, "1 2 3 ship")
    lines.insert(9, "1 1 5 1 5 5 1 5 spaceship 0")
    lines.append("1 1 5 1 5 5 1 x plane 0")
    path.write_text("\n".join(lines) + "\n")
    return path, [6, 10, len(lines)]


def test_a_bad_label_line_is_skipped_and_counted_and_the_image_keeps_its_objects(dota_samples, tmp_path, capsys):
    src = tmp_path / "src"
    copy_sample(dota_samples, src, "P1888")
    copy_sample(dota_samples, src, "P1888", "BAD")
    label, bad_lines = _with_bad_lines(src)
    out = tmp_path / "out"
    code, stdout, err = rotld(capsys, "prepare-dota", src, out, "--workers", "2", "--json")
    assert code == 1
    warnings = [w for w in err.splitlines() if w.startswith("warning:")]
    assert [w.split(": ", 2)[1] for w in warnings] == [f"{label}:{n}" for n in bad_lines]
    assert "expected 'x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]', got '1 2 3 ship'; line skipped" in warnings[0]
    assert "unknown class 'spaceship'; line skipped" in warnings[1]
    assert "coordinates must be numbers" in warnings[2]
    assert err.splitlines()[-1].startswith("error: 3 problem(s) in the input")
    # Every other object of BAD is kept: its annfile is exactly P1888's.
    assert (out / "annfiles" / "BAD__1024__0___0.txt").read_text() == (
        out / "annfiles" / "P1888__1024__0___0.txt"
    ).read_text()
    summary = json.loads(stdout)
    assert summary["total"]["skipped_lines"] == 3 and summary["total"]["images"] == 2
    p1888 = Counter(line.split()[8] for line in (src / "labelTxt" / "P1888.txt").read_text().splitlines()[2:])
    assert summary["total"]["objects"] == {name: 2 * n for name, n in p1888.items()}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["total"]["skipped_lines"] == 3 and manifest["complete"] is False
    # A rerun resumes both images and reports the same lines: the label file still has them.
    code, _, err2 = rotld(capsys, "prepare-dota", src, out, "--workers", "1", "--json")
    assert code == 1 and [w for w in err2.splitlines() if w.startswith("warning:")] == warnings


def test_strict_stops_at_the_first_bad_label_line(dota_samples, tmp_path, capsys) -> None:
    src = tmp_path / "src"
    copy_sample(dota_samples, src, "P1888", "BAD")
    label, bad_lines = _with_bad_lines(src)
    out = tmp_path / "out"
    code, stdout, err = rotld(capsys, "prepare-dota", src, out, "--workers", "1", "--strict")
    assert code == 1 and "prepare-dota ->" not in stdout  # stopped: no summary
    assert err.strip().splitlines() == [
        f"error: {label}:{bad_lines[0]}: expected 'x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]', got '1 2 3 ship' "
        "(--strict stops at the first bad label line; fix it and rerun to resume)"
    ]
    assert not (out / "images").exists() or not list((out / "images").iterdir())
    assert json.loads((out / "manifest.json").read_text())["complete"] is False


def test_strict_also_stops_at_a_line_an_earlier_run_skipped(dota_samples, tmp_path, capsys) -> None:
    src = tmp_path / "src"
    copy_sample(dota_samples, src, "P1888", "BAD")
    label, bad_lines = _with_bad_lines(src)
    out = tmp_path / "out"
    assert rotld(capsys, "prepare-dota", src, out, "--workers", "1")[0] == 1  # lenient: split, lines skipped
    code, _, err = rotld(capsys, "prepare-dota", src, out, "--workers", "1", "--strict")
    assert code == 1 and err.strip().splitlines()[-1].startswith(f"error: {label}:{bad_lines[0]}: ")
    assert not list((out / "images").iterdir())  # the image is not accepted as it was split leniently


def test_label_lines_policy_in_the_parser(tmp_path: Path) -> None:
    """The one policy `prepare-dota` and `evaluate` share: skip and record by default, raise when strict."""
    from rotld_cli.dota.formats import FormatError, read_label_file

    path = tmp_path / "P1.txt"
    path.write_bytes(
        "\ufeffimagesource:GoogleEarth\ngsd:0.5\n0 0 4 0 4 4 0 4 plane 0\n0 0 4 0 4 4 ship\n1 1 5 1 5 5 1 5 boat 1\n"
        .encode("utf-8")
    )
    labels = read_label_file(path, classes=("plane", "ship"), strict=False)
    assert [(o.name, o.difficulty, o.line) for o in labels.objects] == [("plane", 0, 3)]
    assert labels.gsd == 0.5  # the BOM did not hide the header
    assert labels.skipped == [
        f"{path}:4: expected 'x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]', got '0 0 4 0 4 4 ship'; line skipped",
        f"{path}:5: unknown class 'boat'; line skipped",
    ]
    with pytest.raises(FormatError) as exc:
        read_label_file(path, classes=("plane", "ship"), strict=True)
    assert (exc.value.line, exc.value.path) == (4, str(path))


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
def test_benchmark_quick_runs(capsys, dota_samples) -> None:  # the benchmark reads ../shared too
    from bench.split import main as bench_main

    bench_main(["--quick"])  # it checks itself that prepare-dota and the floor write the same patches
    out = capsys.readouterr().out
    assert re.search(r"ratio prepare / floor, wall: \d+\.\d\dx", out)  # printed, never asserted on
