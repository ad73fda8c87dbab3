"""`rotld demo`: the synthetic end-to-end pipeline (`pipeline`), the DOTA-like scene renderer it
trains on (`scenes`, also the tests' data) and the report's pictures (`figures`)."""

from rotld_cli.demo.pipeline import (
    FULL,
    MODELS,
    QUICK,
    DemoResult,
    DemoSettings,
    Model,
    claim_work_dir,
    demo_table,
    evaluate_model,
    make_data,
    run_demo,
    split_data,
    train_model,
)

__all__ = [
    "FULL", "MODELS", "QUICK", "DemoResult", "DemoSettings", "Model", "claim_work_dir", "demo_table",
    "evaluate_model", "make_data", "run_demo", "split_data", "train_model",
]  # fmt: skip
