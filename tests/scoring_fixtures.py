"""Fixtures for the CLIP scoring tests: tiny CLIP models saved to folders and a real generated spectrum.

Imported by the scoring test modules (kept out of conftest.py so parallel branches do not collide there).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SAMPLE_PHOTO = REPO / "data_generation" / "iWildCam" / "sample_imgs" / "8b5d271c-21bc-11ea-a13a-137349068a90.jpg"
STRENGTHS = (0.3, 0.7, 1.0)
SEEDS = (1, 2)


@pytest.fixture(scope="session")
def tiny_hf_clip_dir(tmp_path_factory) -> Path:
    """A tiny transformers CLIPModel + CLIPProcessor saved with save_pretrained."""
    from data_generation.model_builders.tiny_clip import save_tiny_hf_clip

    return save_tiny_hf_clip(tmp_path_factory.mktemp("clip") / "tiny-hf-clip")


@pytest.fixture(scope="session")
def tiny_open_clip_dir(tmp_path_factory) -> Path:
    """A tiny open_clip CLIP in open_clip's local-dir layout (config JSON + safetensors weights)."""
    from data_generation.model_builders.tiny_clip import save_tiny_open_clip

    return save_tiny_open_clip(tmp_path_factory.mktemp("clip") / "tiny-open-clip")


@pytest.fixture(scope="session")
def clip_dirs(tiny_hf_clip_dir, tiny_open_clip_dir) -> dict[str, Path]:
    """{backend name: tiny model folder} for every registered scorer backend."""
    return {"transformers": tiny_hf_clip_dir, "open_clip": tiny_open_clip_dir}


@pytest.fixture(scope="session")
def generated_spectrum(tmp_path_factory, tiny_sd_dir) -> dict:
    """A real gene_img output: 2 source images (2 classes) x 3 strengths x 2 seeds from the tiny SD pipeline.

    Returns {'root', 'data', 'syn', 'csv', 'strengths', 'seeds'}; tests copy it before changing anything.
    """
    from data_generation.generation.generate import GenerationConfig, run_generation
    from data_generation.generation.merge import merge_manifests

    root = tmp_path_factory.mktemp("spectrum")
    data = root / "data"
    (data / "imgs").mkdir(parents=True)
    shutil.copy(SAMPLE_PHOTO, data / "imgs" / "cheetah01.jpg")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(data / "imgs" / "zebra01.jpg")
    csv = root / "hard.csv"
    pd.DataFrame(
        {
            "sample_id": ["cheetah01", "zebra01"],
            "filepath": ["imgs/cheetah01.jpg", "imgs/zebra01.jpg"],
            "label": [3, 7],
            "label_name": ["cheetah", "zebra"],
        }
    ).to_csv(csv, index=False)
    syn = root / "syn"
    summary = run_generation(
        GenerationConfig(
            data_csv=str(csv),
            output_path=str(syn),
            data_root=str(data),
            model_id=str(tiny_sd_dir),
            strengths=STRENGTHS,
            seeds=SEEDS,
            steps=4,
            width=48,
            height=32,
            batch_size=4,
            progress=False,
        )
    )
    assert summary.generated == 12 and summary.failed == 0
    merge_manifests(syn)
    return {"root": root, "data": data, "syn": syn, "csv": csv, "strengths": STRENGTHS, "seeds": SEEDS}


@pytest.fixture
def spectrum_copy(generated_spectrum, tmp_path) -> dict:
    """A private copy of the generated spectrum (data, syn folder, CSV) that a test may damage."""
    dst = tmp_path / "copy"
    shutil.copytree(generated_spectrum["root"], dst)
    return {
        "root": dst,
        "data": dst / "data",
        "syn": dst / "syn",
        "csv": dst / "hard.csv",
        "strengths": STRENGTHS,
        "seeds": SEEDS,
    }
