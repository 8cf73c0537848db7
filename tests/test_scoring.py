"""CLIPScore scoring of a real generated spectrum with tiny CLIP models loaded from folders."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from curriculum.images import load_rgb
from curriculum.tables import read_parquet_metadata
from data_generation.scoring.backends import load_scorer
from data_generation.scoring.index import build_index
from data_generation.scoring.score import ScoringConfig, keep_mask, score_spectrum


def _cfg(sp, backend, clip_dirs, **kw) -> ScoringConfig:
    base = dict(
        syn_path=str(sp["syn"]),
        clip_backend=backend,
        clip_model=str(clip_dirs[backend]),
        progress=False,
        output_dir=str(sp["root"] / f"out-{backend}"),
        cache_dir=str(sp["root"] / "cache"),
        plots=False,
    )
    base.update(kw)
    return ScoringConfig(**base)


@pytest.mark.parametrize("backend", ["transformers", "open_clip"])
def test_scores_equal_a_direct_unbatched_computation(backend, clip_dirs, spectrum_copy, generated_spectrum):
    sp = spectrum_copy
    # batch size 5 does not divide 12 images: the last batch is short; two worker threads preprocess
    res = score_spectrum(_cfg(sp, backend, clip_dirs, batch_size=5, num_workers=2))
    scores = res.scores
    assert len(scores) == 12 and (scores["score_status"] == "ok").all()
    assert res.embedded == {"synthetic": 12, "real": 2, "text": 2}  # each real image and prompt once
    scorer = load_scorer(backend, str(clip_dirs[backend]))  # a fresh model, one item per call
    for row in scores.itertuples():
        syn = scorer.embed_images([load_rgb(sp["syn"] / row.path)])[0]
        real = scorer.embed_images([load_rgb(sp["data"] / row.filepath)])[0]
        txt = scorer.embed_texts([row.prompt])[0]
        assert abs(float(syn @ txt) - row.clip_txt_sim) < 1e-5
        assert abs(float(syn @ real) - row.clip_img_sim) < 1e-5
    # the scores vary across the spectrum (not a constant)
    assert scores["clip_img_sim"].std() > 1e-4 and scores["clip_txt_sim"].std() > 1e-4
    meta = read_parquet_metadata(res.paths["scores"])
    assert meta["scoring"]["threshold"] == 0.25 and meta["scoring"]["scorer"]["backend"] == backend
    # the manifest's own metadata is kept; without --real_path its data_root located the real images
    assert meta["config"]["data_root"] == str(generated_spectrum["data"]) == meta["scoring"]["real_root"]


def test_thresholds_keep_exactly_the_rows_they_should(clip_dirs, spectrum_copy):
    sp = spectrum_copy
    first = score_spectrum(_cfg(sp, "open_clip", clip_dirs, threshold=-1.0))
    txt, img = first.scores["clip_txt_sim"].to_numpy(), first.scores["clip_img_sim"].to_numpy()
    assert first.scores["keep"].all()
    # thresholds exactly at observed values: >= keeps the row that equals the threshold
    t_thr, i_thr = float(np.sort(txt)[5]), float(np.sort(img)[3])
    res = score_spectrum(_cfg(sp, "open_clip", clip_dirs, threshold=t_thr, img_threshold=i_thr))
    expected = (txt >= t_thr) & (img >= i_thr)
    assert 0 < expected.sum() < 12
    np.testing.assert_array_equal(res.scores["keep"].to_numpy(), expected)
    filtered = pd.read_parquet(res.paths["filtered"])
    assert sorted(filtered["synthetic_id"]) == sorted(res.scores.loc[expected, "synthetic_id"])
    assert filtered["keep"].all()
    meta = read_parquet_metadata(res.paths["filtered"])["scoring"]
    assert (meta["threshold"], meta["img_threshold"]) == (t_thr, i_thr) and meta["counts"]["kept"] == expected.sum()
    # a new threshold reuses every cached embedding: nothing is embedded again, scores are identical
    assert res.embedded == {"synthetic": 0, "real": 0, "text": 0}
    assert res.reused == {"synthetic": 12, "real": 2, "text": 2}
    np.testing.assert_array_equal(res.scores["clip_txt_sim"].to_numpy(), txt)


def test_keep_mask_edges():
    txt = np.array([0.25, 0.2499, 0.3, np.nan, 0.9])
    img = np.array([0.5, 0.9, np.nan, 0.9, 0.1])
    np.testing.assert_array_equal(keep_mask(txt, img, 0.25, None), [True, False, True, False, True])
    np.testing.assert_array_equal(keep_mask(txt, img, 0.25, 0.5), [True, False, False, False, False])
    # a NaN image-image score (no real image) drops the row only under an image threshold
    np.testing.assert_array_equal(keep_mask(txt, img, None, None), [True, True, True, False, True])
    np.testing.assert_array_equal(keep_mask(txt, img, None, -1.0), [True, True, False, False, True])


def test_folder_walk_finds_the_same_images_as_the_manifest(clip_dirs, spectrum_copy):
    sp = spectrum_copy
    by_manifest = build_index(sp["syn"], real_path=sp["data"]).rows
    by_walk = build_index(
        sp["syn"], real_path=sp["data"], walk=True, data_csv=sp["csv"], prompt_template="iwildcam"
    ).rows
    cols = [
        "synthetic_id",
        "sample_id",
        "label",
        "label_name",
        "strength",
        "text_guidance",
        "seed",
        "path",
        "filepath",
        "real_file",
    ]
    a = by_manifest.sort_values("synthetic_id")[cols].reset_index(drop=True)
    b = by_walk.sort_values("synthetic_id")[cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert len(a) == len(sp["strengths"]) * len(sp["seeds"]) * 2
    # the canonical-table prompt template is 'a photo of a {name}.'; the walk rebuilds it from the class folder
    walk_default = build_index(sp["syn"], real_path=sp["data"], walk=True, data_csv=sp["csv"]).rows
    assert (
        walk_default.sort_values("synthetic_id")["prompt"].to_numpy()
        == by_manifest.sort_values("synthetic_id")["prompt"].to_numpy()
    ).all()

    # no manifest at all (a reference-made folder) and no CSV: real images are found by image name
    for f in sp["syn"].glob("manifest*.parquet"):
        f.unlink()
    flat = sp["root"] / "flat_real"
    flat.mkdir()
    for f in (sp["data"] / "imgs").iterdir():
        shutil.copy(f, flat / f.name)
    res_walk = score_spectrum(_cfg(sp, "open_clip", clip_dirs, real_path=str(flat)))
    assert res_walk.index.source.startswith("walk:")
    assert (res_walk.scores["score_status"] == "ok").all() and (res_walk.scores["label"] == -1).all()
    assert set(res_walk.scores["prompt"]) == {"a photo of a cheetah.", "a photo of a zebra."}


def test_walk_and_manifest_give_equal_scores(clip_dirs, spectrum_copy):
    sp = spectrum_copy
    m = score_spectrum(_cfg(sp, "transformers", clip_dirs, real_path=str(sp["data"]))).scores.set_index("synthetic_id")
    w = score_spectrum(
        _cfg(sp, "transformers", clip_dirs, real_path=str(sp["data"]), walk=True, data_csv=str(sp["csv"]))
    ).scores
    w = w.set_index("synthetic_id").loc[m.index]
    np.testing.assert_allclose(w["clip_txt_sim"], m["clip_txt_sim"], atol=1e-6)
    np.testing.assert_allclose(w["clip_img_sim"], m["clip_img_sim"], atol=1e-6)


def test_corrupt_and_missing_images_are_reported_and_marked_not_fatal(clip_dirs, spectrum_copy):
    sp = spectrum_copy
    manifest = pd.read_parquet(sp["syn"] / "manifest.parquet").sort_values("synthetic_id").reset_index(drop=True)
    zebra = manifest[manifest["sample_id"] == "zebra01"]["path"].tolist()
    cheetah = manifest[manifest["sample_id"] == "cheetah01"]["path"].tolist()
    (sp["syn"] / cheetah[0]).write_bytes((sp["syn"] / cheetah[0]).read_bytes()[:200])  # truncated JPEG
    (sp["syn"] / cheetah[1]).unlink()  # listed in the manifest, gone from disk
    (sp["data"] / "imgs" / "zebra01.jpg").unlink()  # the real source of every zebra variant
    res = score_spectrum(_cfg(sp, "open_clip", clip_dirs, real_path=str(sp["data"]), threshold=-1.0))
    s = res.scores.set_index("path")
    assert (
        s.loc[cheetah[0], "score_status"].startswith("unreadable synthetic image")
        and cheetah[0] in s.loc[cheetah[0], "score_status"]
    )
    assert s.loc[cheetah[1], "score_status"].startswith("missing synthetic image")
    real_missing = str(sp["data"] / "imgs" / "zebra01.jpg")
    assert all(s.loc[p, "score_status"] == f"missing real image {real_missing}" for p in zebra)
    assert s.loc[zebra, "clip_img_sim"].isna().all() and s.loc[zebra, "clip_txt_sim"].notna().all()
    bad = cheetah[:2] + zebra
    # no --img_threshold: only the image-text score filters, so a missing real image does not drop its rows;
    # the bad synthetic images are never kept
    assert not s.loc[cheetah[:2], "keep"].any()
    assert s.loc[zebra, "keep"].all() and s.drop(index=cheetah[:2])["keep"].all() and len(s) == 12
    fails = pd.read_csv(res.paths["failures"])
    assert sorted(fails["path"]) == sorted(bad)  # every problem is still reported with its path
    assert res.failure_reasons == {
        "unreadable synthetic image": 1,
        "missing synthetic image": 1,
        "missing real image": 6,
    }
    filtered = pd.read_parquet(res.paths["filtered"])
    assert sorted(filtered["path"]) == sorted(s.index.difference(cheetah[:2]))

    # with --img_threshold the image-image score filters too: a row without a real image cannot pass it
    res = score_spectrum(
        _cfg(sp, "open_clip", clip_dirs, real_path=str(sp["data"]), threshold=-1.0, img_threshold=-1.0)
    )
    s = res.scores.set_index("path")
    assert not s.loc[bad, "keep"].any()
    assert s.drop(index=bad)["keep"].all() and len(s.drop(index=bad)) == 4  # the rest is scored and kept
    assert all(s.loc[p, "score_status"] == f"missing real image {real_missing}" for p in zebra)


def test_summary_and_plots(clip_dirs, spectrum_copy):
    sp = spectrum_copy
    res = score_spectrum(_cfg(sp, "open_clip", clip_dirs, plots=True, threshold=0.0, grid_samples=2))
    summary = pd.read_csv(res.paths["summary"])
    scores = res.scores
    by_s = summary[summary["group"] == "strength"].set_index("value")
    for s in sp["strengths"]:
        assert by_s.loc[str(s), "total"] == (scores["strength"] == s).sum()
        assert by_s.loc[str(s), "kept"] == scores.loc[scores["strength"] == s, "keep"].sum()
    by_c = summary[summary["group"] == "class"].set_index("value")
    assert by_c.loc["zebra", "kept"] == scores.loc[scores["label_name"] == "zebra", "keep"].sum()
    assert by_c["total"].sum() == by_s["total"].sum() == summary.loc[summary["group"] == "all", "total"].item() == 12
    dist, grid = Image.open(res.paths["distributions"]), Image.open(res.paths["grid"])
    assert dist.format == grid.format == "PNG"
    # the grid has one row per sample (2) and 1 + 3 strength columns: wider than tall
    assert grid.size[0] > 1.5 * grid.size[1]


def test_real_path_may_name_the_image_folder_itself(spectrum_copy):
    sp = spectrum_copy
    as_root = build_index(sp["syn"], real_path=sp["data"]).rows.set_index("synthetic_id")["real_file"]
    as_folder = build_index(sp["syn"], real_path=sp["data"] / "imgs").rows.set_index("synthetic_id")["real_file"]
    assert (as_root == as_folder.loc[as_root.index]).all() and as_root.map(lambda p: p.endswith(".jpg")).all()


def test_a_filter_that_keeps_all_or_none_is_a_warning_with_the_numbers(clip_dirs, spectrum_copy, caplog):
    """A threshold below every image-text score keeps everything (the filter does nothing), one above every score
    keeps nothing: both are said, with the count and the extreme score; a threshold in between is silent."""
    sp = spectrum_copy
    with caplog.at_level(logging.WARNING, logger="data_generation.scoring.score"):
        res = score_spectrum(_cfg(sp, "open_clip", clip_dirs, threshold=-1.0))
    txt = res.scores["clip_txt_sim"].to_numpy()
    assert (
        f"keeps all 12 scorable synthetic images: --threshold -1.000 is below every clip_txt_sim (min {txt.min():.3f})"
        in caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="data_generation.scoring.score"):
        score_spectrum(_cfg(sp, "open_clip", clip_dirs, threshold=1.0))
    said = (
        "keeps none of 12 scorable synthetic images: --threshold 1.000 is above every clip_txt_sim "
        f"(max {txt.max():.3f})"
    )
    assert said in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="data_generation.scoring.score"):
        score_spectrum(_cfg(sp, "open_clip", clip_dirs, threshold=float(np.median(txt))))
    assert "the filter keeps" not in caplog.text
