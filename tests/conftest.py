"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real datasets (../shared/data beside the repo, or $SAMSP_SHARED_DATA); skip if absent."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    path = Path(os.environ.get("SAMSP_SHARED_DATA") or default)
    if not path.is_dir():
        pytest.skip(
            f"real data not available: {path} not found; put the shared data at ../shared/data beside the "
            "repository or set SAMSP_SHARED_DATA to the folder holding kvasir-seg/ and cvc-clinicdb-256/"
        )
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random SAM-SP model saved as a model folder (what `samsp serve --model` takes); fast on a CPU."""
    import torch

    from samsp import ModelConfig, SamSP

    torch.manual_seed(0)
    return SamSP(ModelConfig(backbone="tiny")).save_pretrained(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def samsp_log(caplog, monkeypatch):
    """caplog that sees the "samsp" logger at INFO, also after a training in this process stopped it propagating."""
    import logging

    caplog.set_level(logging.INFO, logger="samsp")
    monkeypatch.setattr(logging.getLogger("samsp"), "propagate", True)
    return caplog
