"""The SDXL refiner architecture written out in code: published config values, parameter counts, the refiner
form's size relations, and a small-width build that runs through gene_img's backend (never the full one here)."""

from __future__ import annotations

import numpy as np
import pytest

from data_generation.generation.backends import GenerationBatch, detect_generator, load_generator
from data_generation.generation.seeding import make_generator
from data_generation.model_builders.refiner import (
    build_refiner_modules,
    micro_conditioning_dim,
    refiner_architecture_configs,
    save_refiner_architecture,
)


def test_configs_hold_the_published_refiner_values():
    c = refiner_architecture_configs()
    unet, vae, text, sched = c["unet"], c["vae"], c["text_encoder_2"], c["scheduler"]
    assert unet["block_out_channels"] == (384, 768, 1536, 1536)
    assert unet["down_block_types"] == ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    assert unet["up_block_types"] == ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    assert (unet["transformer_layers_per_block"], unet["attention_head_dim"], unet["layers_per_block"]) == (
        4,
        (6, 12, 24, 24),
        2,
    )
    assert (unet["cross_attention_dim"], unet["addition_time_embed_dim"], unet["sample_size"]) == (1280, 256, 128)
    assert unet["addition_embed_type"] == "text_time" and unet["use_linear_projection"] is True
    assert (text["hidden_size"], text["num_hidden_layers"], text["num_attention_heads"], text["projection_dim"]) == (
        1280,
        32,
        20,
        1280,
    )
    assert (text["intermediate_size"], text["hidden_act"], text["vocab_size"]) == (5120, "gelu", 49408)
    assert vae["block_out_channels"] == (128, 256, 512, 512) and (vae["scaling_factor"], vae["force_upcast"]) == (
        0.13025,
        True,
    )
    assert (sched["beta_schedule"], sched["timestep_spacing"], sched["steps_offset"]) == ("scaled_linear", "leading", 1)
    assert c["pipeline"] == {"requires_aesthetics_score": True, "force_zeros_for_empty_prompt": False}


@pytest.mark.parametrize("small", [False, True])
def test_refiner_form_size_relations(small):
    """Micro-conditioning = pooled text projection + 5 x 256 (2560); cross-attention reads the text hidden states."""
    c = refiner_architecture_configs(small)
    unet, text = c["unet"], c["text_encoder_2"]
    assert unet["projection_class_embeddings_input_dim"] == micro_conditioning_dim(unet, text)
    assert unet["cross_attention_dim"] == text["hidden_size"]
    if not small:
        assert unet["projection_class_embeddings_input_dim"] == 5 * 256 + 1280 == 2560
        # 64-channel attention heads everywhere (Stability's num_head_channels: 64)
        assert [ch // h for ch, h in zip(unet["block_out_channels"], unet["attention_head_dim"])] == [64] * 4
        assert text["hidden_size"] // text["num_attention_heads"] == 64
    assert len(c["vae"]["block_out_channels"]) == 4  # VAE factor 8 in both sizes


def test_full_architecture_matches_the_published_weight_files_on_the_meta_device():
    """Built on the meta device (no memory): parameter counts x 4 bytes = the refiner's fp32 safetensors sizes."""
    mods = build_refiner_modules(device="meta")
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in mods.items() if k != "scheduler"}
    assert counts == {"unet": 2_259_526_660, "vae": 83_653_863, "text_encoder_2": 694_659_840}
    # unet/diffusion_pytorch_model.safetensors 9.04 GB, text_encoder_2/model.safetensors 2.78 GB, vae 335 MB
    assert round(4 * counts["unet"] / 1e9, 2) == 9.04 and round(4 * counts["text_encoder_2"] / 1e9, 2) == 2.78
    assert round(4 * counts["vae"] / 1e6) == 335
    unet = mods["unet"]
    assert unet.add_embedding.linear_1.in_features == 2560 and unet.add_time_proj.num_channels == 256
    assert len(unet.down_blocks[1].attentions[0].transformer_blocks) == 4
    assert not hasattr(unet.down_blocks[0], "attentions") and not hasattr(unet.down_blocks[3], "attentions")


def test_small_refiner_saved_and_loaded_runs_through_the_gene_img_backend(tmp_path):
    out = save_refiner_architecture(tmp_path / "refiner-small", small=True)
    assert detect_generator(str(out)) == "diffusers-img2img"
    gen = load_generator(str(out))
    assert gen.describe()["pipeline"] == "StableDiffusionXLImg2ImgPipeline" and gen.size_multiple == 8
    assert gen.pipe.config.requires_aesthetics_score and gen.pipe.tokenizer_2.pad_token_id == 0
    from PIL import Image

    image = Image.new("RGB", (64, 48), (120, 90, 40))
    got = gen.generate(
        GenerationBatch(
            images=[image, image],
            image_keys=["a", "a"],
            prompts=["a photo of a cat."] * 2,
            generators=[make_generator("a", s) for s in (10, 20)],
            strength=0.5,
            text_guidance=5.0,
            steps=4,
        )
    )
    assert [a.shape for a in got] == [(48, 64, 3)] * 2
    assert all(np.isfinite(a).all() for a in got) and np.abs(got[0] - got[1]).max() > 1e-4
