"""Readable help pages: real metavars, choices, examples, and `--debug` anywhere on the line.

Typer shows every parameter's Python type (`--json <bool>`, `{src}`, `--set <list[str]>`). One
pass over the finished click command tree replaces that with what a person types, so each
command module declares plain options and every command gets the same rules.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

# Options whose values are a fixed set or have a shape: the metavar shows it. Keys are option
# names, or (command, option) where one command takes other values.
METAVARS: dict[object, str] = {
    "--set": "KEY=VALUE",
    "--device": "cpu|cuda",
    ("evaluate", "--device"): "auto|cpu|cuda",
    ("predict", "--device"): "auto|cpu|cuda",
    "--launcher": "auto|torchrun|slurm",
    "--metric": "voc07|area",
    "--dota-version": "v1.0|v1.5|v2.0",
    "--ext": ".png|.bmp|.tif|.jpg",
    "--classes": "NAME,...",
    "--master-addr": "HOST",
    "--master-port": "PORT",
    "--teacher": "CKPT",
    "--resume-from": "CKPT",
    "--checkpoint-every": "N|DURATION",
    "--zip": "FILE",
    "--imageset": "FILE",
    "--pretrained": "FILE",
    "--recipe": "RECIPE",
    "--teacher-recipe": "RECIPE",
    "--classes-from": "FILE",
    "--sysdata": "FILE",
    "--protocol": "dota|hrsc07|hrsc12|dior",
}
# Fallbacks by the option's Python type.
TYPE_METAVARS = {int: "N", float: "FLOAT", str: "TEXT", Path: "DIR"}
FILE_ARGUMENTS = {"checkpoint": "CKPT"}

# Two to four command lines per command, shown under its --help.
EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "": [
        ("Check the installation, then run the synthetic end-to-end demo", "rotld doctor && rotld demo --quick"),
        ("Split DOTA, train a teacher, distil a student",
         "rotld prepare-dota DOTA split && rotld train-teacher dota1/teacher-r34-gwd-2x"),
        ("Any command's options and examples", "rotld prepare-dota -h"),
    ],
    "prepare-dota": [
        ("Split a DOTA root (train/ val/ test/) as MMRotate's single-scale config", "rotld prepare-dota DOTA split"),
        ("Multi-scale, only train and val, 4 processes",
         "rotld prepare-dota DOTA split-ms --preset ms --splits train,val --workers 4"),
        ("Stop at the first bad label line instead of skipping it", "rotld prepare-dota DOTA/val split/val --strict"),
    ],
    "train-teacher": [
        ("Train the bundled DOTA teacher", "rotld train-teacher dota1/teacher-r34-gwd-2x"),
        ("On the CPU with a smaller learning rate", "rotld train-teacher my.yaml --device cpu --set schedule.lr=0.005"),
        ("Four GPUs of this machine", "rotld train-teacher dota1/teacher-r34-gwd-2x --gpus 4"),
        ("Checkpoint every 2000 iterations, continue after a crash or pre-emption",
         "rotld train-teacher dota1/teacher-r34-gwd-2x --checkpoint-every 2000 --resume"),
    ],
    "distill": [
        ("Distil the R18 student from a trained teacher",
         "rotld distill dota1/student-r18-gwd-ld-kd-1x --teacher work_dirs/teacher-r34-gwd-2x/latest.pth"),
        ("Two GPUs, into a chosen folder",
         "rotld distill dota1/student-r18-gwd-ld-kd-1x --teacher t.pth --gpus 2 --work-dir runs/student"),
    ],
    "convert": [
        ("HRSC2016 (MMRotate's layout) to DOTA, ship only", "rotld convert hrsc2016 data/HRSC2016 data/hrsc-dota"),
        ("DIOR-R to DOTA, train+val and test", "rotld convert dior-r data/DIOR data/dior-dota"),
        ("A DOTA dataset out to Ultralytics' YOLO-OBB", "rotld convert dota data/DOTA data/dota-yolo --to yolo-obb"),
    ],
    "evaluate": [
        ("mAP of a checkpoint on split patches",
         "rotld evaluate work_dirs/student/latest.pth --split-dir split/val --ann-dir DOTA/val/labelTxt"),
        ("mAP of Task1 result files, as JSON", "rotld evaluate --results results/ --ann-dir DOTA/val/labelTxt --json"),
        ("A DOTA server submission", "rotld evaluate --results results/ --zip submission.zip"),
    ],
    "predict": [
        ("Detect on every image of a folder", "rotld predict student.pth scenes/ --out predictions/"),
        ("Huge GeoTIFF mosaics and a PNG with an exported model (onnxruntime only), multi-scale windows, pictures",
         "rotld predict student.onnx 'mosaics/**/*.tif' big.png --out pred/ --preset ms --save-vis"),
        ("DOTA val, then `rotld evaluate --results pred/ --ann-dir DOTA/val/labelTxt` for its AP",
         "rotld predict student.pth DOTA/val/images --out pred/ --json"),
        ("A GeoTIFF to a GeoPackage layer for QGIS, in WGS 84 lon/lat",
         "rotld predict student.pth orthomosaic.tif --out ships/ --gpkg --to-crs EPSG:4326"),
    ],
    "publish-model": [
        ("Strip a checkpoint for release (writes student-<sha256[:8]>.pth)",
         "rotld publish-model work_dirs/student/latest.pth student.pth"),
        ("Into a folder, keeping the optimizer to resume", "rotld publish-model latest.pth release/ --keep-optimizer"),
    ],
    "export": [
        ("A checkpoint as an ONNX model for onnxruntime (any patch size), after a torch-vs-onnxruntime check",
         "rotld export work_dirs/student/latest.pth student.onnx"),
        ("A fixed 1024² input, checked on 8 of your patches",
         "rotld export student.pth student-1024.onnx --size 1024 --check-images split/val --check-count 8"),
    ],
    "demo": [
        ("The synthetic end-to-end run (teacher, baseline, student, report)", "rotld demo"),
        ("A 2-minute smoke run", "rotld demo --quick"),
    ],
    "doctor": [
        ("Check the engine installation", "rotld doctor"),
        ("The same as JSON", "rotld doctor --json"),
    ],
    "recipes list": [("All bundled recipes", "rotld recipes list"), ("As JSON", "rotld recipes list --json")],
    "recipes show": [
        ("A bundled recipe, fully resolved", "rotld recipes show dota1/teacher-r34-gwd-2x"),
        ("With an override", "rotld recipes show dota1/teacher-r34-gwd-2x --set schedule.epochs=12"),
    ],
}


def examples_epilog(examples: list[tuple[str, str]]) -> str:
    """Rich-markup epilog: a heading, then each example as its purpose and `$ command` line."""
    blocks = [f"  {what}:\n    [cyan]$ {command}[/cyan]" for what, command in examples]
    return "\n\n".join(["[bold]Examples[/bold]", *blocks])


def polish(root) -> None:
    """Metavars, argument names and examples for every command of the click tree under `root`."""
    for name, command in _walk(root, ""):
        for param in command.params:
            _polish_param(name, param)
        if name in EXAMPLES and not command.epilog:
            command.epilog = examples_epilog(EXAMPLES[name])
        _flag_help_option(command)


def _flag_help_option(command) -> None:
    """`-h, --help` is made per command on demand; it is a flag like the others."""
    make = command.get_help_option

    def get_help_option(ctx):
        option = make(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option


def _walk(command, name: str) -> Iterator[tuple[str, object]]:
    yield name, command
    for sub_name, sub in (getattr(command, "commands", None) or {}).items():
        yield from _walk(sub, f"{name} {sub_name}".strip())


def _polish_param(command: str, param) -> None:
    if param.param_type_name == "argument":
        label = param.metavar or FILE_ARGUMENTS.get(param.name, param.name.upper())
        param.metavar = label
        param.display_type_rich = lambda ctx: None  # the name says it; no `<path>` beside it
        param._usage_display_name = lambda: label if param.required else f"[{label}]"
        return
    if getattr(param, "is_flag", False):
        param.metavar = ""  # a flag takes no value: no `<bool>`
        return
    if param.metavar is not None:
        return
    long_name = next((opt for opt in param.opts if opt.startswith("--")), "")
    param.metavar = METAVARS.get((command, long_name)) or METAVARS.get(long_name) or _type_metavar(param)


def _type_metavar(param) -> str:
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if getattr(annotation, "__origin__", None) is list:
        return "TEXT"
    return TYPE_METAVARS.get(annotation, "VALUE")


def strip_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """`argv` without `--debug` (accepted anywhere before a `--`), and whether it was there."""
    argv = list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    kept = [arg for arg in argv[:cut] if arg != "--debug"]
    return kept + argv[cut:], len(kept) < cut
