"""What a user's terminal shows: the real commands print none of the engine stack's notices.

The notices (mmcv's "MMCV will release v2.0.0", torch's "No CUDA runtime is found", compile-time
SyntaxWarnings of mmdet/e2cnn on Python 3.12) come from imports, so they are checked on the
output of real `rotld` processes; `--debug` shows them again, which proves the check can fail.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from rotld_cli.quiet import silence_third_party

NOTICES = ("MMCV will release", "No CUDA runtime is found", "SyntaxWarning", "invalid escape sequence")


def _rotld(args: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rotld_cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.mark.engine
@pytest.mark.slow
def test_train_teacher_prints_no_third_party_notice_unless_debug(tmp_path):
    pytest.importorskip("mmrotate")
    from train_helpers import make_split, write_recipe

    recipe = write_recipe(tmp_path / "r.yaml", make_split(tmp_path, num_train=2, num_val=1))
    args = ["train-teacher", str(recipe), "--no-pretrained", "--set", "schedule.epochs=1",
            "--set", "runtime.eval_interval=1"]
    quiet = _rotld([*args, "--work-dir", "quiet"], tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    output = quiet.stdout + quiet.stderr
    assert "Training finished" in output
    assert not [n for n in NOTICES if n in output], output
    loud = _rotld(["--debug", *args, "--work-dir", "loud"], tmp_path)
    assert loud.returncode == 0, loud.stderr
    assert "MMCV will release" in loud.stderr


def test_compile_time_warnings_of_the_stack_are_silenced_and_ours_are_not():
    source = "pattern = '\\d+'\n"  # an invalid escape: SyntaxWarning on 3.12+, DeprecationWarning before
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_third_party()
        for package in ("mmdet", "e2cnn", "mmrotate", "mmcv"):
            compile(source, f"/env/site-packages/{package}/models/x.py", "exec")
        assert caught == []
        compile(source, "/project/rotld_cli/x.py", "exec")
    assert len(caught) == 1 and "invalid escape sequence" in str(caught[0].message)


def test_torchs_meshgrid_indexing_notice_is_silenced_and_other_torch_warnings_are_not():
    # torch raises it once per process from C++ (attributed to torch/functional.py) for mmdet's
    # FCOS point grids: the filter matches its text, so it is checked on a warning raised like it.
    notice = "torch.meshgrid: in an upcoming release, it will be required to pass the indexing argument."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_third_party()
        warnings.warn_explicit(notice, UserWarning, "torch/functional.py", 504, module="torch.functional")
        assert caught == []
        warnings.warn_explicit("torch.other: something else", UserWarning, "torch/functional.py", 1,
                               module="torch.functional")
    assert [str(w.message) for w in caught] == ["torch.other: something else"]


def test_mmdets_own_deprecation_notices_are_silenced_and_ours_are_not():
    # mmdet's anchor heads warn on `num_anchors` / `anchor_generator` (read by mmrotate's oriented RPN)
    notice = "DeprecationWarning: `num_anchors` is deprecated, for consistency or also use `num_base_priors` instead"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_third_party()
        warnings.warn_explicit(notice, UserWarning, "mmdet/models/dense_heads/anchor_head.py", 116,
                               module="mmdet.models.dense_heads.anchor_head")
        assert caught == []
        warnings.warn_explicit(notice, UserWarning, "rotld_cli/x.py", 1, module="rotld_cli.x")
    assert len(caught) == 1
