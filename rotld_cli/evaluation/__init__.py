"""DOTA Task1 evaluation with the devkit's rules, engine-free.

`metrics` (the AP maths and PR curves), `results` (result folders, image list, the class set of
the mean), `evaluator` (`DotaEvaluator`: reset / process / evaluate, merging patches to images),
`report` (the typed report: JSON, Markdown), `table` (every AP table), `pictures`, `plots` and
`visualize` (what it draws), `run` (`rotld evaluate --results`).
"""

from rotld_cli.evaluation.evaluator import DotaEvaluator, Evaluation
from rotld_cli.evaluation.pictures import PictureOptions, resolve_image_dir, save_pictures
from rotld_cli.evaluation.report import EvaluationReport, PatchRun
from rotld_cli.evaluation.results import (
    ClassSet,
    EvaluateOptions,
    class_set,
    evaluated_image_ids,
    read_task1_fast,
    validate_options,
)
from rotld_cli.evaluation.run import default_out_dir, evaluate, evaluate_result_files, evaluate_results

__all__ = [
    "ClassSet", "DotaEvaluator", "EvaluateOptions", "Evaluation", "EvaluationReport", "PatchRun", "PictureOptions",
    "class_set", "default_out_dir", "evaluate", "evaluate_result_files", "evaluate_results", "evaluated_image_ids",
    "read_task1_fast", "resolve_image_dir", "save_pictures", "validate_options",
]  # fmt: skip
