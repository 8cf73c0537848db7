"""CLIP scorer backends on tiny real models saved to and loaded from folders."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from data_generation.scoring.backends import SCORERS, ScorerLoadError, load_scorer
from data_generation.scoring.cache import EmbeddingCache, file_key

PROMPTS = ["a photo of cheetah in the wild", "a photo of a zebra.", "a much longer prompt: " + "stripes " * 90]


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 255, (30 + 7 * i, 50 - 3 * i, 3), dtype=np.uint8)) for i in range(n)]


def _direct(backend: str, folder, images, texts):
    """Embeddings straight from the library, one item per call (no scorer code involved)."""
    if backend == "transformers":
        from transformers import CLIPModel, CLIPProcessor

        model, proc = CLIPModel.from_pretrained(str(folder)).eval(), CLIPProcessor.from_pretrained(str(folder))
        with torch.no_grad():
            img = [model.get_image_features(**proc(images=im, return_tensors="pt")).pooler_output[0] for im in images]
            txt = [
                model.get_text_features(
                    **proc(text=[t], return_tensors="pt", truncation=True, max_length=77)
                ).pooler_output[0]
                for t in texts
            ]
    else:
        import open_clip

        model, _, pre = open_clip.create_model_and_transforms(f"local-dir:{folder}")
        tok = open_clip.get_tokenizer(f"local-dir:{folder}")
        model.eval()
        with torch.no_grad():
            img = [model.encode_image(pre(im)[None])[0] for im in images]
            txt = [model.encode_text(tok([t]))[0] for t in texts]

    def norm(v):
        return (v / v.norm()).numpy()

    return np.stack([norm(v) for v in img]), np.stack([norm(v) for v in txt])


@pytest.mark.parametrize("backend", ["transformers", "open_clip"])
def test_batched_embeddings_equal_direct_unbatched_library_calls(backend, clip_dirs):
    scorer = load_scorer(backend, str(clip_dirs[backend]), device="cpu")
    images = _images(5)
    img, txt = scorer.embed_images(images), scorer.embed_texts(PROMPTS)
    ref_img, ref_txt = _direct(backend, clip_dirs[backend], images, PROMPTS)
    assert img.shape == (5, scorer.embed_dim) and txt.shape == (3, scorer.embed_dim)
    np.testing.assert_allclose(img, ref_img, atol=1e-5)
    np.testing.assert_allclose(txt, ref_txt, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    # different inputs give different embeddings (the model is not degenerate)
    assert np.abs(img[0] - img[1]).max() > 1e-3 and np.abs(txt[0] - txt[1]).max() > 1e-3
    desc = scorer.describe()
    assert desc["backend"] == backend and desc["dtype"] == "float32" and desc["preprocessing"]


def test_every_registered_backend_is_covered(clip_dirs):
    assert set(SCORERS.names()) >= {"transformers", "open_clip"}
    # the CLIP backends run the contract tests here; the offline probe (prompts must name a class) has its own
    # equivalence tests in tests/test_probe.py
    assert {SCORERS.get(n).backend for n in SCORERS.names()} == set(clip_dirs) | {"probe"}


def test_open_clip_name_plus_weights_file_equals_local_folder(tiny_open_clip_dir):
    import open_clip

    open_clip.add_model_config(tiny_open_clip_dir / "tiny-clip.json")
    by_file = load_scorer("open_clip", "tiny-clip", pretrained=str(tiny_open_clip_dir / "open_clip_model.safetensors"))
    by_dir = load_scorer("open_clip", str(tiny_open_clip_dir))
    images = _images(3)
    np.testing.assert_allclose(by_file.embed_images(images), by_dir.embed_images(images), atol=1e-6)
    random = load_scorer("open_clip", "tiny-clip", pretrained="none")
    assert np.abs(random.embed_images(images) - by_dir.embed_images(images)).max() > 1e-3


def test_unreachable_weights_fail_fast_with_a_clear_message(tiny_open_clip_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    t0 = time.perf_counter()
    with pytest.raises(ScorerLoadError, match="HF_HUB_OFFLINE|not in the local"):
        load_scorer("transformers", "someone/no-such-clip-model")
    with pytest.raises(ScorerLoadError, match="--clip_pretrained"):
        load_scorer("open_clip", "ViT-B-32", pretrained="laion2b_s34b_b79k")
    assert time.perf_counter() - t0 < 10
    with pytest.raises(ScorerLoadError, match="Did you mean 'ViT-B-32'"):
        load_scorer("open_clip", "ViT-B-23")
    with pytest.raises(ScorerLoadError, match="no such weights file"):
        load_scorer("open_clip", "ViT-B-32", pretrained=str(tiny_open_clip_dir / "absent.safetensors"))
    with pytest.raises(ScorerLoadError, match="no such directory"):
        load_scorer("transformers", "./not/a/folder")
    with pytest.raises(ScorerLoadError, match="open_clip_config.json"):
        load_scorer("open_clip", str(tiny_open_clip_dir.parent))
    with pytest.raises(KeyError, match="Did you mean .*'open_clip'"):
        load_scorer("open-clip", "x")


def test_embedding_cache_round_trips_through_safetensors_and_keys_follow_file_changes(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache", "synthetic", flush_rows=3)
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((5, 8)).astype(np.float32)
    keys = [f"s{i}/Strength30_guidance100_seed1|1-2" for i in range(5)]
    cache.put(keys[:4], emb[:4])  # crosses flush_rows: written as a chunk at once
    cache.put(keys[4:], emb[4:])
    cache.flush()
    files = sorted((tmp_path / "cache" / "synthetic").iterdir())
    assert [f.suffix for f in files] == [".safetensors", ".safetensors"]
    again = EmbeddingCache(tmp_path / "cache", "synthetic")
    assert len(again) == 5 and again.missing(keys + ["new"]) == ["new"]
    np.testing.assert_array_equal(again.stack(keys), emb)
    f = tmp_path / "img.jpg"
    f.write_bytes(b"abc")
    k1 = file_key("id", f)
    f.write_bytes(b"abcd")
    assert file_key("id", f) != k1 and file_key("id", tmp_path / "gone.jpg") == "id|missing"
