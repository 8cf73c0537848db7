"""Datasets -> sample tables, difficulty scores, hard-sample rules and the files gene_img reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from curriculum.tables import read_parquet_metadata, read_sample_table
from data_generation.mining.datasets import load_image_folder, load_imagenet_lt, load_wilds_iwildcam, shot_groups
from data_generation.mining.difficulty import classifier_scores, ensemble, random_scores, rank_normalise, spearman_table
from data_generation.mining.rules import HardRule, join_scores, select_hard, write_mining_outputs

from .fakes import make_fake_imagenet_lt, make_fake_iwildcam, make_image_folder


def test_wilds_iwildcam_loader_on_a_fake_tree(tmp_path):
    make_fake_iwildcam(tmp_path)
    df = load_wilds_iwildcam(tmp_path)
    assert len(df) == 26 and set(df["split"]) == {"train", "val", "test", "id_val", "id_test"}
    assert df.attrs["layout"] == "iwildcam" and df.attrs["data_root"] == str(tmp_path / "iwildcam_v2.0")
    row = df.iloc[0]
    assert (row.sample_id, row.filepath, row.label, row.label_name) == (
        "train_0000",
        "train/train_0000.jpg",
        0,
        "empty",
    )
    assert all(__import__("pathlib").Path(p).is_file() for p in df["source_path"])
    train = load_wilds_iwildcam(tmp_path, splits=("train",))
    assert len(train) == 12 and set(train["split"]) == {"train"}
    # train_count is the train split's count per class, on every split's rows (the tail rule needs it)
    expected = train["label"].value_counts()
    val = load_wilds_iwildcam(tmp_path, splits=("val",))
    assert (val["train_count"] == val["label"].map(expected).fillna(0)).all()
    assert (train["train_count"] == train["label"].map(expected)).all()
    with pytest.raises(ValueError, match="unknown iWildCam split"):
        load_wilds_iwildcam(tmp_path, splits=("dev",))
    with pytest.raises(Exception, match="cannot open WILDS iWildCam"):
        load_wilds_iwildcam(tmp_path / "nowhere")


def test_imagenet_lt_list_with_shot_groups(tmp_path):
    lst = make_fake_imagenet_lt(tmp_path, {0: 3, 1: 25, 2: 101})
    df = load_imagenet_lt(lst, data_root=tmp_path)
    assert len(df) == 129 and df.attrs["layout"] == "imagenet_lt"
    by_label = df.groupby("label")["shot"].first().to_dict()
    assert by_label == {0: "few", 1: "medium", 2: "many"}
    assert df.iloc[0].label_name == "tench" and df.iloc[0].image_name == "n00000000_0.JPEG"
    assert shot_groups(pd.Series([19, 20, 99, 100])).tolist() == ["few", "medium", "medium", "many"]  # as metrics


def test_image_folder_loader(tmp_path):
    make_image_folder(tmp_path / "imgs", {"cat": 2, "dog": 3})
    df = load_image_folder(tmp_path / "imgs")
    assert df.groupby("label_name")["label"].first().to_dict() == {"cat": 0, "dog": 1}
    assert df["sample_id"].tolist()[:2] == ["cat_0", "cat_1"] and len(df) == 5


def test_classifier_scores_by_formula():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]])
    s = classifier_scores(probs, np.array([0, 1, 1]), index=["a", "b", "c"])
    np.testing.assert_allclose(s["true_prob"], [0.7, 0.3, 0.5])
    np.testing.assert_allclose(s["loss"], -np.log([0.7, 0.3, 0.5]))
    np.testing.assert_allclose(s["margin"], [0.5, -0.3, 0.25])
    assert s["correct"].tolist() == [True, False, True]
    ranks = rank_normalise(s[["true_prob", "loss"]])
    # the hardest sample (b: lowest true-class probability, highest loss) ranks 1 under both
    assert ranks.loc["b"].tolist() == [1.0, 1.0] and ensemble(ranks).loc["a"] == 0.0
    corr = spearman_table(s[["true_prob", "loss", "margin"]])
    assert corr.loc["true_prob", "loss"] == pytest.approx(-1.0)


def _scores(n=40, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"s{i:03d}" for i in range(n)]
    labels = np.array([i % 4 for i in range(n)])
    probs = rng.dirichlet(np.ones(4) * 0.5, size=n)
    probs[np.arange(n), labels] += 2.0  # every sample correct ...
    probs[7] = [0.05, 0.05, 0.05, 0.85]  # label 3: confidently right
    probs[9] = [0.9, 0.04, 0.03, 0.03]  # label 1: the planted misclassified sample
    probs /= probs.sum(axis=1, keepdims=True)
    table = pd.DataFrame(
        {
            "sample_id": ids,
            "filepath": [f"{i}.jpg" for i in ids],
            "label": labels,
            "label_name": [f"c{y}" for y in labels],
        }
    )
    return table, classifier_scores(probs, labels, index=ids)


def test_planted_misclassified_sample_is_selected_and_order_does_not_matter():
    table, cls = _scores()
    scored = join_scores(table, cls)
    hard = select_hard(scored, HardRule(misclassified=True))
    assert hard[hard].index.tolist() == ["s009"]
    shuffled = join_scores(table.sample(frac=1, random_state=3), cls.sample(frac=1, random_state=4))
    for rule in (
        HardRule(misclassified=True),
        HardRule(bottom_q={"true_prob": 0.1}, top_q={"loss": 0.05}),
        HardRule(bottom_q={"margin": 0.25}, tail_only=True, tail_max_count=10),
    ):
        a, b = select_hard(scored, rule), select_hard(shuffled, rule)
        assert a[a].index.sort_values().tolist() == b[b].index.sort_values().tolist()


def test_quantile_tail_and_combine_rules():
    table, cls = _scores()
    scored = join_scores(table, cls)
    bottom = select_hard(scored, HardRule(bottom_q={"true_prob": 0.1}))
    assert bottom.sum() == 4 and set(bottom[bottom].index) >= {"s009"}
    assert scored.loc[bottom, "true_prob"].max() <= scored.loc[~bottom, "true_prob"].min()
    counts = pd.Series({0: 100, 1: 100, 2: 15, 3: 5})
    tail = select_hard(scored, HardRule(tail_only=True, tail_max_count=19), class_counts=counts)
    assert set(scored.loc[tail, "label"]) == {2, 3} and tail.sum() == 20
    both = select_hard(scored, HardRule(misclassified=True, bottom_q={"true_prob": 0.1}, combine="all"))
    assert both[both].index.tolist() == ["s009"]
    with pytest.raises(ValueError, match="--bottom_q nope=0.1: no score column"):
        select_hard(scored, HardRule(bottom_q={"nope": 0.1}))
    assert (
        HardRule(misclassified=True, tail_only=True).describe()
        == "misclassified (by any classifier scorer), among classes with <= 19 samples in the mined table"
    )
    assert (
        HardRule(tail_only=True, count_column="train_count").describe()
        == "every sample, among classes with <= 19 training samples (train_count)"
    )


def test_scores_must_align_by_sample_id():
    table, cls = _scores()
    with pytest.raises(ValueError, match="1 sample\\(s\\) without a score"):
        join_scores(table, cls.drop(index="s003"))
    with pytest.raises(ValueError, match="1 unknown"):
        join_scores(table.iloc[1:], cls)


@pytest.mark.parametrize("layout", ["iwildcam", "imagenet_lt", "canonical"])
def test_hard_csv_round_trips_into_gene_img_reader(tmp_path, layout):
    table, cls = _scores()
    scored = join_scores(table, cls, random_scores(table["sample_id"], seed=1))
    hard = select_hard(scored, HardRule(bottom_q={"true_prob": 0.2}))
    res = write_mining_outputs(
        table,
        scored,
        hard,
        HardRule(bottom_q={"true_prob": 0.2}),
        tmp_path / "hard.csv",
        tmp_path / "scores.parquet",
        layout,
        {"scorers": ["test"]},
    )
    back = read_sample_table(res.hard_csv)
    assert back.attrs["layout"] == layout
    assert sorted(back["sample_id"]) == sorted(hard[hard].index)
    assert back.set_index("sample_id").loc["s009", "label"] == 1
    full = pd.read_parquet(res.scores_parquet)
    assert len(full) == 40 and full["hard"].sum() == hard.sum()
    assert {"true_prob_rank", "loss_rank", "random_rank", "ensemble"} <= set(full.columns)
    meta = read_parquet_metadata(res.scores_parquet)
    assert meta["rule_text"] == "bottom 0.2 of true_prob" and meta["n_hard"] == 8
    assert res.summary["hard"].sum() == 8 and res.summary["total"].sum() == 40


def test_mine_hard_cli_on_imagenet_lt_and_folder(tmp_path):
    """End to end: ImageNet-LT's reference rule (few-shot classes) and a checkpoint scorer on a folder."""
    import timm
    from safetensors.torch import save_file

    from data_generation import mine_hard

    lst = make_fake_imagenet_lt(tmp_path / "lt", {0: 25, 1: 3, 2: 2})
    out_csv, out_pq = tmp_path / "hard.csv", tmp_path / "scores.parquet"
    assert (
        mine_hard.main(
            [
                "--dataset",
                "imagenet_lt",
                "--data",
                str(lst),
                "--data_root",
                str(tmp_path / "lt"),
                "--scorers",
                "random",
                "--tail_only",
                "--tail_max_count",
                "19",
                "--output_csv",
                str(out_csv),
                "--scores_parquet",
                str(out_pq),
            ]
        )
        == 0
    )
    hard = read_sample_table(out_csv, data_root=tmp_path / "lt")
    assert hard.attrs["layout"] == "imagenet_lt" and sorted(hard["label"].unique()) == [1, 2] and len(hard) == 5
    assert all(__import__("pathlib").Path(p).is_file() for p in hard["source_path"])
    assert not out_pq.with_suffix(".spearman.csv").exists()  # one score column: nothing to correlate
    assert (
        read_parquet_metadata(out_pq)["rule_text"]
        == "every sample, among classes with <= 19 training samples (train_count)"
    )

    make_image_folder(tmp_path / "imgs", {"cat": 4, "dog": 4})
    weights = tmp_path / "clf.safetensors"
    save_file(timm.create_model("resnet10t", num_classes=2).state_dict(), str(weights))
    assert (
        mine_hard.main(
            [
                "--dataset",
                "folder",
                "--data",
                str(tmp_path / "imgs"),
                "--scorers",
                "checkpoint",
                "random",
                "--classifier_arch",
                "resnet10t",
                "--classifier_weights",
                str(weights),
                "--bottom_q",
                "true_prob=0.25",
                "--output_csv",
                str(out_csv),
                "--scores_parquet",
                str(out_pq),
            ]
        )
        == 0
    )
    full = pd.read_parquet(out_pq)
    assert {"true_prob", "loss", "margin", "correct", "random", "ensemble", "hard"} <= set(full.columns)
    assert full["hard"].sum() == 2
    assert full.loc[full["hard"], "true_prob"].max() <= full.loc[~full["hard"], "true_prob"].min()
    np.testing.assert_allclose(full["loss"], -np.log(full["true_prob"]), rtol=1e-6)
    corr = pd.read_csv(tmp_path / "scores.spearman.csv", index_col=0)
    assert list(corr.columns) == list(corr.index) == ["true_prob", "loss", "margin", "correct", "random"]
    assert corr.loc["true_prob", "loss"] == pytest.approx(-1.0) and corr.loc["random", "random"] == pytest.approx(1.0)
    assert (
        mine_hard.main(
            [
                "--dataset",
                "folder",
                "--data",
                str(tmp_path / "imgs"),
                "--scorers",
                "random",
                "--bottom_q",
                "true_prob",
                "--output_csv",
                str(out_csv),
                "--scores_parquet",
                str(out_pq),
            ]
        )
        == 2
    )


def test_zero_shot_clip_scores_align_by_sample_id(tmp_path, tiny_hf_clip_dir):
    """Zero-shot CLIP through mine_hard equals a direct computation; shuffling the table changes nothing."""
    from PIL import Image

    from data_generation import mine_hard
    from data_generation.mining.datasets import load_image_folder
    from data_generation.scoring.backends import load_scorer

    make_image_folder(tmp_path / "imgs", {"cat": 3, "dog": 3})
    table = load_image_folder(tmp_path / "imgs")
    csv = tmp_path / "t.csv"
    table.drop(columns="source_path").to_csv(csv, index=False)
    shuffled = tmp_path / "s.csv"
    table.drop(columns="source_path").sample(frac=1, random_state=0).to_csv(shuffled, index=False)
    outs = []
    for src in (csv, shuffled):
        pq = tmp_path / f"{src.stem}.parquet"
        assert (
            mine_hard.main(
                [
                    "--dataset",
                    "table",
                    "--data",
                    str(src),
                    "--data_root",
                    str(tmp_path / "imgs"),
                    "--split",
                    "",
                    "--scorers",
                    "zero_shot_clip",
                    "--clip_backend",
                    "transformers",
                    "--clip_model",
                    str(tiny_hf_clip_dir),
                    "--templates",
                    "generic",
                    "--bottom_q",
                    "true_prob=0.34",
                    "--output_csv",
                    str(tmp_path / f"hard_{src.stem}.csv"),
                    "--scores_parquet",
                    str(pq),
                ]
            )
            == 0
        )
        outs.append(pd.read_parquet(pq).set_index("sample_id").sort_index())
    pd.testing.assert_series_equal(outs[0]["true_prob"], outs[1]["true_prob"], rtol=1e-6)
    assert outs[0]["hard"].equals(outs[1]["hard"]) and outs[0]["hard"].sum() == 3
    assert (
        mine_hard.main(
            [
                "--dataset",
                "table",
                "--data",
                str(csv),
                "--data_root",
                str(tmp_path / "imgs"),
                "--scorers",
                "random",
                "--output_csv",
                str(csv),
                "--scores_parquet",
                str(pq),
            ]
        )
        == 2
    )
    assert len(pd.read_csv(csv)) == 6  # the input table was not overwritten
    scorer = load_scorer("transformers", str(tiny_hf_clip_dir))
    text = scorer.embed_texts(["a photo of a cat.", "a photo of a dog."])
    img = scorer.embed_images([Image.open(tmp_path / "imgs" / "dog" / "dog_1.png").convert("RGB")])
    logits = 100.0 * img @ (text / np.linalg.norm(text, axis=1, keepdims=True)).T
    p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert outs[0].loc["dog_1", "true_prob"] == pytest.approx(float(p[0, 1]), abs=1e-5)


def test_prototype_scorer_uses_curriculum_prototypes(tmp_path):
    """A tiny ViT (timm, local weights) embeds; curriculum.fit_prototypes gives the distances; rule selects top q."""
    import timm
    from safetensors.torch import save_file

    from curriculum import PretrainedModelExtractor, create_dino_model, fit_prototypes
    from data_generation import mine_hard
    from data_generation.mining.difficulty import SampleImages

    make_image_folder(tmp_path / "imgs", {"cat": 5, "dog": 5})
    weights = tmp_path / "vit.safetensors"
    torch_model = timm.create_model("vit_small_patch16_224.dino", pretrained=False, num_classes=0, img_size=32)
    save_file(torch_model.state_dict(), str(weights))
    pq = tmp_path / "scores.parquet"
    argv = [
        "--dataset",
        "folder",
        "--data",
        str(tmp_path / "imgs"),
        "--scorers",
        "prototype",
        "--feature_model",
        "dino_vits16",
        "--feature_weights",
        str(weights),
        "--feature_img_size",
        "32",
        "--n_clusters",
        "2",
        "--top_q",
        "prototype_distance=0.2",
        "--output_csv",
        str(tmp_path / "hard.csv"),
        "--scores_parquet",
        str(pq),
    ]
    assert mine_hard.main(argv) == 0
    full = pd.read_parquet(pq).set_index("sample_id")
    assert full["hard"].sum() == 2 and set(full["prototype_cluster"]) == {0, 1}
    assert full.loc[full["hard"], "prototype_distance"].min() >= full.loc[~full["hard"], "prototype_distance"].max()
    # the same numbers as the curriculum package used directly (one implementation)
    from timm.data import create_transform, resolve_data_config

    model = create_dino_model("dino_vits16", weights=weights, img_size=32)
    cfg = resolve_data_config({}, model=model)
    cfg.update(input_size=(3, 32, 32), crop_pct=1.0)
    table = load_image_folder(tmp_path / "imgs")
    feats, _ = PretrainedModelExtractor(model).extract(SampleImages(table, create_transform(**cfg)))
    direct = fit_prototypes(feats, n_clusters=2, seed=0).distances
    np.testing.assert_allclose(full.loc[table["sample_id"], "prototype_distance"].to_numpy(), direct, rtol=1e-5)


def test_prefixed_columns_of_a_second_scorer_rank_like_their_base_score():
    """`checkpoint_true_prob` (the name a second classifier scorer's column gets) ranks like `true_prob`."""
    from data_generation.mining.difficulty import base_score_name, correctness_columns

    assert base_score_name("checkpoint_true_prob") == "true_prob"
    assert base_score_name("zero_shot_clip_loss") == "loss"
    assert base_score_name("prototype_prototype_cluster") == "prototype_cluster"
    assert base_score_name("my_margin") == "my_margin"  # a user's column keeps its name
    scores = pd.DataFrame(
        {
            "true_prob": [0.9, 0.1, 0.5],
            "checkpoint_true_prob": [0.9, 0.1, 0.5],
            "checkpoint_loss": -np.log([0.9, 0.1, 0.5]),
            "correct": [True, False, True],
            "checkpoint_correct": [True, True, False],
        },
        index=["a", "b", "c"],
    )
    ranks = rank_normalise(scores)
    assert ranks["checkpoint_true_prob_rank"].tolist() == ranks["true_prob_rank"].tolist() == [0.0, 1.0, 0.5]
    assert ranks["checkpoint_loss_rank"].tolist() == [0.0, 1.0, 0.5]
    assert ranks.loc["c", "checkpoint_correct_rank"] == 1.0  # wrong = hardest
    assert correctness_columns(scores.columns) == ["correct", "checkpoint_correct"]


def test_misclassified_with_two_classifier_scorers():
    """Default: wrong under any classifier; `misclassified_by` picks columns; the rule text names them."""
    table, cls = _scores()
    second = cls.copy()
    second["correct"] = True
    second.loc[["s002", "s005"], "correct"] = False
    scored = join_scores(table, cls, second.add_prefix("checkpoint_"))
    anyone = select_hard(scored, HardRule(misclassified=True))
    assert anyone[anyone].index.tolist() == ["s002", "s005", "s009"]
    only = select_hard(scored, HardRule(misclassified=True, misclassified_by=("checkpoint_correct",)))
    assert only[only].index.tolist() == ["s002", "s005"]
    resolved = HardRule(misclassified=True).resolve(scored.columns)
    assert resolved.describe() == "misclassified (any of correct, checkpoint_correct is false)"
    assert HardRule(misclassified=True).resolve(cls.columns).describe() == "misclassified (correct is false)"
    with pytest.raises(ValueError, match="--misclassified checkpoint_loss: not a correctness column"):
        select_hard(scored, HardRule(misclassified=True, misclassified_by=("checkpoint_loss",)))


def test_tail_rule_counts_the_training_split_not_the_mined_table(tmp_path):
    """ImageNet-LT val list mined with --train_list: tail classes are those with few *training* images."""
    from data_generation import mine_hard

    train = make_fake_imagenet_lt(tmp_path / "train", {0: 25, 1: 3, 2: 30})
    val = make_fake_imagenet_lt(tmp_path / "val", {0: 2, 1: 2, 2: 2}, seed=1)
    out_csv, out_pq = tmp_path / "hard.csv", tmp_path / "scores.parquet"
    argv = [
        "--dataset",
        "imagenet_lt",
        "--data",
        str(val),
        "--data_root",
        str(tmp_path / "val"),
        "--scorers",
        "random",
        "--tail_only",
        "--output_csv",
        str(out_csv),
        "--scores_parquet",
        str(out_pq),
    ]
    assert mine_hard.main(argv + ["--train_list", str(train)]) == 0
    full = pd.read_parquet(out_pq)
    assert sorted(full.loc[full["hard"], "label"].unique()) == [1] and full["hard"].sum() == 2
    assert full.groupby("label")["train_count"].first().to_dict() == {0: 25, 1: 3, 2: 30}
    meta = read_parquet_metadata(out_pq)
    assert meta["rule"]["count_column"] == "train_count"
    # without the training list every class of the 6-image val list is a tail class
    assert mine_hard.main(argv) == 0
    assert pd.read_parquet(out_pq)["hard"].sum() == 6
    # a table without train_count: counted in the table being mined
    scored = join_scores(*_scores())
    tail = select_hard(scored, HardRule(tail_only=True, tail_max_count=10))
    assert tail.sum() == 40
    table, cls = _scores()
    table["train_count"] = table["label"].map({0: 100, 1: 5, 2: 100, 3: 100})
    tail = select_hard(join_scores(table, cls), HardRule(tail_only=True, count_column="train_count"))
    assert set(table.set_index("sample_id").loc[tail[tail].index, "label"]) == {1}
    table.loc[0, "train_count"] = 7
    with pytest.raises(ValueError, match="'train_count' gives label 0 different class counts"):
        select_hard(join_scores(table, cls), HardRule(tail_only=True, count_column="train_count"))


def test_mine_hard_with_the_tiny_open_clip_zero_shot_scorer(tmp_path, tiny_open_clip_dir):
    """open_clip backend through mine_hard equals a direct zero-shot computation with the same model."""
    from PIL import Image

    from data_generation import mine_hard
    from data_generation.scoring.backends import load_scorer

    make_image_folder(tmp_path / "imgs", {"cat": 3, "dog": 3})
    pq = tmp_path / "scores.parquet"
    assert (
        mine_hard.main(
            [
                "--dataset",
                "folder",
                "--data",
                str(tmp_path / "imgs"),
                "--scorers",
                "zero_shot_clip",
                "--clip_backend",
                "open_clip",
                "--clip_model",
                str(tiny_open_clip_dir),
                "--templates",
                "generic",
                "--bottom_q",
                "true_prob=0.5",
                "--output_csv",
                str(tmp_path / "hard.csv"),
                "--scores_parquet",
                str(pq),
            ]
        )
        == 0
    )
    full = pd.read_parquet(pq).set_index("sample_id")
    assert full["hard"].sum() == 3
    assert full.loc[full["hard"], "true_prob"].max() <= full.loc[~full["hard"], "true_prob"].min()
    scorer = load_scorer("open_clip", str(tiny_open_clip_dir))
    text = scorer.embed_texts(["a photo of a cat.", "a photo of a dog."])
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    for sid, label in (("cat_0", 0), ("dog_2", 1)):
        img = scorer.embed_images([Image.open(tmp_path / "imgs" / sid.split("_")[0] / f"{sid}.png").convert("RGB")])
        logits = 100.0 * img @ text.T
        p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert full.loc[sid, "true_prob"] == pytest.approx(float(p[0, label]), abs=1e-5)
        assert bool(full.loc[sid, "correct"]) == (int(p.argmax()) == label)


def test_mine_hard_on_wilds_iwildcam_round_trips_into_gene_img_reader(tmp_path):
    """The hard CSV mined from the fake WILDS tree reads back (gene_img's reader) with the same ids and labels,
    and its paths resolve against <root>/iwildcam_v2.0 (not <root>)."""
    from pathlib import Path

    from data_generation import mine_hard

    make_fake_iwildcam(tmp_path / "wilds")
    out_csv, out_pq = tmp_path / "hard.csv", tmp_path / "scores.parquet"
    assert (
        mine_hard.main(
            [
                "--dataset",
                "iwildcam",
                "--data",
                str(tmp_path / "wilds"),
                "--scorers",
                "random",
                "--bottom_q",
                "random=0.5",
                "--output_csv",
                str(out_csv),
                "--scores_parquet",
                str(out_pq),
            ]
        )
        == 0
    )
    full = pd.read_parquet(out_pq)
    assert len(full) == 12 and set(full["split"]) == {"train"} and full["hard"].sum() == 6
    assert out_csv.read_text().splitlines()[0] == ",label id,label name,filepath,img_name"
    back = read_sample_table(out_csv, data_root=tmp_path / "wilds" / "iwildcam_v2.0")
    assert back.attrs["layout"] == "iwildcam"
    expected = full[full["hard"]].set_index("sample_id")[["label", "label_name", "filepath"]].sort_index()
    got = back.set_index("sample_id")[["label", "label_name", "filepath"]].sort_index()
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert all(Path(p).is_file() for p in back["source_path"])
    assert not any(Path(p).is_file() for p in read_sample_table(out_csv, data_root=tmp_path / "wilds")["source_path"])


def test_planted_misclassified_sample_through_a_real_classifier_and_two_classifier_scorers(tmp_path, tiny_hf_clip_dir):
    """A tiny timm classifier fitted to the true labels disagrees with exactly the one relabelled sample.

    Zero-shot CLIP runs first, so the checkpoint's columns are `checkpoint_*`: they must rank in the direction
    of their base score, and the ensemble must average correctly directed ranks. Shuffled input, same result.
    """
    from data_generation import mine_hard

    from .fakes import save_fitted_classifier

    make_image_folder(tmp_path / "imgs", {"cat": 4, "dog": 4, "owl": 4})
    table = load_image_folder(tmp_path / "imgs")
    weights = save_fitted_classifier(table, tmp_path / "clf.safetensors")
    relabelled = table.drop(columns="source_path")
    relabelled.loc[relabelled["sample_id"] == "dog_2", ["label", "label_name"]] = [2, "owl"]  # the planted error
    csvs = {"table": tmp_path / "t.csv", "shuffled": tmp_path / "s.csv"}
    relabelled.to_csv(csvs["table"], index=False)
    relabelled.sample(frac=1, random_state=0).to_csv(csvs["shuffled"], index=False)

    def mine(src, *rule):
        pq = tmp_path / f"scores_{src.stem}.parquet"
        assert (
            mine_hard.main(
                [
                    "--dataset",
                    "table",
                    "--data",
                    str(src),
                    "--data_root",
                    str(tmp_path / "imgs"),
                    "--split",
                    "",
                    "--scorers",
                    "zero_shot_clip",
                    "checkpoint",
                    "--clip_backend",
                    "transformers",
                    "--clip_model",
                    str(tiny_hf_clip_dir),
                    "--templates",
                    "generic",
                    "--classifier_arch",
                    "test_resnet",
                    "--classifier_weights",
                    str(weights),
                    *rule,
                    "--output_csv",
                    str(tmp_path / f"hard_{src.stem}.csv"),
                    "--scores_parquet",
                    str(pq),
                ]
            )
            == 0
        )
        return pd.read_parquet(pq).set_index("sample_id").sort_index(), pq

    full, pq = mine(csvs["table"], "--misclassified", "checkpoint_correct")
    assert full.index[full["hard"]].tolist() == ["dog_2"]
    assert full.loc["dog_2", "checkpoint_true_prob_rank"] == 1.0
    assert read_parquet_metadata(pq)["rule_text"] == "misclassified (checkpoint_correct is false)"
    shuffled, _ = mine(csvs["shuffled"], "--misclassified", "checkpoint_correct")
    # (batch order moves float32 CLIP outputs by ~1e-7)
    pd.testing.assert_frame_equal(full, shuffled, atol=1e-5)

    # directions: a lower true-class probability or margin is harder, a higher loss is harder
    n = len(full)
    direction = {"true_prob": False, "loss": True, "margin": False, "correct": False}
    expected = []
    for prefix in ("", "checkpoint_"):
        for base, larger_is_harder in direction.items():
            col = prefix + base
            rank = (full[col].astype(float).rank(ascending=larger_is_harder) - 1) / (n - 1)
            pd.testing.assert_series_equal(full[f"{col}_rank"], rank, check_names=False)
            expected.append(rank)
    pd.testing.assert_series_equal(full["ensemble"], pd.concat(expected, axis=1).mean(axis=1), check_names=False)

    # --misclassified alone: wrong under either classifier; the Spearman table is written beside the Parquet
    full, pq = mine(csvs["table"], "--misclassified")
    assert len(full) == 12
    wrong = ~(full["correct"].astype(bool) & full["checkpoint_correct"].astype(bool))
    assert full["hard"].equals(wrong.rename("hard")) and full.loc["dog_2", "hard"]
    assert read_parquet_metadata(pq)["rule_text"] == "misclassified (any of correct, checkpoint_correct is false)"
    corr = pd.read_csv(pq.with_suffix(".spearman.csv"), index_col=0)
    assert list(corr.index) == list(corr.columns) and "checkpoint_true_prob" in corr.columns
    assert corr.loc["checkpoint_true_prob", "checkpoint_loss"] == pytest.approx(-1.0)
    np.testing.assert_allclose(np.diag(corr.to_numpy()), 1.0)


def test_prototype_state_from_a_classifier_checkpoint_feeds_phase_2(tmp_path):
    """The feature model may be a classifier checkpoint (a CNN: its head is dropped, no img_size); the saved
    curriculum state holds the scaled distances keyed by sample id, and Phase 2's prototype schedule reads it."""
    import timm
    from safetensors.torch import save_file

    from curriculum.prototypes import scale_distances
    from curriculum.state import load_curriculum_state
    from data_generation import mine_hard
    from training.trainers.runs import prototype_schedule

    make_image_folder(tmp_path / "imgs", {"cat": 6, "dog": 6})
    weights = tmp_path / "clf.safetensors"
    save_file(timm.create_model("test_resnet", pretrained=False, num_classes=2).state_dict(), str(weights))
    pq, state = tmp_path / "scores.parquet", tmp_path / "proto"
    argv = [
        "--dataset",
        "folder",
        "--data",
        str(tmp_path / "imgs"),
        "--scorers",
        "checkpoint",
        "prototype",
        "--classifier_arch",
        "test_resnet",
        "--classifier_weights",
        str(weights),
        "--classifier_img_size",
        "16",
        "--feature_model",
        "test_resnet",
        "--feature_weights",
        str(weights),
        "--feature_img_size",
        "16",
        "--n_clusters",
        "2",
        "--top_q",
        "prototype_distance=0.25",
        "--output_csv",
        str(tmp_path / "hard.csv"),
        "--scores_parquet",
        str(pq),
        "--prototype_state",
        str(state),
    ]
    assert mine_hard.main(argv) == 0
    full = pd.read_parquet(pq).set_index("sample_id")
    st = load_curriculum_state(state)
    assert sorted(st.sample_ids) == sorted(full.index)
    d = full.loc[st.sample_ids, "prototype_distance"].to_numpy()
    np.testing.assert_allclose(st.arrays["distances"], d)
    np.testing.assert_allclose(
        st.arrays["difficulty"], scale_distances(d, full.loc[st.sample_ids, "prototype_cluster"].to_numpy(), "minmax")
    )
    assert st.config["distance_scaling"] == "minmax" and st.config["source"] == "mine_hard.py"
    ids = list(reversed(st.sample_ids))  # aligned by id, not position
    sched = prototype_schedule(str(state), ids, start=0.3, warmup_steps=10, mode="prototypes_first")
    assert sched is not None
    # without the prototype scorer the flag is an error, before anything is written
    bad = argv[:]
    bad[bad.index("prototype")] = "random"
    assert mine_hard.main(bad + ["--output_csv", str(tmp_path / "h2.csv")]) == 2
    assert not (tmp_path / "h2.csv").exists()


def test_training_dynamics_scores_by_formula_and_through_mine_hard(tmp_path):
    """dynamics.parquet (Phase 2 --log_dynamics) -> cumulative accuracy, confidence, variability, first-learned
    epoch and forgetting per sample; mine_hard selects by them, joined by sample_id."""
    from data_generation import mine_hard
    from data_generation.mining.difficulty import dynamics_scores

    pattern = {"a": [1, 1, 1, 1], "b": [0, 1, 0, 1], "c": [0, 0, 0, 0], "d": [1, 0, 1, 1]}
    rows = [
        {"epoch": e, "sample_id": s, "correct": bool(c), "true_prob": 0.9 if c else 0.2}
        for s, cs in pattern.items()
        for e, c in enumerate(cs)
    ]
    dyn = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # row order must not matter
    got = dynamics_scores(dyn)
    assert got.loc["a"].to_dict() == {
        "cum_accuracy": 1.0,
        "mean_true_prob": 0.9,
        "true_prob_std": 0.0,
        "first_learned": 0.0,
        "forgetting": 0.0,
    }
    assert (
        got.loc["b", "first_learned"] == 3 and got.loc["b", "forgetting"] == 1 and got.loc["b", "cum_accuracy"] == 0.5
    )
    assert got.loc["c", "first_learned"] == 4 and got.loc["c", "forgetting"] == 0  # never learned
    assert got.loc["d", "first_learned"] == 2 and got.loc["d", "forgetting"] == 1
    assert got.loc["b", "true_prob_std"] == pytest.approx(0.35)
    with pytest.raises(ValueError, match="missing \\['correct'\\]"):
        dynamics_scores(dyn.drop(columns="correct"))

    make_image_folder(tmp_path / "imgs", {"cat": 2, "dog": 2})
    table = load_image_folder(tmp_path / "imgs")
    ids = table["sample_id"].tolist()
    dyn["sample_id"] = dyn["sample_id"].map(dict(zip("abcd", ids)))
    dyn.to_parquet(tmp_path / "dynamics.parquet")
    pq = tmp_path / "scores.parquet"
    assert (
        mine_hard.main(
            [
                "--dataset",
                "folder",
                "--data",
                str(tmp_path / "imgs"),
                "--scorers",
                "dynamics",
                "--dynamics",
                str(tmp_path / "dynamics.parquet"),
                "--bottom_q",
                "cum_accuracy=0.25",
                "--output_csv",
                str(tmp_path / "hard.csv"),
                "--scores_parquet",
                str(pq),
            ]
        )
        == 0
    )
    full = pd.read_parquet(pq).set_index("sample_id")
    assert full.index[full["hard"]].tolist() == [ids[2]]  # "c": never correct
    assert full.loc[ids[2], "cum_accuracy_rank"] == 1.0  # the hardest rank: low accuracy is hard
