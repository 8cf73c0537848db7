"""Classifier weights: a head for another number of classes is an error for mining, a warning for training."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
import torch

from curriculum.weights_io import create_timm_classifier, read_state_dict

from .fakes import make_image_folder


@pytest.fixture(scope="module")
def five_class_weights(tmp_path_factory):
    """A tiny timm classifier (test_resnet) for 5 classes saved as safetensors, and the same without its head."""
    import timm
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    state = timm.create_model("test_resnet", num_classes=5).state_dict()
    save_file(state, str(root / "clf5.safetensors"))
    save_file({k: v for k, v in state.items() if not k.startswith("fc.")}, str(root / "body.safetensors"))
    return root / "clf5.safetensors", root / "body.safetensors"


def test_head_for_other_classes_is_an_error_naming_the_file_and_both_counts(five_class_weights):
    full, body = five_class_weights
    with pytest.raises(
        ValueError,
        match=r"clf5\.safetensors: has a classifier head for 5 classes, but test_resnet is "
        r"built for 3 classes",
    ):
        create_timm_classifier("test_resnet", 3, str(full))
    with pytest.raises(ValueError, match=r"body\.safetensors: has no classifier head"):
        create_timm_classifier("test_resnet", 3, str(body))
    with pytest.raises(
        ValueError, match=r"body\.safetensors: has no classifier head .* number of classes must be given"
    ):
        create_timm_classifier("test_resnet", None, str(body))


def test_class_count_from_the_weights_head(five_class_weights):
    full, _ = five_class_weights
    model, _, _ = create_timm_classifier("test_resnet", None, str(full))
    state = read_state_dict(full)
    assert model.num_classes == 5
    assert torch.equal(model.fc.weight, state["fc.weight"]) and torch.equal(
        model.conv1[0].weight, state["conv1.0.weight"]
    )


def test_training_may_replace_the_head_with_a_warning(five_class_weights, caplog):
    from training.trainers.classifier import build_classifier

    full, body = five_class_weights
    state = read_state_dict(full)
    for weights in (full, body):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="curriculum.weights_io"):
            model, _, _ = build_classifier("test_resnet", 3, str(weights))
        assert model.num_classes == 3 and model.fc.weight.shape == (3, model.num_features)
        assert torch.equal(model.conv1[0].weight, state["conv1.0.weight"])  # the body is loaded
        assert any("re-initialised" in r.getMessage() and "3 classes" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="curriculum.weights_io"):
        build_classifier("test_resnet", 5, str(full))
    assert not caplog.records  # a fitting head: no warning


def test_checkpoint_scorer_takes_the_class_count_from_the_weights(tmp_path, five_class_weights, capsys):
    """A table with a subset of the classes (labels 0, 1) is scored with the file's 5-class head; labels the
    head lacks are an error naming the file and both counts."""
    from data_generation import mine_hard
    from data_generation.mining.datasets import load_image_folder
    from data_generation.mining.difficulty import SampleImages, classifier_scores
    from data_generation.mining.scorer_runs import ScorerOptions, score_checkpoint

    full, _ = five_class_weights
    make_image_folder(tmp_path / "imgs", {"cat": 2, "dog": 2})
    table = load_image_folder(tmp_path / "imgs")
    opts = ScorerOptions(
        num_classes=2, class_names=("cat", "dog"), classifier_arch="test_resnet", classifier_weights=str(full)
    )
    scores = score_checkpoint(table, opts)
    model, _, transform = create_timm_classifier("test_resnet", 5, str(full))
    with torch.no_grad():
        x = torch.stack([SampleImages(table, transform)[i] for i in range(len(table))])
        probs = torch.softmax(model(x).double(), dim=1).numpy()
    assert probs.shape == (4, 5)
    expected = classifier_scores(probs, table["label"].to_numpy(), index=table["sample_id"].tolist())
    pd.testing.assert_frame_equal(scores, expected, atol=1e-6)

    table6 = table.assign(label=[0, 1, 5, 2])
    with pytest.raises(
        ValueError,
        match=r"clf5\.safetensors: the classifier head has 5 classes, but the table has "
        r"labels up to 5 \(6 classes\)",
    ):
        score_checkpoint(table6, opts)
    csv = tmp_path / "t.csv"
    table6.drop(columns="source_path").to_csv(csv, index=False)
    assert (
        mine_hard.main(
            [
                "--dataset",
                "table",
                "--data",
                str(csv),
                "--data_root",
                str(tmp_path / "imgs"),
                "--split",
                "",
                "--scorers",
                "checkpoint",
                "--classifier_arch",
                "test_resnet",
                "--classifier_weights",
                str(full),
                "--output_csv",
                str(tmp_path / "hard.csv"),
                "--scores_parquet",
                str(tmp_path / "s.parquet"),
            ]
        )
        == 2
    )
    assert "the classifier head has 5 classes" in capsys.readouterr().err
