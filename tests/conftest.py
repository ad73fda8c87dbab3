"""Shared fixtures: the real DOTA samples beside the checkout, and the repo root."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotld_cli import threads

# Before any test imports torch: pytest and the trainings it starts share the cores, so idle OpenMP
# threads sleep instead of spin-waiting (spinning made the training tests 10x slower; rotld_cli/threads.py).
threads.share_cpu()

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"
DOTA_SAMPLES = SHARED / "dota-samples"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def dota_samples() -> Path:
    """`../shared/dota-samples` (real DOTA images + labels); not part of the repo."""
    if not (DOTA_SAMPLES / "images" / "P0706.png").exists():
        pytest.skip(f"real DOTA samples not found at {DOTA_SAMPLES} (they live in ../shared beside the checkout)")
    return DOTA_SAMPLES
