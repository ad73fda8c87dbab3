"""prepare-dota must run without the training engine: no mmcv, mmdet, mmrotate or torch imported."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ENGINE_MODULES = ("mmcv", "mmdet", "mmrotate", "torch")

SCRIPT = """
import json, sys
from rotld_cli.cli import main
try:
    main(["prepare-dota", sys.argv[1], sys.argv[2], "--sizes", "512", "--gaps", "100", "--workers", "1", "--json"])
except SystemExit as exc:
    code = exc.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {engine})
print(json.dumps({{"code": code, "loaded": loaded}}))
"""


def test_prepare_dota_imports_no_engine(dota_samples: Path, tmp_path: Path, repo_root: Path) -> None:
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "labelTxt").mkdir()
    shutil.copy(dota_samples / "images" / "P1888.png", src / "images")
    shutil.copy(dota_samples / "labelTxt" / "P1888.txt", src / "labelTxt")
    script = SCRIPT.format(engine=set(ENGINE_MODULES))
    proc = subprocess.run(
        [sys.executable, "-c", script, str(src), str(tmp_path / "out")],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, proc.stderr
    assert len(list((tmp_path / "out" / "images").glob("P1888__512__*.png"))) == 4  # the split really ran
    assert result["loaded"] == []
