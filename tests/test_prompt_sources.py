"""Prompt sources (issue 14): the offline template backend of get_text_prompt.py, one local model per run, the
generation prompt prefix and the text the CLIP filter scores against."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_generation import comp_clip_scores, get_text_prompt
from data_generation.prompting.text_prompts import TemplateDescriptions, generate_prompt_file

from .fake_trees import SLASH_LABEL, make_official_imagenet_lt


def test_template_backend_is_deterministic_and_long_enough(tmp_path):
    t = TemplateDescriptions()
    a, b = t.describe("tench", 10), TemplateDescriptions().describe("tench", 10)
    assert a == b and len(set(a)) == 10
    assert all("tench" in d and len(d.split()) >= 15 and "  " not in d for d in a)
    assert t.describe("goldfish", 3) != t.describe("tench", 3)
    attrs = tmp_path / "attrs.json"
    attrs.write_text(json.dumps({"tench": ["green", "spotted"], "*": ["small"]}))
    ta = TemplateDescriptions(attributes=str(attrs))
    assert {w for d in ta.describe("tench", 4) for w in ("green", "spotted") if f"{w} tench" in d} == {
        "green",
        "spotted",
    }
    assert all("small goldfish" in d for d in ta.describe("goldfish", 3))
    tf = tmp_path / "t.txt"
    tf.write_text("one {name}\ntwo {name}\n")
    assert sorted(TemplateDescriptions(templates=str(tf)).describe("cat", 2)) == ["one cat", "two cat"]
    tf.write_text('["no placeholder"]')
    with pytest.raises(ValueError, match="each with {name}"):
        TemplateDescriptions(templates=str(tf))


def test_get_text_prompt_offline_on_the_official_lists(tmp_path, capsys):
    root = make_official_imagenet_lt(tmp_path / "ImageNet", {0: 3, SLASH_LABEL: 2}, val_per_class=0, test_per_class=0)
    out = tmp_path / "prompts.json"
    argv = ["--data_csv", str(root), "--prompt_json", str(out), "--backend", "template"]
    assert get_text_prompt.main(argv) == 0
    data = json.loads(out.read_text())
    assert set(data) == {"tench", "baluster / handrail"} and all(len(v) == 10 for v in data.values())
    first = out.read_bytes()
    out.unlink()
    assert get_text_prompt.main(argv) == 0 and out.read_bytes() == first  # deterministic
    assert "1 already done" not in capsys.readouterr().out
    assert get_text_prompt.main(argv) == 0  # resumed with the same settings: both classes already there
    assert "2 already done" in capsys.readouterr().out
    # a resume with other settings is refused, naming the change (issue 16), not relabelled as done
    assert get_text_prompt.main(argv + ["--min_words", "40"]) == 2
    assert "--min_words 15 -> 40" in capsys.readouterr().err
    assert (
        get_text_prompt.main(
            [
                "--data_csv",
                str(root),
                "--prompt_json",
                str(tmp_path / "p2.json"),
                "--min_words",
                "40",
                "--backend",
                "template",
            ]
        )
        == 1
    )
    bad = ["--data_csv", str(root), "--prompt_json", str(tmp_path / "x.json"), "--attributes", "a.json"]
    assert get_text_prompt.main(bad + ["--backend", "transformers"]) == 2
    assert "--templates_file/--attributes need --backend template" in capsys.readouterr().err


def test_a_local_model_is_loaded_once_per_run(tmp_path, monkeypatch):
    from data_generation.prompting import text_prompts
    from data_generation.prompting.text_prompts import LocalTextGeneration

    loads = []

    class FakePipe:
        tokenizer = type("T", (), {"chat_template": None})()

        def __call__(self, text, **kw):
            words = " ".join(["word"] * 15)
            return [{"generated_text": json.dumps([f"{words} {i}" for i in range(10)])}]

    def fake_pipeline(model, device):
        loads.append(model)
        return FakePipe()

    monkeypatch.setattr(text_prompts, "_text_generation_pipeline", fake_pipeline)
    run = generate_prompt_file(["a", "b", "c"], tmp_path / "p.json", LocalTextGeneration(model="/m"), progress=False)
    assert run.written == 3 and loads == ["/m"]


def test_a_local_model_that_cannot_load_stops_the_run_once(tmp_path, capsys):
    root = make_official_imagenet_lt(tmp_path / "ImageNet", {0: 2}, val_per_class=0, test_per_class=0)
    argv = ["--data_csv", str(root), "--prompt_json", str(tmp_path / "p.json"), "--backend", "transformers"]
    assert get_text_prompt.main(argv + ["--model", str(tmp_path / "no-such-model")]) == 2
    assert capsys.readouterr().err.startswith("get_text_prompt: error: ")
    assert not (tmp_path / "p.json").exists()


def test_filter_scores_against_the_text_template(spectrum_copy, tiny_open_clip_dir):
    """--text_template: each image is scored against "a photo of {class}" (the reference's ImageNet-LT filter), not
    its generation prompt; the similarity is the cosine with that text's embedding."""
    from data_generation.scoring.backends import load_scorer

    sp = spectrum_copy
    out = sp["root"] / "scores"
    argv = ["--syn_path", str(sp["syn"]), "--real_path", str(sp["data"]), "--clip_backend", "open_clip"]
    argv += ["--clip_model", str(tiny_open_clip_dir), "--output_dir", str(out), "--no_progress", "--no_plots"]
    argv += ["--text_template", "a photo of {name}", "--num_workers", "0", "--no_cache"]
    assert comp_clip_scores.main(argv) == 0
    s = pd.read_parquet(out / "clip_scores.parquet")
    assert set(s["scored_text"]) == {"a photo of cheetah", "a photo of zebra"}
    assert not s["prompt"].str.startswith("a photo of cheetah").all()  # the generation prompt is kept as it was
    scorer = load_scorer("open_clip", str(tiny_open_clip_dir), device="cpu")
    row = s.iloc[0]
    img = scorer.embed_images([Image.open(sp["syn"] / row["path"]).convert("RGB")])[0]
    txt = scorer.embed_texts([row["scored_text"]])[0]
    assert row["clip_txt_sim"] == pytest.approx(float(np.dot(img, txt)), abs=1e-4)
    assert comp_clip_scores.main(argv[:-5] + ["--text_template", "no placeholder"]) == 2


@pytest.mark.slow
def test_clip_checked_retries_keep_the_best_attempt(tmp_path, tiny_sd_dir, tiny_hf_clip_dir):
    """--retry_clip_model: an image at or below the threshold is generated again with the class's next
    description (up to --retry_attempts), the best attempt is kept and the manifest records its prompt."""
    from data_generation import gene_img
    from data_generation.generation.retry import ClipRetry
    from data_generation.scoring.backends import load_scorer

    root = make_official_imagenet_lt(tmp_path / "ImageNet", {0: 1, SLASH_LABEL: 1}, val_per_class=0, test_per_class=0)
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"tench": ["d0", "d1", "d2"], "baluster / handrail": ["e0", "e1", "e2"]}))
    base = ["--data_csv", str(root), "--model_id", str(tiny_sd_dir), "--strengths", "0.5", "--seeds", "1"]
    base += ["--steps", "2", "--no_progress", "--prompt_json", str(prompts), "--prompt_prefix", "a 8k real photo: "]
    check = ["--retry_clip_model", str(tiny_hf_clip_dir), "--retry_attempts", "3"]

    def run(out, *extra):
        assert gene_img.main(base + ["--output_path", str(out), *extra]) == 0
        return pd.read_parquet(next(out.glob("manifest-part*.parquet"))).sort_values("sample_id")

    plain = run(tmp_path / "plain")
    never = run(tmp_path / "never", *check, "--retry_threshold", "-1.0")  # every image passes: no retry
    assert never["prompt"].tolist() == plain["prompt"].tolist()
    for p in plain["path"]:
        assert (tmp_path / "never" / p).read_bytes() == (tmp_path / "plain" / p).read_bytes()
    always = run(tmp_path / "always", *check, "--retry_threshold", "1.0")  # nothing passes: 3 attempts each
    again = run(tmp_path / "again", *check, "--retry_threshold", "1.0")
    assert always["prompt"].tolist() == again["prompt"].tolist()  # deterministic
    assert all(p.startswith("a 8k real photo: ") for p in always["prompt"])
    # the kept image is the best of its attempts: recompute the three candidates' similarities
    scorer = load_scorer("transformers", str(tiny_hf_clip_dir), device="cpu")
    retry = ClipRetry(scorer, 1.0, 3)
    from curriculum.images import load_rgb

    for _, row in always.iterrows():
        kept = retry.similarities(
            [np.asarray(load_rgb(tmp_path / "always" / row["path"]), dtype=np.float32) / 255], [row["label_name"]]
        )[0]
        first = retry.similarities(
            [np.asarray(load_rgb(tmp_path / "plain" / row["path"]), dtype=np.float32) / 255], [row["label_name"]]
        )[0]
        assert kept >= first - 0.02  # JPEG round trip tolerance
    from curriculum.tables import read_parquet_metadata

    meta = read_parquet_metadata(next((tmp_path / "always").glob("manifest-part*.parquet")))
    assert meta["generator"]["clip_retry"]["counts"] == {"checked": 2, "retried": 2, "generations": 6, "below": 2}
