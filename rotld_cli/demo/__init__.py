"""`rotld demo`: the synthetic end-to-end pipeline (`pipeline`), the DOTA-like scene renderer it
trains on (`scenes`, also the tests' data) and the report's pictures (`figures`)."""

from rotld_cli.demo.pipeline import (
    DISTILLERS,
    FULL,
    MODELS,
    QUICK,
    DemoResult,
    DemoSettings,
    Model,
    claim_work_dir,
    demo_models,
    demo_table,
    evaluate_model,
    make_data,
    parse_methods,
    run_demo,
    run_health,
    split_data,
    train_model,
)

__all__ = [
    "DISTILLERS", "FULL", "MODELS", "QUICK", "DemoResult", "DemoSettings", "Model", "claim_work_dir", "demo_models",
    "demo_table", "evaluate_model", "make_data", "parse_methods", "run_demo", "run_health", "split_data", "train_model",
]  # fmt: skip
