"""Offline fixtures: tiny real components built from configs and saved/loaded through from_pretrained."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

pytest_plugins = ["tests.scoring_fixtures"]  # tiny CLIP models and a generated spectrum

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "assets"
SAMPLE_PHOTO = REPO / "data_generation" / "iWildCam" / "sample_imgs" / "8b5d271c-21bc-11ea-a13a-137349068a90.jpg"


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    """A tiny SD img2img pipeline saved with save_pretrained (loaded back by the code under test)."""
    from data_generation.model_builders.tiny import save_tiny_pipeline

    return save_tiny_pipeline("sd-img2img", tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory) -> Path:
    """A tiny SDXL-refiner-form img2img pipeline saved with save_pretrained."""
    from data_generation.model_builders.tiny import save_tiny_pipeline

    return save_tiny_pipeline("sdxl-refiner", tmp_path_factory.mktemp("models") / "tiny-sdxl-refiner")


@pytest.fixture
def photo_tree(tmp_path) -> Path:
    """A data root holding the real iWildCam photo at the path the reference CSV names."""
    dst = tmp_path / "data" / "data_generation" / "iWildCam" / "sample_imgs" / SAMPLE_PHOTO.name
    dst.parent.mkdir(parents=True)
    shutil.copy(SAMPLE_PHOTO, dst)
    return tmp_path / "data"
