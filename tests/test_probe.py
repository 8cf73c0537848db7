"""The offline CLIP stand-in (probe backend): training, save/load, and what its similarities are."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from data_generation import train_probe
from data_generation.scoring.backends import SCORERS, ScorerLoadError, load_scorer
from data_generation.scoring.backends.probe import load_probe
from data_generation.scoring.score import ScoringConfig, score_spectrum
from training.demo.data import long_tail_counts, split_counts, write_long_tailed_digits


@pytest.fixture(scope="module")
def digits_table(tmp_path_factory):
    """A small long-tailed digits table (8 px PNGs) with test/val/train/pool splits."""
    return write_long_tailed_digits(
        tmp_path_factory.mktemp("digits"),
        n_max=10,
        imbalance=5,
        test_per_class=4,
        val_per_class=2,
        pool_per_class=12,
        seed=0,
    )


@pytest.fixture(scope="module")
def probe_dir(digits_table, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "probe"
    assert (
        train_probe.main(
            ["--data", str(digits_table), "--split", "pool", "--out", str(out), "--epochs", "3", "--no_progress"]
        )
        == 0
    )
    return out


def test_demo_splits_are_disjoint_long_tailed_and_balanced(digits_table):
    df = pd.read_csv(digits_table)
    assert df["sample_id"].is_unique
    counts = split_counts(digits_table)
    assert counts["train"].tolist() == long_tail_counts(10, 5) == [10, 8, 7, 6, 5, 4, 3, 3, 2, 2]
    assert (counts["test"] == 4).all() and (counts["val"] == 2).all() and (counts["pool"] == 12).all()
    with Image.open(digits_table.parent / df["filepath"].iloc[0]) as im:
        assert im.size == (8, 8) and im.mode == "RGB"


def test_probe_registered_and_round_trips_through_its_folder(probe_dir, digits_table):
    assert "probe" in SCORERS.names()
    summary = json.loads((probe_dir / "train_summary.json").read_text())
    assert summary["n_images"] == 120 and 0.0 <= summary["train_accuracy"] <= 1.0
    scorer = load_scorer("probe", str(probe_dir))
    model, cfg = load_probe(probe_dir)
    df = pd.read_csv(digits_table)
    images = [Image.open(digits_table.parent / f).convert("RGB") for f in df["filepath"][:6]]
    emb = scorer.embed_images(images)
    assert emb.shape == (6, scorer.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # the scorer's image-text score is exactly the probe's own softmax probability of the named class
    with torch.no_grad():
        probs = torch.softmax(model(torch.stack([scorer.preprocess(im) for im in images])).double(), dim=1).numpy()
    labels = df["label"][:6].to_numpy()
    prompts = [f"a photo of the digit {cfg.class_names[y]}" for y in labels]
    got = scorer.text_similarity(emb, scorer.embed_texts(prompts))
    np.testing.assert_allclose(got, probs[np.arange(6), labels], atol=1e-5)
    # a second load gives the same embeddings (weights and preprocessing come from the folder)
    np.testing.assert_array_equal(load_scorer("probe", str(probe_dir)).embed_images(images), emb)


def test_probe_finds_the_class_a_prompt_names(probe_dir):
    scorer = load_scorer("probe", str(probe_dir))
    assert scorer.class_of("a photo of the digit seven") == 7
    assert scorer.class_of("SEVEN, handwritten") == 7
    with pytest.raises(ValueError, match="names none of the probe's classes"):
        scorer.class_of("a photo of a cat")
    assert scorer.class_of("sevenfold zero") == 0  # whole words only


def test_probe_load_errors_name_the_folder(tmp_path):
    with pytest.raises(ScorerLoadError, match="not a probe folder"):
        load_scorer("probe", str(tmp_path))
    with pytest.raises(ScorerLoadError, match="--clip_pretrained"):
        load_scorer("probe", str(tmp_path), pretrained="openai")


def test_comp_clip_scores_with_the_probe_scores_probabilities(probe_dir, digits_table, tmp_path):
    """A hand-made generation folder: the 'synthetic' images are real digits, the prompts name their class
    or a wrong one; clip_txt_sim is the probe's probability and the threshold keeps exactly the rows >= it."""
    df = pd.read_csv(digits_table)
    df = df[df["split"] == "train"].head(6).reset_index(drop=True)
    syn = tmp_path / "syn"
    rows = []
    for _, r in df.iterrows():
        for wrong in (False, True):
            label = (int(r["label"]) + 1) % 10 if wrong else int(r["label"])
            name = load_probe(probe_dir)[1].class_names[label]
            rel = f"{name}/Strength50_guidance20_seed{10 + wrong}/{r['sample_id']}.jpg"
            (syn / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.open(digits_table.parent / r["filepath"]).convert("RGB").save(syn / rel, quality=95)
            rows.append(
                {
                    "synthetic_id": f"{r['sample_id']}/{wrong}",
                    "sample_id": r["sample_id"],
                    "label": label,
                    "label_name": name,
                    "prompt": f"a photo of the digit {name}",
                    "strength": 0.5,
                    "image_guidance": 0.5,
                    "text_guidance": 2.0,
                    "seed": 10 + wrong,
                    "model_id": "x",
                    "steps": 10,
                    "width": 8,
                    "height": 8,
                    "path": rel,
                    "filepath": r["filepath"],
                }
            )
    from curriculum.tables import write_parquet

    write_parquet(pd.DataFrame(rows), syn / "manifest.parquet", {"config": {"data_root": str(digits_table.parent)}})
    res = score_spectrum(
        ScoringConfig(
            syn_path=str(syn),
            real_path=str(digits_table.parent),
            clip_backend="probe",
            clip_model=str(probe_dir),
            threshold=0.5,
            device="cpu",
            plots=False,
            progress=False,
            num_workers=0,
        )
    )
    s = res.scores
    assert (s["score_status"] == "ok").all()
    assert ((s["clip_txt_sim"] >= 0) & (s["clip_txt_sim"] <= 1)).all()
    assert (s["keep"] == (s["clip_txt_sim"] >= 0.5)).all()
    # the image is its own real source (re-encoded as JPEG): image-image cosine near 1
    assert (s["clip_img_sim"] > 0.95).all()
    # a right and a wrong class for the same image: the probabilities of two different classes sum to <= 1
    pair = s.groupby("sample_id")["clip_txt_sim"].sum()
    assert (pair <= 1.0 + 1e-6).all()
